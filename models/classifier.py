"""Alert classifier runtime: priority, category, team and false-positive probability in one call.

The ONNX graph has one input ``X`` (n, len(CLASSIFIER_FEATURES)) and ONE output
``probabilities`` (n, sum of the heads' class counts): every head's probability matrix side by
side. The manifest's ``postprocessing.slices`` says which columns belong to which head
(``{head: [start, stop]}``) and ``postprocessing.classes`` the class order inside each slice.
One output tensor keeps a batch-of-one call under 10 us. Labels the training data never showed
get probability 0.

Versions exported before the single output (one output per head, named after it) still load, so a
rollback to one works; their outputs are joined in the same layout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from models.artifact import LoadedModel
from models.features import CATEGORIES, CLASSIFIER_FEATURES, PRIORITIES, TEAMS
from models.runtime import ModelRuntime

NAME = "classifier"
OUTPUT = "probabilities"
HEADS: tuple[str, ...] = ("priority", "category", "team", "fp")
LABELS: dict[str, tuple[str, ...]] = {"priority": PRIORITIES, "category": CATEGORIES, "team": TEAMS}


class ClassifierModel(ModelRuntime):
    """``predict_proba`` / ``predict`` for one candidate's ``classifier_features`` row."""

    name = NAME
    features = CLASSIFIER_FEATURES

    def __init__(self, loaded: LoadedModel) -> None:
        super().__init__(loaded)
        post = loaded.postprocessing
        classes = post["classes"]
        self.classes: dict[str, tuple[str, ...]] = {h: tuple(str(c) for c in classes[h]) for h in HEADS}
        for head, allowed in LABELS.items():
            unknown = set(self.classes[head]) - set(allowed)
            if unknown:
                raise ValueError(f"classifier {loaded.version} predicts unknown {head} labels {sorted(unknown)}")
        outputs = tuple(loaded.output_names)
        if outputs == (OUTPUT,):
            self._out, self._joined = [OUTPUT], True
            self.slices = {h: (int(post["slices"][h][0]), int(post["slices"][h][1])) for h in HEADS}
        elif set(outputs) == set(HEADS):  # one output per head (before the single output)
            self._out, self._joined = list(HEADS), False
            starts = np.cumsum([0] + [len(self.classes[h]) for h in HEADS]).tolist()
            self.slices = {h: (starts[i], starts[i + 1]) for i, h in enumerate(HEADS)}
        else:
            raise ValueError(f"classifier {loaded.version} has outputs {list(outputs)}; expected [{OUTPUT!r}]")
        for h, (a, b) in self.slices.items():
            if b - a != len(self.classes[h]):
                raise ValueError(f"classifier {loaded.version}: slice {[a, b]} of head {h!r} does not match its "
                                 f"{len(self.classes[h])} classes")
        self.width = max(b for _, b in self.slices.values())
        # predict_proba's dicts, in LABELS order: (label, column) per head; labels the training data
        # never showed point at column ``width``, a 0.0 appended to the probability row
        self._columns = tuple(
            (h, tuple((lab, self.slices[h][0] + self.classes[h].index(lab) if lab in self.classes[h] else self.width)
                      for lab in labels))
            for h, labels in LABELS.items())
        self._fp_col = self.slices["fp"][0] + self.classes["fp"].index("1")
        self._one_x = np.zeros((1, len(CLASSIFIER_FEATURES)), dtype=np.float32)
        self._one_p = np.zeros((1, self.width), dtype=np.float32)
        self._one = self._bind_one() if self._joined else None
        self._lock = threading.Lock()

    def _bind_one(self) -> Callable[[], Any] | None:
        """A no-argument call running the graph from ``_one_x`` into ``_one_p`` (None if unsupported)."""
        sess = self.loaded.session
        if not hasattr(sess, "io_binding"):
            return None
        binding = sess.io_binding()
        binding.bind_input("X", "cpu", 0, np.float32, list(self._one_x.shape), self._one_x.ctypes.data)
        binding.bind_output(OUTPUT, "cpu", 0, np.float32, list(self._one_p.shape), self._one_p.ctypes.data)
        self._binding = binding  # keeps the binding (and through it the buffers' addresses) alive
        fast, raw = getattr(sess, "_sess", None), getattr(binding, "_iobinding", None)
        if fast is not None and raw is not None:  # the pybind session, as LoadedModel.run uses it
            return lambda: fast.run_with_iobinding(raw, None)
        return lambda: sess.run_with_iobinding(binding)

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        """All heads' probabilities (n, width) for rows (n, n_features), laid out as ``slices`` says; one ONNX call."""
        x = np.ascontiguousarray(rows, dtype=np.float32)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.shape[1] != len(CLASSIFIER_FEATURES):
            raise ValueError(f"rows must have {len(CLASSIFIER_FEATURES)} features. Got shape {x.shape}.")
        return self._call(x)

    def _call(self, x: np.ndarray) -> np.ndarray:
        outs = self._onnx({"X": x}, self._out)
        return outs[0] if self._joined else np.concatenate(outs, axis=1)  # type: ignore[no-any-return]

    def predict_proba_batch(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Probability matrices per head (n, n_classes in ``classes[head]`` order); views of one ONNX output."""
        p = self.probabilities(rows)
        return {h: p[:, a:b] for h, (a, b) in self.slices.items()}

    def _row(self, row: Sequence[float] | np.ndarray) -> list[float]:
        one = self._one
        if one is None or len(row) != len(CLASSIFIER_FEATURES) or (isinstance(row, np.ndarray) and row.ndim != 1):
            return self.probabilities(np.asarray(row, dtype=np.float32))[0].tolist()  # type: ignore[no-any-return]
        with self._lock:
            self._one_x[0] = row
            one()
            return self._one_p[0].tolist()  # type: ignore[no-any-return]

    def predict_proba(self, row: Sequence[float] | np.ndarray) -> dict[str, Any]:
        """``{"priority": {label: p}, "category": {...}, "team": {...}, "fp": float}`` for one row."""
        p = self._row(row)
        p.append(0.0)
        res: dict[str, Any] = {h: {lab: p[c] for lab, c in cols} for h, cols in self._columns}
        res["fp"] = p[self._fp_col]
        return res

    def predict(self, row: Sequence[float] | np.ndarray) -> dict[str, Any]:
        """Most probable ``priority``, ``category`` and ``team``, plus the false-positive probability ``fp``."""
        p = self._row(row)
        res: dict[str, Any] = {}
        for h in LABELS:
            a, b = self.slices[h]
            res[h] = self.classes[h][int(np.argmax(p[a:b]))]
        res["fp"] = p[self._fp_col]
        return res
