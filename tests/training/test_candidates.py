"""Candidate alerts: labelling rules, the job's own logic over a scenario (all three triggers), weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.config import VigilConfig
from jobs.inprocess import InProcessJob
from models.features import CLASSIFIER_FEATURES, ENTITY_METRICS, classifier_features
from models.pipeline import ModelBundle, iso
from training.candidates import build_candidates, label_candidate, sample_weights, service_context, trigger_counts
from training.data import IncidentIndex
from training.simulate import Incident, generate, series_key

CANDIDATE_KEYS = {"score", "threshold", "det", "cluster_outlier", "time_to_breach_s", "criticality", "owner",
                  "related_anomalies", "ts_ms", "metric", "text", "moved"}
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


def test_a_cluster_candidate_belongs_to_the_incident_moving_its_entity() -> None:
    idx = IncidentIndex([Incident("d", "peer_drift", "search", "i-2", ("cpu_util", "latency_p99_ms"), T0,
                                  T0 + 60 * 60_000, "peer_drift"),
                         Incident("k", "memory_leak", "payments", "i-1", ("disk_util",), T0, T0 + 60 * 60_000,
                                  "saturation")], instances=8)
    mem = series_key("search", "memory_util", {"instance": "i-2"})
    # the clusterer fired on the drifting entity while evaluating its memory sample: the drift's candidate
    lab = label_candidate("search", "memory_util", mem, T0 + 5 * 60_000, idx, "cluster", "i-2")
    assert (lab["fp"], lab["category"], lab["incident"], lab["trigger"]) == (0, "peer_drift", "d", "cluster")
    # the same sample raised by the detector is about the memory series only: no incident there
    assert label_candidate("search", "memory_util", mem, T0 + 5 * 60_000, idx, "detector", "i-2")["fp"] == 1
    # a disk leak does not move the entity vector the clusterer sees
    cpu = series_key("payments", "cpu_util", {"instance": "i-1"})
    assert label_candidate("payments", "cpu_util", cpu, T0 + 5 * 60_000, idx, "cluster", "i-1")["fp"] == 1


START = 1_780_000_000_000 - (1_780_000_000_000 % 3_600_000)
H = 3_600_000
# A leak towards its limit (forecast trigger), a drifting instance (cluster trigger), a spike (detector).
INCIDENTS = [
    Incident("leak", "memory_leak", "playback", "i-1", ("memory_util",), START + H, START + 5 * H, "saturation"),
    Incident("drift", "peer_drift", "search", "i-2", ("cpu_util", "latency_p99_ms"), START + H, START + 5 * H,
             "peer_drift"),
    Incident("spike", "spike", "payments", "i-0", ("error_rate",), START + 3 * H, START + 3 * H + 5 * 60_000,
             "errors"),
]


@pytest.fixture(scope="module")
def bundle(trained_store: Path) -> ModelBundle:
    return ModelBundle.load(trained_store)


@pytest.fixture(scope="module")
def scenario():
    return generate(seed=31, hours=5.0, start_ms=START, instances=4, incidents=INCIDENTS)


@pytest.fixture(scope="module")
def cands(bundle: ModelBundle, scenario) -> list[tuple[dict, dict]]:
    return build_candidates(scenario, bundle.detector, bundle.forecaster, bundle.clusterer, instances=4)


def test_candidates_of_every_trigger_labelled_against_the_incidents(cands) -> None:
    counts = trigger_counts(cands)
    assert all(counts[t]["candidates"] > 0 for t in ("detector", "forecast", "cluster")), counts
    for cand, lab in cands:
        assert set(cand) == CANDIDATE_KEYS
        assert len(classifier_features(cand)) == len(CLASSIFIER_FEATURES)
        assert cand["text"].startswith(lab["service"] + " " + cand["metric"])
        assert cand["criticality"] == service_context(lab["service"])["criticality"]
        if lab["trigger"] == "cluster":
            assert cand["score"] == cand["cluster_outlier"] >= cand["threshold"] == 0.9
        elif lab["trigger"] == "detector":
            assert cand["score"] >= cand["threshold"]
        else:
            assert cand["time_to_breach_s"] is not None and cand["time_to_breach_s"] <= 360 * 60
        if lab["fp"] == 0:
            inc = next(i for i in INCIDENTS if i.id == lab["incident"])
            assert inc.start_ms <= cand["ts_ms"] <= inc.end_ms + 10 * 60_000
            assert lab["category"] == inc.category
    # the leak is caught by its forecast, as saturation for the SRE team, and the drift by the clusterer
    leak = [lab for _, lab in cands if lab["trigger"] == "forecast" and lab["incident"] == "leak"]
    assert leak and all((lab["fp"], lab["category"], lab["team"]) == (0, "saturation", "sre") for lab in leak)
    drift = [lab for _, lab in cands if lab["trigger"] == "cluster" and lab["entity"] == "i-2"
             and lab["service"] == "search"]
    assert drift and all(lab["category"] == "peer_drift" for lab in drift)
    assert any(lab["incident"] == "spike" and lab["trigger"] == "detector" for _, lab in cands)
    assert 0 < sum(lab["fp"] for _, lab in cands) < len(cands)
    assert any(c["related_anomalies"] > 0 for c, _ in cands)


def test_candidates_are_what_the_job_raises(bundle: ModelBundle, scenario, cands) -> None:
    cfg = VigilConfig.load(overrides={"validation": {"max_past_s": None, "max_future_s": None}})
    job = InProcessJob(cfg, bundle, context=service_context).run([json.dumps(e).encode() for e in scenario.events],
                                                                 START)
    flagged = [(s.series, s.ts_ms, s.trigger) for s in job.scored if s.trigger]
    assert [(lab["series"], c["ts_ms"], lab["trigger"]) for c, lab in cands if lab["trigger"] != "cluster"] == flagged
    alerted = {(a["series"]["key"], a["event_time"], a["trigger"]) for a in map(json.loads, job.alerts)}
    raised = {(lab["series"], iso(c["ts_ms"]), lab["trigger"]) for c, lab in cands}
    assert alerted <= raised and {t for *_, t in alerted} == {"detector", "forecast", "cluster"}


def test_build_candidates_is_deterministic(bundle: ModelBundle, scenario, cands) -> None:
    again = build_candidates(generate(seed=31, hours=5.0, start_ms=START, instances=4, incidents=INCIDENTS),
                             bundle.detector, bundle.forecaster, bundle.clusterer, instances=4)
    assert again == cands


def test_a_cluster_evaluation_weighs_one_however_many_candidates_it_raised(cands) -> None:
    w = sample_weights(cands)
    assert all(v == 1.0 for v, (_, lab) in zip(w, cands, strict=True) if lab["trigger"] != "cluster")
    per_eval: dict = {}
    for v, (c, lab) in zip(w, cands, strict=True):
        if lab["trigger"] == "cluster":
            per_eval.setdefault((lab["service"], lab["entity"], c["ts_ms"]), []).append(v)
    assert per_eval and any(len(v) > 1 for v in per_eval.values())
    for v in per_eval.values():
        assert sum(v) == pytest.approx(1.0) and len(set(v)) == 1


def test_a_cluster_candidate_says_which_of_its_entitys_metrics_moved(cands) -> None:
    """Cluster candidates carry their entity's deviation from its cluster per metric, whichever metric's
    sample carried the evaluation: the error spike's show error rate, the drift's cpu and latency."""
    def mean_moved(incident: str) -> np.ndarray:
        rows = [c["moved"] for c, lab in cands if lab["trigger"] == "cluster" and lab["incident"] == incident]
        assert rows, incident
        return np.abs(np.asarray(rows)).mean(axis=0)

    drift, spike = mean_moved("drift"), mean_moved("spike")
    err, cpu, lat = (ENTITY_METRICS.index(m) for m in ("error_rate", "cpu_util", "latency_p99_ms"))
    assert int(np.argmax(spike)) == err, spike
    assert drift[cpu] > 5 * spike[cpu] and drift[lat] > 5 * spike[lat], (drift, spike)
    assert {c["metric"] for c, lab in cands if lab["incident"] == "drift" and lab["trigger"] == "cluster"} - {
        "cpu_util", "latency_p99_ms"}  # carried by other metrics' samples too
    plain = [c for c, lab in cands if lab["trigger"] != "cluster" and lab["entity"] is None]
    assert all(c["moved"] == [0.0] * len(ENTITY_METRICS) for c in plain)
