"""Clusterer runtime: peers, outliers, imputation, online adaptation of centroids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.artifact import ArtifactStore
from models.clusterer import ClustererModel
from models.features import ENTITY_METRICS, entity_vector
from training.data import iter_steps
from training.simulate import Incident, generate


@pytest.fixture(scope="module")
def clusterer(trained_store: Path) -> ClustererModel:
    return ClustererModel.from_store(ArtifactStore(trained_store))


def test_drifted_entity_ranks_above_its_peers(clusterer: ClustererModel) -> None:
    start = 1_780_000_000_000 - (1_780_000_000_000 % 3_600_000)
    drift = Incident("d", "peer_drift", "api-gateway", "i-5", ("cpu_util", "latency_p99_ms"), start + 3_600_000,
                     start + 3 * 3_600_000, "peer_drift")
    sc = generate(seed=5, hours=3, start_ms=start, instances=8, incidents=[drift], business_metric=False)
    latest: dict[tuple[str, str], dict[str, float]] = {}
    for _, samples in iter_steps(sc.events):
        for s in samples:
            if s.metric in ENTITY_METRICS:
                latest.setdefault((s.service, s.instance), {})[s.metric] = s.value
    scores = {e: clusterer.assign(entity_vector(v)) for e, v in latest.items()}
    peers = [scores[("api-gateway", f"i-{i}")][2] for i in range(8) if i != 5]
    drifted = scores[("api-gateway", "i-5")][2]
    assert drifted > 0.5 > max(peers)
    others = [s[2] for e, s in scores.items() if e != ("api-gateway", "i-5")]
    assert drifted > max(others)
    # all instances of a service share one cluster
    for svc in {e[0] for e in latest}:
        assert len({scores[(svc, f"i-{i}")][0] for i in range(8) if (svc, f"i-{i}") != ("api-gateway", "i-5")}) == 1


def test_assign_is_consistent_with_distances(clusterer: ClustererModel) -> None:
    c = clusterer.centroids
    vec = (c[1] + np.float32(0.01)).tolist()
    cid, dist, out = clusterer.assign(vec)
    assert cid == 1
    assert dist == pytest.approx(float(np.linalg.norm(np.asarray(vec) - c[1])), abs=1e-6)
    assert 0.0 <= out < 0.5
    d = clusterer.distances(np.asarray([vec, vec], dtype=np.float32))
    assert d.shape == (2, clusterer.k) and int(d[0].argmin()) == 1


def test_outlier_score_is_zero_at_the_median_half_at_p99(clusterer: ClustererModel) -> None:
    p50, p99 = clusterer._p50[0], clusterer._p99[0]
    assert clusterer.outlier_score(0, p50 * 0.5) == 0.0
    assert clusterer.outlier_score(0, p99) == pytest.approx(0.5)
    assert clusterer.outlier_score(0, p99 + 3 * (p99 - p50)) == pytest.approx(1 - 2 ** -4)


def test_passed_centroids_replace_the_trained_ones(clusterer: ClustererModel) -> None:
    c = clusterer.centroids
    vec = c[0].tolist()
    assert clusterer.assign(vec)[1] == pytest.approx(0.0, abs=1e-6)
    moved = c.copy()
    moved[0] += np.float32(0.3)
    cid, dist, _ = clusterer.assign(vec, moved)
    want = np.linalg.norm(moved - c[0], axis=1)
    assert cid == int(want.argmin()) and dist == pytest.approx(float(want.min()), abs=1e-6)
    with pytest.raises(ValueError, match="centroids must have shape"):
        clusterer.assign(vec, c[:2])


def test_adapt_moves_one_centroid_and_copies(clusterer: ClustererModel) -> None:
    c = clusterer.centroids
    target = (c[2] + np.float32(1.0)).tolist()
    new = ClustererModel.adapt(c, 2, target, 0.25)
    np.testing.assert_allclose(new[2], c[2] + 0.25, atol=1e-6)
    np.testing.assert_array_equal(np.delete(new, 2, axis=0), np.delete(c, 2, axis=0))
    np.testing.assert_array_equal(c, clusterer.centroids)  # input untouched
    with pytest.raises(ValueError, match=r"The 'rate' parameter of ClustererModel.adapt must be in \(0, 1\]. Got 0."):
        ClustererModel.adapt(c, 0, target, 0)


def test_impute_fills_missing_slots_from_the_nearest_centroid(clusterer: ClustererModel) -> None:
    c = clusterer.centroids
    vec: list[float | None] = c[3].tolist()
    vec[1] = None
    vec[4] = None
    filled = clusterer.impute(vec)
    assert filled[1] == pytest.approx(float(c[3, 1])) and filled[4] == pytest.approx(float(c[3, 4]))
    assert filled[0] == vec[0]
    assert clusterer.assign(vec)[0] == 3  # assign imputes on its own
    with pytest.raises(ValueError, match="no known values"):
        clusterer.impute([None] * 5)
