"""Alert classifier runtime: priority, category, team and false-positive probability in one call.

The ONNX graph has one input ``X`` (n, len(CLASSIFIER_FEATURES)) and four probability outputs
``priority``, ``category``, ``team`` and ``fp`` (n, n_classes each), in the class order listed in
the manifest's ``postprocessing.classes``. Labels the training data never showed get
probability 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from models.artifact import ArtifactStore, LoadedModel
from models.features import CATEGORIES, CLASSIFIER_FEATURES, PRIORITIES, TEAMS

NAME = "classifier"
HEADS: tuple[str, ...] = ("priority", "category", "team", "fp")
LABELS: dict[str, tuple[str, ...]] = {"priority": PRIORITIES, "category": CATEGORIES, "team": TEAMS}


class ClassifierModel:
    """``predict_proba`` / ``predict`` for one candidate's ``classifier_features`` row."""

    name = NAME
    features = CLASSIFIER_FEATURES

    def __init__(self, loaded: LoadedModel) -> None:
        if tuple(loaded.feature_schema) != CLASSIFIER_FEATURES:
            raise ValueError(f"ClassifierModel needs the classifier feature schema; got {loaded.feature_schema}")
        self.loaded = loaded
        classes = loaded.postprocessing["classes"]
        self.classes: dict[str, tuple[str, ...]] = {h: tuple(str(c) for c in classes[h]) for h in HEADS}
        for head, allowed in LABELS.items():
            unknown = set(self.classes[head]) - set(allowed)
            if unknown:
                raise ValueError(f"classifier {loaded.version} predicts unknown {head} labels {sorted(unknown)}")
        self._fp_col = self.classes["fp"].index("1")
        self._out = list(HEADS)
        self._run = loaded._fast.run if loaded._fast is not None else None

    @classmethod
    def from_store(cls, store: ArtifactStore, version: str | None = None) -> ClassifierModel:
        return cls(store.load(NAME, version, CLASSIFIER_FEATURES))

    @property
    def version(self) -> str:
        return self.loaded.version

    def predict_proba_batch(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Raw probability matrices per head for rows (n, n_features); one ONNX call."""
        x = np.ascontiguousarray(rows, dtype=np.float32)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.shape[1] != len(CLASSIFIER_FEATURES):
            raise ValueError(f"rows must have {len(CLASSIFIER_FEATURES)} features. Got shape {x.shape}.")
        outs = self._run(self._out, {"X": x}, None) if self._run is not None else self.loaded.run({"X": x}, self._out)
        return dict(zip(HEADS, outs, strict=True))

    def predict_proba(self, row: Sequence[float] | np.ndarray) -> dict[str, Any]:
        """``{"priority": {label: p}, "category": {...}, "team": {...}, "fp": float}`` for one row."""
        out = self.predict_proba_batch(np.asarray(row, dtype=np.float32).reshape(1, -1))
        res: dict[str, Any] = {}
        for head, labels in LABELS.items():
            probs = dict.fromkeys(labels, 0.0)
            for c, p in zip(self.classes[head], out[head][0].tolist(), strict=True):
                probs[c] = float(p)
            res[head] = probs
        res["fp"] = float(out["fp"][0, self._fp_col])
        return res

    def predict(self, row: Sequence[float] | np.ndarray) -> dict[str, Any]:
        """Most probable ``priority``, ``category`` and ``team``, plus the false-positive probability ``fp``."""
        out = self.predict_proba_batch(np.asarray(row, dtype=np.float32).reshape(1, -1))
        res: dict[str, Any] = {h: self.classes[h][int(np.argmax(out[h][0]))] for h in LABELS}
        res["fp"] = float(out["fp"][0, self._fp_col])
        return res
