"""The one list of Vigil's runtime models: name, feature schema, runtime class, batch call.

Everything that needs to know which models exist reads it from here: the bundle the job serves
(:class:`models.pipeline.ModelBundle`), the operator's per-model timings, the registry, training
(whose trainers, one per name here, live in :mod:`training.specs`, a layer above) and the
conformance suite (``tests/models/test_conformance.py``), which runs the same checks on every
model listed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.artifact import ArtifactStore
from models.classifier import ClassifierModel
from models.clusterer import ClustererModel
from models.detector import DetectorModel
from models.features import CLASSIFIER_FEATURES, CLUSTERER_FEATURES, DETECTOR_FEATURES, FORECASTER_FEATURES
from models.forecaster import ForecasterModel
from models.runtime import ModelRuntime


@dataclass(frozen=True)
class ModelSpec:
    """One runtime model: its ``name`` (the artifact store's folder, the registry's key), the
    ``features`` its artifacts must declare, the ``runtime`` class that loads and verifies a version
    (a :class:`models.runtime.ModelRuntime`: ``runtime.from_store(store, version)``), and
    ``batch``, its one ONNX call over a batch of feature rows (n, len(features)), giving one output
    row per input row."""

    name: str
    features: tuple[str, ...]
    runtime: type[ModelRuntime]
    batch: Callable[[Any, np.ndarray], np.ndarray]

    def load(self, store: ArtifactStore, version: str | None = None) -> Any:
        """Load and verify ``version`` (the latest when None) of this model from ``store``."""
        return self.runtime.from_store(store, version)


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("detector", DETECTOR_FEATURES, DetectorModel, lambda m, x: m.score_samples(x)),
    ModelSpec("forecaster", FORECASTER_FEATURES, ForecasterModel, lambda m, x: m.predict(x)),
    ModelSpec("clusterer", CLUSTERER_FEATURES, ClustererModel, lambda m, x: m.distances(x)),
    ModelSpec("classifier", CLASSIFIER_FEATURES, ClassifierModel, lambda m, x: m.probabilities(x)),
)
BY_NAME: dict[str, ModelSpec] = {m.name: m for m in MODELS}
MODEL_NAMES: tuple[str, ...] = tuple(BY_NAME)
FEATURE_SCHEMAS: dict[str, tuple[str, ...]] = {m.name: m.features for m in MODELS}
