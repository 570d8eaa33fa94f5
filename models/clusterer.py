"""Entity clusterer runtime: peers by k-means, outliers by distance, centroids adaptable online.

The ONNX graph takes the entity vector ``X`` (n, d) *and* the centroids ``C`` (k, d) and returns
Euclidean distances (n, k). The trained centroids are the default (``model.centroids``); a job
that adapts centroids in keyed state passes its own. The outlier score of a distance ``d`` to
cluster ``c`` is ``1 - 2^(-max(0, (d - p50_c) / (p99_c - p50_c)))``: 0 up to the cluster's
median training distance, 0.5 at its 99th percentile, towards 1 beyond.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from models.artifact import LoadedModel
from models.features import CLUSTERER_FEATURES
from models.runtime import ModelRuntime

NAME = "clusterer"


class ClustererModel(ModelRuntime):
    """``assign`` an entity vector to its nearest centroid, with distance and outlier score."""

    name = NAME
    features = CLUSTERER_FEATURES

    def __init__(self, loaded: LoadedModel) -> None:
        super().__init__(loaded)
        post = loaded.postprocessing
        self._centroids = np.ascontiguousarray(post["centroids"], dtype=np.float32)
        self.k, self.dim = self._centroids.shape
        self._p50 = [float(v) for v in post["distance_quantiles"]["p50"]]
        self._p99 = [float(v) for v in post["distance_quantiles"]["p99"]]
        self._out = ["distances"]

    @property
    def centroids(self) -> np.ndarray:
        """The trained centroids (k, d), float32; a copy, safe to adapt."""
        return self._centroids.copy()

    def _c(self, centroids: np.ndarray | None) -> np.ndarray:
        if centroids is None:
            return self._centroids
        c = np.ascontiguousarray(centroids, dtype=np.float32)
        if c.shape != self._centroids.shape:
            raise ValueError(f"centroids must have shape {self._centroids.shape}. Got {c.shape}.")
        return c

    def distances(self, X: np.ndarray, centroids: np.ndarray | None = None) -> np.ndarray:
        """Euclidean distances (n, k) of complete entity vectors ``X`` (n, d) to the centroids; one ONNX call."""
        x = np.ascontiguousarray(X, dtype=np.float32)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.shape[1] != self.dim:
            raise ValueError(f"entity vectors must have {self.dim} values. Got shape {x.shape}.")
        feeds = {"X": x, "C": self._c(centroids)}
        return self._onnx(feeds, self._out)[0]

    def outlier_score(self, cluster_id: int, distance: float) -> float:
        """Distance to cluster ``cluster_id`` relative to its training distances, in [0, 1)."""
        p50, p99 = self._p50[cluster_id], self._p99[cluster_id]
        r = (distance - p50) / max(p99 - p50, 1e-9)
        return 0.0 if r <= 0 else 1.0 - math.pow(2.0, -r)

    def outlier_scores(self, cluster_ids: np.ndarray, distance: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`outlier_score`."""
        p50 = np.asarray(self._p50)[cluster_ids]
        p99 = np.asarray(self._p99)[cluster_ids]
        r = np.maximum((distance - p50) / np.maximum(p99 - p50, 1e-9), 0.0)
        return 1.0 - np.power(2.0, -r)

    def assign(self, vec: Sequence[float | None], centroids: np.ndarray | None = None) -> tuple[int, float, float]:
        """``(cluster_id, distance, outlier_score)`` of one entity vector; missing slots (None) are imputed."""
        if any(v is None for v in vec):
            vec = self.impute(vec, centroids)
        d = self.distances(np.asarray(vec, dtype=np.float32).reshape(1, -1), centroids)[0]
        cid = int(np.argmin(d))
        dist = float(d[cid])
        return cid, dist, self.outlier_score(cid, dist)

    def impute(self, vec: Sequence[float | None], centroids: np.ndarray | None = None) -> list[float]:
        """Fill missing slots (None) from the centroid nearest on the known slots."""
        c = self._c(centroids)
        if len(vec) != self.dim:
            raise ValueError(f"entity vectors must have {self.dim} values. Got {len(vec)}.")
        known = [i for i, v in enumerate(vec) if v is not None]
        if not known:
            raise ValueError("cannot impute an entity vector with no known values")
        if len(known) == self.dim:
            return [float(v) for v in vec]  # type: ignore[arg-type]
        kv = np.asarray([vec[i] for i in known], dtype=np.float64)
        nearest = int(np.argmin(((c[:, known] - kv) ** 2).sum(axis=1)))
        return [float(v) if v is not None else float(c[nearest, i]) for i, v in enumerate(vec)]

    @staticmethod
    def adapt(centroids: np.ndarray, cluster_id: int, vec: Sequence[float], rate: float) -> np.ndarray:
        """New centroids with ``cluster_id`` moved a fraction ``rate`` towards ``vec`` (input unchanged).

        Whether to adapt (typically only for non-outliers) is the caller's decision.
        """
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"The 'rate' parameter of ClustererModel.adapt must be in (0, 1]. Got {rate!r}.")
        out = np.array(centroids, dtype=np.float32, copy=True)
        out[cluster_id] += np.float32(rate) * (np.asarray(vec, dtype=np.float32) - out[cluster_id])
        return out
