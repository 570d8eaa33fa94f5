"""What the driver (:mod:`training.train`) and every model's trainer (:mod:`training.specs`) share.

The run's configuration (:class:`TrainConfig`) and extra inputs (:class:`RetrainInputs`), the
replayed data by role (:class:`Datasets`), what a trainer hands back (:class:`Trained`) and what
it may use beyond the config and the data (:class:`FitContext`), the worker processes of a run
(:class:`Workers`), and the small helpers every trainer calls: :func:`runtime` (a not-yet-written
artifact through the runtime's loader), :func:`data_sources` (a manifest's ``training_data.sources``
entries) and :func:`drift_weights`. It imports no trainer, so the trainers and the driver can both
import it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
from tqdm.auto import tqdm

from models.artifact import LoadedModel, schema_entries
from training.data import Extract, ScenarioSpec
from training.drift import DRIFT_WEIGHT, DriftReport
from training.feedback import HUMAN_WEIGHT, Feedback
from training.sources import DataConfig, Replay

# Rows of fixed data each export is checked on (ONNX output against scikit-learn's).
PARITY_ROWS = 2000


@dataclass(frozen=True)
class TrainConfig:
    """What to train on. ``quick`` shrinks every scenario (for tests); figures are then rougher."""

    seed: int = 1
    quick: bool = False
    progress: bool = True
    workers: int | None = None  # processes replaying scenarios; None = one per CPU

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**20:
            raise ValueError(
                f"The 'seed' parameter of TrainConfig must be an integer in [0, 2**20). Got {self.seed!r}.")
        for name in ("quick", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"The '{name}' parameter of TrainConfig must be a bool. Got {getattr(self, name)!r}.")
        w = self.workers
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise ValueError(f"The 'workers' parameter of TrainConfig must be a positive integer or None. Got {w!r}.")

    @property
    def n_workers(self) -> int:
        return self.workers if self.workers is not None else max(os.cpu_count() or 1, 1)

    def specs(self) -> dict[str, list[ScenarioSpec]]:
        """The scenarios of each role (see the module docstring)."""
        s = self.seed * 1000
        if self.quick:
            det_h, cls_h, fc_train_h, fc_h, n_cls = 6.0, 6.0, 48.0, 36.0, 2
            det_train = [ScenarioSpec(s + 1, det_h, 8, 10)]
            fc_train = [ScenarioSpec(s + 11, fc_train_h, 2, 12)]
        else:
            det_h, cls_h, fc_h, n_cls = 8.0, 10.0, 72.0, 4
            det_train = [ScenarioSpec(s + i, det_h, 8, 10) for i in (1, 2, 3)]
            fc_train = [ScenarioSpec(s + i, fc_h, 2, 15) for i in (11, 12, 13)]
        return {
            "det_train": det_train,
            "det_val": [ScenarioSpec(s + 4, det_h, 8, 10)],
            "cls_train": [ScenarioSpec(s + 5 + i, cls_h, 8, 10) for i in range(n_cls)],
            "eval": [ScenarioSpec(s + 99, det_h, 8, 10)],
            "fc_train": fc_train,
            "fc_cal": [ScenarioSpec(s + 14, fc_h, 2, 12 if self.quick else 15)],
            "fc_eval": [ScenarioSpec(s + 98, fc_h, 2, 12 if self.quick else 15)],
        }

    def corpus(self) -> dict[str, tuple[int, int]]:
        """The forecaster's synthetic corpus (:mod:`training.corpus`): (seed, series) per role."""
        s = self.seed * 1000
        n = {"corpus_train": 40, "corpus_cal": 16, "corpus_test": 16} if self.quick else \
            {"corpus_train": 320, "corpus_cal": 60, "corpus_test": 60}
        return {role: (s + 21 + k, n[role]) for k, role in enumerate(("corpus_train", "corpus_cal", "corpus_test"))}

    @property
    def if_fit_rows(self) -> int:
        return 20_000 if self.quick else 60_000

    @property
    def cluster_rows(self) -> int:
        return 8_000 if self.quick else 20_000


@dataclass
class RetrainInputs:
    """What a retraining run learns from beyond the seed: the data source, drift events, feedback.

    The default (generator, no drift, no feedback) trains exactly what ``train_all`` always did.
    ``replay`` holds an already-read replay (tests, or a caller that read the topic itself);
    otherwise ``--data replay`` reads ``data.bootstrap``/``data.topic`` when the run prepares data.
    """

    data: DataConfig = field(default_factory=DataConfig)
    drift: DriftReport | None = None
    feedback: Feedback | None = None
    feedback_weight: float = HUMAN_WEIGHT
    drift_weight: float = DRIFT_WEIGHT
    replay: Replay | None = None

    def __post_init__(self) -> None:
        for name in ("feedback_weight", "drift_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 1.0 or not np.isfinite(v):
                raise ValueError(f"The '{name}' parameter of RetrainInputs must be a number >= 1. Got {v!r}.")

    @property
    def drifted(self) -> bool:
        return self.drift is not None and bool(self.drift.events)


@dataclass
class Datasets:
    """Replayed scenarios (and series of other sources), by role.

    ``det_test`` is the detector's held-out data (default: ``test``, the generator's held-out
    scenario, which the clusterer and the classifier always use); ``cl_train`` the clusterer's
    entity data (default: ``det_train + fc_train``). ``used`` says, per model, which source fed it
    and why (the manifests' ``lineage.data``); ``weights`` the drift selection's metric kinds.
    """

    det_train: list[Extract]
    det_val: Extract
    test: Extract
    fc_train: list[Extract]
    fc_cal: Extract
    fc_eval: Extract
    cls_train: list[ScenarioSpec]
    det_test_: Extract | None = None
    cl_train_: list[Extract] | None = None
    used: dict[str, dict[str, Any]] = field(default_factory=dict)
    weights: dict[str, Any] | None = None
    generator_fc_eval: Extract | None = None  # the generator's forecaster test, when another source replaced it
    fc_corpus: list[Extract] = field(default_factory=list)  # the synthetic corpus: fit, calibration, test

    @property
    def det_test(self) -> Extract:
        return self.det_test_ if self.det_test_ is not None else self.test

    @property
    def cl_train(self) -> list[Extract]:
        return self.cl_train_ if self.cl_train_ is not None else self.det_train + self.fc_train


@dataclass
class Trained:
    """A fitted, exported, parity-checked model, ready to be written.

    ``lineage`` is what the trainer learned from beyond the data (``{"feedback": ...}``); the
    driver adds the data source and the drift reason to it in ``training_data.lineage``.
    """

    name: str
    onnx_bytes: bytes
    fields: dict[str, Any]
    model: Any
    evaluation: dict[str, Any]
    plot: Callable[[Path], None] | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)


@dataclass
class FitContext:
    """What a trainer may use beyond the config and the data: the run's inputs (drift, feedback),
    its worker pool (None: the trainer starts its own when it needs one) and the models fitted
    before it, in :data:`models.catalog.MODEL_NAMES` order."""

    inputs: RetrainInputs = field(default_factory=RetrainInputs)
    workers: Workers | None = None
    trained: dict[str, Trained] = field(default_factory=dict)


class Trainer(Protocol):
    """A model's ``fit``: fit, export, parity-check and evaluate it (see :mod:`training.specs`)."""

    def __call__(self, cfg: TrainConfig, data: Datasets, ctx: FitContext | None = None) -> Trained: ...


M = TypeVar("M")


def runtime(cls: Callable[[LoadedModel], M], name: str, onnx_bytes: bytes, schema: Sequence[str],
            postprocessing: dict[str, Any]) -> M:
    """The runtime class of a not-yet-written artifact, through the same loader checks."""
    manifest = {"name": name, "version": "unpublished", "feature_schema": schema_entries(schema),
                "postprocessing": postprocessing}
    return cls(LoadedModel.from_bytes(onnx_bytes, manifest, schema))


def data_sources(exts: Sequence[Extract] | Sequence[ScenarioSpec], role: str) -> list[dict]:
    """``training_data.sources`` entries: each scenario's (or series') source, under ``role``."""
    out = []
    for e in exts:
        spec = e.spec if isinstance(e, Extract) else e
        out.append({"role": role, **spec.source()})
    return out


def drift_weights(data: Datasets, model: str) -> tuple[list[str], float]:
    """The metric kinds whose rows weigh more for ``model`` after drift on the generator, and by how much."""
    w = data.weights or {}
    return list(w.get("metric_kinds", {}).get(model, [])), float(w.get("weight", 1.0))


# --------------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------------


A = TypeVar("A")
R = TypeVar("R")


class Workers:
    """Worker processes shared by one training run; ``map`` keeps results in input order.

    Every item is independent and seeded, so results do not depend on the number of workers.
    Workers are spawned (not forked): by the time candidates are built the parent holds
    onnxruntime sessions and OpenMP thread pools, which a forked child must not inherit. The
    pool starts on first use and lives until :meth:`close`, so the interpreter start-up and
    imports of each worker are paid once per run. With one worker everything runs in-process.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self._pool: ProcessPoolExecutor | None = None

    def map(self, fn: Callable[[A], R], items: Sequence[A], desc: str, progress: bool,
            cost: Callable[[A], float] | None = None) -> list[R]:
        """``[fn(x) for x in items]``; with ``cost``, the costliest items start first (shorter tail)."""
        bar = tqdm(total=len(items), desc=desc, unit="scenario", disable=not progress)
        try:
            if self.n <= 1 or len(items) <= 1:
                out = []
                for x in items:
                    out.append(fn(x))
                    bar.update()
                return out
            if self._pool is None:
                self._pool = ProcessPoolExecutor(max_workers=self.n, mp_context=multiprocessing.get_context("spawn"))
            order = sorted(range(len(items)), key=lambda i: -cost(items[i])) if cost else range(len(items))
            futures = {i: self._pool.submit(fn, items[i]) for i in order}
            for _ in as_completed(futures.values()):
                bar.update()
            return [futures[i].result() for i in range(len(items))]
        finally:
            bar.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scenario_cost(job: tuple[ScenarioSpec, Any]) -> float:
    """How long a scenario job takes, roughly (for :meth:`Workers.map`'s ``cost``)."""
    return job[0].hours * job[0].instances


@contextlib.contextmanager
def using_workers(cfg: TrainConfig, given: Workers | None) -> Iterator[Workers]:
    """``given``, or a pool of ``cfg.n_workers`` closed on exit."""
    if given is not None:
        yield given
        return
    with Workers(cfg.n_workers) as w:
        yield w

