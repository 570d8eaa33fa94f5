"""Candidate alerts: labelling rules, shape, and determinism."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.artifact import ArtifactStore
from models.clusterer import ClustererModel
from models.detector import DetectorModel
from models.features import CLASSIFIER_FEATURES, classifier_features
from models.forecaster import ForecasterModel
from training.candidates import build_candidates, label_candidate
from training.data import IncidentIndex, ScenarioSpec
from training.simulate import Incident, series_key

CANDIDATE_KEYS = {"score", "threshold", "det", "cluster_outlier", "time_to_breach_s", "criticality", "owner",
                  "related_anomalies", "ts_ms", "metric", "text"}
T0 = 1_000 * 60_000


def _index(kind: str = "level_shift", category: str = "errors", metrics=("error_rate",)) -> IncidentIndex:
    inc = Incident("x", kind, "payments", "i-1", metrics, T0, T0 + 30 * 60_000, category)
    return IncidentIndex([inc], instances=8)


@pytest.mark.parametrize(("service", "metric", "minute", "expected"), [
    # matched incident on a critical service: P1, the incident's category, the owner
    ("payments", "error_rate", 5, {"fp": 0, "category": "errors", "team": "payments", "priority": "P1"}),
    # still inside the 10-minute margin after the end
    ("payments", "error_rate", 39, {"fp": 0, "category": "errors", "team": "payments", "priority": "P1"}),
    # after the margin: a false positive on a critical service is P3, category from the metric
    ("payments", "error_rate", 41, {"fp": 1, "category": "errors", "team": "payments", "priority": "P3"}),
    # unmatched, less critical service: P4
    ("search", "latency_p99_ms", 5, {"fp": 1, "category": "latency", "team": "discovery", "priority": "P4"}),
    # saturation of memory or disk goes to sre, of cpu to the owner
    ("search", "memory_util", 5, {"fp": 1, "category": "saturation", "team": "sre", "priority": "P4"}),
    ("search", "cpu_util", 5, {"fp": 1, "category": "saturation", "team": "discovery", "priority": "P4"}),
    ("search", "requests_per_s", 5, {"fp": 1, "category": "traffic", "team": "discovery", "priority": "P4"}),
])
def test_label_rules(service: str, metric: str, minute: int, expected: dict) -> None:
    key = series_key(service, metric, {"instance": "i-1"})
    lab = label_candidate(service, metric, key, T0 + minute * 60_000, _index())
    assert {k: lab[k] for k in expected} == expected


def test_matched_incident_category_wins_and_matched_non_critical_is_p2() -> None:
    idx = IncidentIndex([Incident("d", "peer_drift", "search", "i-2", ("cpu_util", "latency_p99_ms"), T0,
                                  T0 + 60 * 60_000, "peer_drift")], instances=8)
    lab = label_candidate("search", "cpu_util", series_key("search", "cpu_util", {"instance": "i-2"}),
                          T0 + 60_000, idx)
    assert (lab["fp"], lab["category"], lab["team"], lab["priority"]) == (0, "peer_drift", "discovery", "P2")


def test_build_candidates_shape_labels_and_determinism(trained_store: Path) -> None:
    store = ArtifactStore(trained_store)
    models = (DetectorModel.from_store(store), ForecasterModel.from_store(store), ClustererModel.from_store(store))
    spec = ScenarioSpec(seed=909, hours=3.0, instances=4, n_incidents=8)
    sc = spec.build()
    cands = build_candidates(sc, *models, instances=4)
    assert len(cands) > 20
    for cand, lab in cands:
        assert set(cand) == CANDIDATE_KEYS
        assert cand["score"] >= cand["threshold"]
        assert len(classifier_features(cand)) == len(CLASSIFIER_FEATURES)
        assert cand["text"].startswith(lab["service"] + " " + cand["metric"])
        if lab["fp"] == 0:
            inc = next(i for i in sc.incidents if i.id == lab["incident"])
            assert inc.start_ms <= cand["ts_ms"] <= inc.end_ms + 10 * 60_000
        ttb = cand["time_to_breach_s"]
        assert ttb is None or (cand["metric"] in ("cpu_util", "memory_util", "disk_util", "error_rate") and ttb >= 0)
    assert 0 < sum(lab["fp"] for _, lab in cands) < len(cands)
    assert any(c["related_anomalies"] > 0 for c, _ in cands)
    again = build_candidates(spec.build(), *models, instances=4)
    assert again == cands
