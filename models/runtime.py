"""What the four runtime models share: a loaded and verified artifact, its version, the ONNX call.

A runtime class names its model and feature schema and reads its post-processing; loading from a
store, refusing an artifact of another feature schema and running the graph are written once, here.
:mod:`models.catalog` lists the subclasses; the conformance suite runs the same checks on each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Self

import numpy as np

from models.artifact import ArtifactStore, LoadedModel


class ModelRuntime:
    """Base of the runtime models. A subclass sets ``name`` and ``features`` and, in its
    ``__init__``, calls ``super().__init__(loaded)`` before it reads ``loaded.postprocessing``."""

    name: ClassVar[str]
    features: ClassVar[tuple[str, ...]]

    def __init__(self, loaded: LoadedModel) -> None:
        if tuple(loaded.feature_schema) != self.features:
            raise ValueError(f"{type(self).__name__} needs the {self.name} feature schema; "
                             f"got {loaded.feature_schema}")
        self.loaded = loaded
        self._run = loaded.raw_run

    @classmethod
    def from_store(cls, store: ArtifactStore, version: str | None = None) -> Self:
        """Load and verify ``version`` (default: the latest) of this model from ``store``."""
        return cls(store.load(cls.name, version, cls.features))

    @property
    def version(self) -> str:
        return self.loaded.version

    def _onnx(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        """One run of the graph: the pybind session's own ``run`` where there is one (no wrapper
        cost per call, which counts for batches of one), else :meth:`LoadedModel.run`."""
        if self._run is not None:
            return self._run(outputs, feeds, None)  # type: ignore[no-any-return]
        return self.loaded.run(feeds, outputs)
