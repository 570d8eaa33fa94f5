"""Model lifecycle in the scoring logic: feedback verdicts, drift events, shadow versions, learned floors."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import pytest

from jobs.inprocess import InProcessJob
from models.features import PRIORITIES
from models.pipeline import EntityLogic, SeriesLogic, SeriesState
from training.simulate import SERVICES, Incident, generate, incident_series
from udfs.parse import Feedback, MetricEvent, parse_feedback
from udfs.records import FeedbackRecord

START = 1_780_000_000_000 - (1_780_000_000_000 % 3_600_000)
CTX = {k: {f: v[f] for f in ("owner", "criticality", "revenue_per_min", "users", "description")}
       for k, v in SERVICES.items()}
SPIKE1 = Incident("s1", "spike", "search", "i-1", ("latency_p99_ms",), START + 90 * 60_000, START + 93 * 60_000,
                  "latency")
SPIKE2 = Incident("s2", "spike", "search", "i-1", ("latency_p99_ms",), START + 150 * 60_000,
                  START + 153 * 60_000, "latency")
SHIFT = Incident("sh", "level_shift", "payments", "i-0", ("error_rate",), START + 100 * 60_000,
                 START + 180 * 60_000, "errors")


@pytest.fixture(scope="module")
def scenario():
    return generate(seed=3, hours=3.5, start_ms=START, instances=3, incidents=[SPIKE1, SPIKE2, SHIFT],
                    business_metric=False)


def _payloads(scen, until_ms: int | None = None, after_ms: int | None = None) -> list[bytes]:
    return [json.dumps(e).encode() for e in scen.events
            if (until_ms is None or _ts(e) < until_ms) and (after_ms is None or _ts(e) >= after_ms)]


def _ts(e: dict) -> int:
    return e["timestamp"] if "metric" in e else e["timestamp"] * 1000


def _verdict(alert: dict, verdict: str) -> bytes:
    return FeedbackRecord(alert["alert_id"], alert["series"]["key"], alert["category"], verdict, by="on-call",
                          at=datetime.now(UTC).isoformat(), reason="test").to_json().encode()


def _run(cfg, models, scen, verdict: str | None, series_too: bool = True) -> tuple[list[dict], list[dict]]:
    """The scenario up to between the spikes; then, optionally, a verdict on every alert of the first
    spike's series; then the rest. ``series_too=False`` hands the verdicts to the service's entity
    state only (what a verdict does to the classifier's side, without the series threshold)."""
    job = InProcessJob(cfg, models, context=CTX.get)
    cut = START + 120 * 60_000
    job.run(_payloads(scen, until_ms=cut), START)
    n = len(job.alerts)
    first = [a for a in map(json.loads, job.alerts) if a["status"] != "resolved"]  # a verdict per alert
    if verdict is not None:
        for a in first:
            if a["series"]["key"] != incident_series(SPIKE1, 3)[0]:
                continue
            if series_too:
                job.feed_feedback(_verdict(a, verdict))
            else:  # three people's verdicts, each of which counts
                for _ in range(3):
                    fb = parse_feedback(_verdict(a, verdict))
                    job.logic.entity.on_feedback(job.state.get_entity("search"), fb)
    job.run(_payloads(scen, after_ms=cut), START)
    return first, [json.loads(a) for a in job.alerts[n:]]


def _spike2(alerts: list[dict]) -> list[dict]:
    key = incident_series(SPIKE2, 3)[0]
    return [a for a in alerts if a["series"]["key"] == key and a["trigger"] == "detector" and a["status"] != "resolved"]


def test_false_positive_verdicts_lower_the_priority_of_false_positive_prone_alerts(cfg, models, scenario):
    first, plain = _run(cfg, models, scenario, None)
    _, judged = _run(cfg, models, scenario, "false_positive", series_too=False)
    judged_first = [a for a in first if a["series"]["key"] == incident_series(SPIKE1, 3)[0]]
    assert judged_first, "the first spike was alerted"
    before, after = _spike2(plain)[0], _spike2(judged)[0]
    # same candidate, same classifier answer ...
    assert after["alert_id"] == before["alert_id"]
    assert after["classifier"]["fp"] == before["classifier"]["fp"]
    assert after["classifier"]["priority"] == before["classifier"]["priority"]
    # ... but the service's verdicts on this category pull the false-positive probability up
    n_fp = 3 * sum(1 for a in judged_first if a["category"] == after["category"])
    assert n_fp >= 1
    w = sum(cfg.alerts.feedback_decay ** i for i in range(n_fp))
    expected = (before["classifier"]["fp"] * cfg.alerts.feedback_prior + w) / (cfg.alerts.feedback_prior + w)
    assert after["feedback"] == {"false_positive": round(w, 4), "true": 0.0}
    assert after["false_positive_probability"] == pytest.approx(expected, abs=2e-4)
    assert after["false_positive_probability"] > before["false_positive_probability"]
    assert after["false_positive_probability"] >= cfg.alerts.demote_fp_above
    # ... and the alert loses a priority level
    model_priority = max(after["classifier"]["priority"], key=after["classifier"]["priority"].get)
    assert before["priority"] == model_priority and not before["classifier"]["priority_demoted"]
    assert after["classifier"]["priority_demoted"]
    assert PRIORITIES.index(after["priority"]) == PRIORITIES.index(before["priority"]) + 1


def test_false_positive_verdicts_raise_the_series_threshold(cfg, models, scenario):
    first, plain = _run(cfg, models, scenario, None)
    _, judged = _run(cfg, models, scenario, "false_positive")
    n = sum(1 for a in first if a["series"]["key"] == incident_series(SPIKE1, 3)[0])
    spike = _spike2(plain)
    assert spike and n >= 1
    # each verdict halves the tail above the threshold: the same spike no longer reaches it
    raised = 1 - (1 - spike[0]["anomaly"]["threshold"]) * cfg.scoring.feedback_tail_factor ** n
    assert all(a["anomaly"]["score"] < raised for a in spike)
    assert _spike2(judged) == []
    # alerts of other series are unchanged by the verdicts on this one
    others = [a["alert_id"] for a in plain if a["series"]["service"] != "search"]
    assert [a["alert_id"] for a in judged if a["series"]["service"] != "search"] == others


def test_resolved_verdicts_lower_the_false_positive_probability(cfg, models, scenario):
    _, plain = _run(cfg, models, scenario, None)
    _, judged = _run(cfg, models, scenario, "resolved")
    before, after = _spike2(plain)[0], _spike2(judged)[0]
    assert after["false_positive_probability"] < before["false_positive_probability"]
    assert after["priority"] == before["priority"] and after["anomaly"]["threshold"] == before["anomaly"]["threshold"]


def test_ack_is_not_a_verdict(cfg, models, scenario):
    _, plain = _run(cfg, models, scenario, None)
    _, acked = _run(cfg, models, scenario, "ack")
    assert [(a["alert_id"], a["priority"], a["false_positive_probability"]) for a in acked] == \
        [(a["alert_id"], a["priority"], a["false_positive_probability"]) for a in plain]


def test_bad_feedback_becomes_a_dead_letter_with_a_reason(cfg, models):
    job = InProcessJob(cfg, models)
    job.feed_feedback(b'{"schema":"vigil.feedback/v1","alert_id":"a","series":"x|y|","category":"c",'
                      b'"verdict":"meh","by":"b","at":"2026-11-29T00:00:00Z"}')
    job.feed_feedback(b'{"schema":"vigil.feedback/v1","alert_id":"a","category":"c","verdict":"ack"}')
    job.feed_feedback(b"not json")
    assert [d.reason for d in job.dead_letters] == ["invalid_value", "missing_field", "not_json"]
    assert job.series_state == {} and job.entity_state == {}


def test_drift_events_name_the_shifted_series_only(cfg, models, scenario):
    job = InProcessJob(cfg, models, context=CTX.get).run(_payloads(scenario), START)
    drift = [json.loads(d) for d in job.drift]
    assert drift, "the level shift is a drift"
    assert {d["series"] for d in drift} <= set(incident_series(SHIFT, 3)) | set(incident_series(SPIKE1, 3)) | \
        set(incident_series(SPIKE2, 3))
    assert any(d["series"] in incident_series(SHIFT, 3) for d in drift)
    for d in drift:
        assert d["schema"] == "vigil.drift/v1" and d["detector"] == "page_hinkley"
        assert d["signal"] in ("detector_score", "forecast_residual")
        assert d["model_version"] == models.versions()[d["model"]]
        assert max(d["stats"]["increase"], d["stats"]["decrease"]) > d["stats"]["threshold"]
        assert datetime.fromisoformat(d["event_time"]).timestamp() * 1000 >= SHIFT.start_ms


def test_series_state_v1_reads_with_empty_lifecycle_fields_and_a_seeded_surprise(cfg, models, scenario):
    job = InProcessJob(cfg, models, context=CTX.get).run(_payloads(scenario, until_ms=START + 60 * 60_000), START)
    for raw in list(job.series_state.values())[:10]:
        st = SeriesState.from_bytes(raw)
        assert st.to_bytes() == raw
        v1 = SeriesState._V1.pack(1, 0.2, 0.01, 37.0, st.since_forecast, st.breach_streak) + st.window.to_bytes()
        old = SeriesState.from_bytes(v1)
        assert (old.window.to_bytes(), old.threshold, old.since_forecast) == \
            (st.window.to_bytes(), (0.2, 0.01, 37.0), st.since_forecast)
        assert (old.drift_score, old.pending, old.fb_tail) == (None, None, 1.0)
        # the adaptive threshold's score statistics and the history's range seed the surprise
        sp = old.surprise
        assert (sp.n, sp.mean, sp.var, sp.recent) == (37, 0.2, 0.01, [])
        assert (sp.lo, sp.hi) == (min(st.window.ring), max(st.window.ring))
        never = SeriesState._V1.pack(1, 0.0, 0.0, -1.0, 0, 0) + st.window.to_bytes()
        assert SeriesState.from_bytes(never).surprise.n == 0


def test_a_shadow_version_is_recorded_beside_production_and_never_alerts(cfg, models, scenario):
    plain = InProcessJob(cfg, models, context=CTX.get).run(_payloads(scenario), START)
    bundle = copy.copy(models)
    bundle.shadow = {n: getattr(models, n) for n in ("detector", "forecaster", "clusterer", "classifier")}
    shadowed = InProcessJob(cfg, bundle, context=CTX.get).run(_payloads(scenario), START)
    assert shadowed.alerts == plain.alerts  # the shadow changes nothing that is alerted
    recs = [json.loads(r) for r in shadowed.shadow]
    by_model = {m: [r for r in recs if r["model"] == m] for m in ("detector", "forecaster", "clusterer", "classifier")}
    assert all(by_model.values()), {m: len(v) for m, v in by_model.items()}
    assert len(by_model["detector"]) == sum(1 for s in plain.scored if s.det is not None)
    assert len(by_model["classifier"]) >= len(plain.alerts)
    for r in recs:  # the same version on both sides answers the same ...
        prod, sh = dict(r["production"]), dict(r["shadow"])
        assert r["schema"] == "vigil.shadow/v1" and prod["version"] == sh["version"]
        if r["model"] != "clusterer":
            assert prod == sh
    # ... except that production's centroids adapt online while the shadow's stay as trained
    cl = by_model["clusterer"]
    assert sum(r["production"]["cluster"] == r["shadow"]["cluster"] for r in cl) >= 0.9 * len(cl)
    gaps = sorted(abs(r["production"]["distance"] - r["shadow"]["distance"]) for r in cl)
    assert gaps[len(gaps) // 2] < 0.02


def test_a_learned_floor_silences_a_series_below_it(cfg, models):
    logic = SeriesLogic(cfg.scoring, models)
    ev = [MetricEvent("s|cpu_util|instance=a", "s", "cpu_util", (("instance", "a"),), START + i * 60_000,
                      50.0 + (0.5 if i % 2 else -0.5) + (30.0 if i == 40 else 0.0)) for i in range(41)]
    st = None
    for e in ev[:-1]:
        st, _, _ = logic.on_record(st, e, "instance")
    _, spike, _ = logic.on_record(copy.deepcopy(st), ev[-1], "instance")
    assert spike.trigger == "detector"
    floored = copy.copy(models.detector)
    floored.series_floor = {"s|cpu_util|instance=a": min(spike.score + 1e-3, 1.0)}
    logic.models = copy.copy(models)
    logic.models.detector = floored
    _, quiet, _ = logic.on_record(copy.deepcopy(st), ev[-1], "instance")
    assert quiet.score == spike.score and quiet.trigger == "" and quiet.threshold == floored.series_floor[ev[0].series]


def test_entity_feedback_counts_only_verdicts(cfg, models):
    logic = EntityLogic(cfg.scoring, cfg.alerts, models, CTX.get)
    st = None
    for v in ("false_positive", "ack", "false_positive", "resolved"):
        st = logic.on_feedback(st, Feedback("a", "s|m|", "s", "latency", v, "b", "", 0))
    d = cfg.alerts.feedback_decay
    assert st.feedback["latency"] == pytest.approx([(1 * d + 1) * d, 1.0])
    assert logic.fp_probability(st, "errors", 0.1) == 0.1


def test_bundle_loads_and_drops_a_shadow_without_touching_production(trained_store, models):
    bundle = copy.copy(models)
    bundle.shadow = {}
    v = models.detector.version
    assert bundle.swap(trained_store, "detector", v, "shadow") is None
    assert bundle.shadow["detector"].version == v and bundle.detector is models.detector
    assert bundle.swap(trained_store, "detector", None, "shadow") == v and bundle.shadow == {}
    with pytest.raises(ValueError, match="Unknown alias 'canary'"):
        bundle.swap(trained_store, "detector", v, "canary")
    with pytest.raises(ValueError, match="cannot be removed"):
        bundle.swap(trained_store, "detector", None, "production")
