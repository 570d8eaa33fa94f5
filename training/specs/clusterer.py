"""The clusterer: KMeans on normal entity vectors, distances exported with the centroids as an input.

:func:`fit` chooses k by silhouette, exports the distance computation (the job adapts the
centroids online, so they are an input, not a constant), stores each cluster's distance
quantiles for the outlier score, and reports how well that score finds the held-out scenario's
peer-drift instances.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from models.clusterer import ClustererModel
from models.features import CLUSTERER_FEATURES
from training import evaluate as ev
from training.base import PARITY_ROWS, Datasets, FitContext, TrainConfig, Trained, data_sources, runtime
from training.data import fingerprint
from training.export import assert_parity, kmeans_distance_onnx, run_onnx


def fit(cfg: TrainConfig, data: Datasets, ctx: FitContext | None = None) -> Trained:
    """KMeans on normal entity vectors, k by silhouette; distance quantiles per cluster."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, silhouette_score

    t0 = time.perf_counter()
    sources = data.cl_train
    X_all = np.concatenate([e.entities.X[e.entities.kind == ""] for e in sources])  # type: ignore[union-attr]
    rng = np.random.default_rng(cfg.seed + 1)
    X = X_all[np.sort(rng.permutation(len(X_all))[: cfg.cluster_rows])]
    sil: dict[int, float] = {}
    fits = {}
    with threadpool_limits(1):
        for k in range(3, 9):
            km = KMeans(n_clusters=k, n_init=4, random_state=cfg.seed).fit(X)
            sil[k] = float(silhouette_score(X, km.labels_, sample_size=min(3000, len(X)), random_state=cfg.seed))
            fits[k] = km
    k_best = max(sil, key=lambda k: (round(sil[k], 4), -k))
    km = fits[k_best]
    centroids = km.cluster_centers_.astype(np.float32)
    onnx_bytes = kmeans_distance_onnx(len(CLUSTERER_FEATURES))

    test = data.test.entities
    assert test is not None
    Xp = np.concatenate([X[: PARITY_ROWS // 2], test.X[: PARITY_ROWS // 2]])
    with threadpool_limits(1):
        want = km.transform(Xp)
    parity = assert_parity("clusterer", run_onnx(onnx_bytes, {"X": Xp, "C": centroids})[0], want, atol=1e-5)

    d_train = run_onnx(onnx_bytes, {"X": X, "C": centroids})[0].astype(np.float64)
    lab = d_train.argmin(axis=1)
    dmin = d_train[np.arange(len(X)), lab]
    p50 = [float(np.percentile(dmin[lab == c], 50)) for c in range(k_best)]
    p99 = [float(np.percentile(dmin[lab == c], 99)) for c in range(k_best)]
    sizes = np.bincount(lab, minlength=k_best).tolist()
    post = {"centroids": centroids, "distance_quantiles": {"p50": p50, "p99": p99},
            "outlier_score": "1 - 2^(-max(0, (d - p50_c) / (p99_c - p50_c)))",
            "k": k_best, "silhouette": {str(k): v for k, v in sil.items()}, "cluster_sizes": sizes}
    model = runtime(ClustererModel, "clusterer", onnx_bytes, CLUSTERER_FEATURES, post)

    d = model.distances(test.X).astype(np.float64)
    cid = d.argmin(axis=1)
    out = model.outlier_scores(cid, d[np.arange(len(cid)), cid])
    normal = test.kind == ""
    drift = test.kind == "peer_drift"
    grown = drift & (test.frac >= 0.25)
    svc = np.asarray([test.entities[e][0] for e in test.entity])
    evaluation = {
        "test_scenario": data.test.spec.source(), "k": k_best, "silhouette": sil[k_best],
        "auc_positives": "entity steps of a peer-drift instance from 25% of its window on (the drift grows over "
                         "the first half); negatives: entity steps untouched by any incident",
        "peer_drift_auc": ev.roc_auc(grown[normal | grown], out[normal | grown]),
        "peer_drift_auc_all_steps": ev.roc_auc(drift[normal | drift], out[normal | drift]),
        "mean_outlier_normal": float(out[normal].mean()),
        "mean_outlier_peer_drift_grown": float(out[grown].mean()) if grown.any() else None,
        "normal_above_0.5": float((out[normal] >= 0.5).mean()),
        "peer_drift_grown_above_0.5": float((out[grown] >= 0.5).mean()) if grown.any() else None,
        "adjusted_rand_vs_service": float(adjusted_rand_score(svc[normal], cid[normal])),
        "parity_max_abs_error": parity, "parity_tolerance": 1e-5,
    }
    # plot labels: the service most of a cluster's held-out normal entity steps belong to
    dominant = []
    for c in range(k_best):
        members = svc[normal & (cid == c)]
        names, counts = np.unique(members, return_counts=True)
        dominant.append(str(names[int(np.argmax(counts))]) if members.size else "-")
    fields = {
        "description": f"KMeans (k={k_best}) distances with centroids as an input",
        "feature_schema": CLUSTERER_FEATURES,
        "inputs": [{"name": "X", "shape": [None, len(CLUSTERER_FEATURES)], "dtype": "float32",
                    "meaning": "entity_vector() of a service instance (missing slots imputed)"},
                   {"name": "C", "shape": ["k", len(CLUSTERER_FEATURES)], "dtype": "float32",
                    "meaning": "centroids (trained ones in postprocessing.centroids, or adapted online)"}],
        "outputs": [{"name": "distances", "shape": [None, "k"], "dtype": "float32",
                     "meaning": "Euclidean distance of each X row to each centroid"}],
        "training_data": {"fingerprint": fingerprint(X, sources=data_sources(sources, "train")),
                          "sources": data_sources(sources, "normal entity steps"), "rows": len(X)},
        "postprocessing": post,
        "evaluation": evaluation,
    }

    def plot(path: Path) -> None:
        ev.plot_clusters(path, sizes, dominant, out[grown], out[normal])

    return Trained("clusterer", onnx_bytes, fields, model, evaluation, plot, time.perf_counter() - t0,
                   {"kmeans": km, "parity_X": Xp})

