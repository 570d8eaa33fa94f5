"""The scoring logic without Flink: state encodings, continuation, detection, dedup, alert contract."""

from __future__ import annotations

import dataclasses
import json

import pytest

from jobs.inprocess import InProcessJob
from models.context import ContextCache
from models.features import CLASSIFIER_FEATURES, classifier_features
from models.impact import business_impact
from models.pipeline import Candidate, EntityLogic, EntityState, ModelBundle, SeriesLogic, SeriesState
from tests.contracts import SCHEMAS
from training.simulate import SERVICES, Incident, generate
from udfs.parse import MetricEvent, parse_record, series_key

START = 1_780_000_000_000 - (1_780_000_000_000 % 3_600_000)
CTX = {k: {f: v[f] for f in ("owner", "criticality", "revenue_per_min", "users", "description")}
       for k, v in SERVICES.items()}
ALERT_FIELDS = set(json.loads((SCHEMAS / "alert.json").read_text())["required"])  # the published contract


def payloads(scen) -> list[bytes]:
    return [json.dumps(e).encode() for e in scen.events]


SPIKE = Incident("t-spike", "spike", "search", "i-1", ("latency_p99_ms",), START + 90 * 60_000,
                 START + 93 * 60_000, "latency")


@pytest.fixture(scope="module")
def scenario():
    return generate(seed=3, hours=2.5, start_ms=START, instances=3, incidents=[SPIKE], business_metric=False)


@pytest.fixture(scope="module")
def full_run(cfg, models, scenario):
    return InProcessJob(cfg, models, context=CTX.get).run(payloads(scenario), START)


def test_series_state_round_trip_is_exact(full_run):
    for raw in list(full_run.series_state.values())[:20]:
        assert SeriesState.from_bytes(raw).to_bytes() == raw


def test_keyed_state_is_compact(full_run):
    # the budget is 16 KB a series, a week of seasonal context included (a full week's context is
    # tests/models/test_season.py); the entity states, shared by a service's series, add little
    largest = max(map(len, full_run.series_state.values()))
    entity_per_series = sum(map(len, full_run.entity_state.values())) / len(full_run.series_state)
    assert largest <= 16 * 1024 and entity_per_series < 1024, (largest, entity_per_series)


def test_entity_state_round_trip_is_exact(full_run):
    for raw in full_run.entity_state.values():
        assert EntityState.from_bytes(raw).to_bytes() == raw
        touched = EntityState.from_bytes(raw)
        assert isinstance(touched.groups, dict)  # decodes the JSON tail, which is then re-encoded
        assert touched.to_bytes() == raw


def test_entity_state_v1_json_migrates_to_v2(full_run):
    """A state written by v1 (all JSON) reads into the same state, and is written back as v2."""
    for raw in full_run.entity_state.values():
        st = EntityState.from_bytes(raw)
        v1 = json.dumps({"v": 1, "latest": st.latest, "clusters": st.clusters,
                         "centroids": None if st.centroids is None else st.centroids.tolist(),
                         "centroids_of": st.centroids_of, "recent": st.recent, "groups": st.groups}).encode()
        migrated = EntityState.from_bytes(v1)
        assert migrated.to_bytes() == raw
    with pytest.raises(ValueError, match="cannot read state version 7"):
        EntityState.from_bytes(json.dumps({"v": 7}).encode())


def test_snapshot_restore_continue_equals_uninterrupted_run(cfg, models, scenario, full_run):
    p = payloads(scenario)
    half = len(p) // 2
    first = InProcessJob(cfg, models, context=CTX.get).run(p[:half], START)
    # restore from the encoded state only, into fresh logic objects
    second = InProcessJob(cfg, models, context=CTX.get, series_state=dict(first.series_state),
                          entity_state=dict(first.entity_state)).run(p[half:], START)
    assert first.alerts + second.alerts == full_run.alerts
    assert first.forecasts + second.forecasts == full_run.forecasts
    assert second.series_state == full_run.series_state


def test_the_injected_spike_raises_an_alert_at_its_series(full_run):
    alerts = [json.loads(a) for a in full_run.alerts]
    key = series_key("search", "latency_p99_ms", (("instance", "i-1"),))
    hits = [a for a in alerts if key in a["related_series"] and a["status"] not in ("suppressed", "resolved")]
    assert hits, [a["series"]["key"] for a in alerts]
    t = min(a["event_time"] for a in hits)
    assert "T" in t and hits[0]["anomaly"]["score"] >= hits[0]["anomaly"]["threshold"]
    spike_start = SPIKE.start_ms
    first_ms = min(int(__import__("datetime").datetime.fromisoformat(a["event_time"]).timestamp() * 1000)
                   for a in hits)
    assert spike_start <= first_ms <= SPIKE.end_ms


def test_every_alert_carries_the_whole_contract(full_run, models):
    alerts = [json.loads(a) for a in full_run.alerts]
    assert alerts
    versions = models.versions()
    for a in alerts:
        assert set(a) == ALERT_FIELDS
        fp = ["false_positive_probability"] if a["false_positive_probability"] >= 0.9 else []
        assert a["suppressed_by"] in (fp, [*fp, "learning"])  # no maintenance configured
        if "learning" in a["suppressed_by"]:
            assert a["trigger"] == "detector" and a["severity"] != "critical"
        assert a["deploying"] is False and a["explanation"]["rules"] == []  # no rules configured
        assert a["schema"] == "vigil.alert/v1"
        assert a["severity"] in ("critical", "high", "medium", "low")
        assert a["priority"] in ("P1", "P2", "P3", "P4")
        assert 0.0 <= a["false_positive_probability"] <= 1.0
        assert a["models"] == versions
        assert len(a["classifier"]["features"]) == len(CLASSIFIER_FEATURES)  # for retraining from feedback
        assert a["feedback"] is None  # no verdicts in this run
        assert len(a["forecast"]["horizons"]) == 5
        for h in a["forecast"]["horizons"]:
            assert h["lower"] <= h["value"] <= h["upper"]
        assert a["cluster"] is not None and a["cluster"]["distance"] >= 0
        assert a["impact"]["revenue_per_min_at_risk"] >= 0 and a["recommended_actions"]
        assert a["explanation"]["top_features"] and a["explanation"]["summary"]
        assert a["startsAt"] == a["window"]["start"]
        assert (a["endsAt"] is None) == (a["status"] != "resolved")


def test_one_incident_is_one_alert_not_one_per_sample(full_run):
    alerts = [json.loads(a) for a in full_run.alerts]
    ids = {a["alert_id"] for a in alerts}
    # more candidate samples than alert records: grouping works
    candidates = sum(1 for s in full_run.scored if s.trigger)
    assert len(alerts) < candidates
    # and an alert id is derived from content, so a replay gives the same ids
    assert all(len(i) == 20 for i in ids)


def test_alert_ids_are_deterministic(cfg, models, scenario, full_run):
    again = InProcessJob(cfg, models, context=CTX.get).run(payloads(scenario), START)
    assert [json.loads(a)["alert_id"] for a in again.alerts] == [json.loads(a)["alert_id"] for a in full_run.alerts]


def _candidates(cfg, bundle, scenario) -> list[Candidate]:
    """SeriesLogic + EntityLogic.candidate over a scenario, states kept as objects."""
    series, entity = SeriesLogic(cfg.scoring, bundle), EntityLogic(cfg.scoring, cfg.alerts, bundle, CTX.get)
    ss: dict = {}
    es: dict = {}
    out = []
    for raw in payloads(scenario):
        for ev in parse_record(raw, START, cfg.validation.limits()):
            ss[ev.series], scored, _ = series.on_record(ss.get(ev.series), ev, cfg.scoring.entity_tag)
            c = entity.candidate(es.setdefault(ev.service, EntityState()), scored)
            if c is not None:
                out.append(c)
    return out


def test_candidates_without_a_classifier_are_the_jobs_candidates(cfg, models, scenario, full_run):
    bare = ModelBundle(models.detector, models.forecaster, models.clusterer)
    assert bare.versions() == {n: v for n, v in models.versions().items() if n != "classifier"}
    cands = _candidates(cfg, bare, scenario)
    # every sample the series logic flagged is a candidate, and so is every cluster trigger
    assert sum(1 for c in cands if c.trigger != "cluster") == sum(1 for s in full_run.scored if s.trigger)
    for c in cands:
        assert c.trigger in ("detector", "forecast", "cluster")
        assert c.trigger == (c.scored.trigger or "cluster")
        assert len(c.features()) == len(CLASSIFIER_FEATURES)
        assert c.inputs["related_anomalies"] == len(c.related) and c.scored.series not in c.related
        assert c.inputs["criticality"] == CTX[c.scored.service]["criticality"]
        if c.trigger == "cluster":
            assert c.cluster is not None and c.cluster.streak >= cfg.scoring.cluster_streak
            assert c.inputs["score"] == c.cluster.outlier and c.inputs["threshold"] == cfg.scoring.cluster_alert_above
    # each alert the job emitted came from one of these candidates, classified from exactly its inputs
    by_key = {(c.scored.series, c.scored.ts_ms): c for c in cands}
    for a in map(json.loads, full_run.alerts):
        ts = int(__import__("datetime").datetime.fromisoformat(a["event_time"]).timestamp() * 1000)
        c = by_key[(a["series"]["key"], ts)]
        assert a["trigger"] == c.trigger
        fp = models.classifier.predict_proba(classifier_features(c.inputs))["fp"]
        assert a["false_positive_probability"] == round(fp, 4)


def test_alerting_needs_a_classifier(cfg, models, scenario):
    bare = ModelBundle(models.detector, models.forecaster, models.clusterer)
    logic = EntityLogic(cfg.scoring, cfg.alerts, bare, CTX.get)
    ev = parse_record(payloads(scenario)[0], START, cfg.validation.limits())[0]
    _, scored, _ = SeriesLogic(cfg.scoring, bare).on_record(None, ev, "instance")
    with pytest.raises(ValueError, match="needs a classifier"):
        logic.on_record(None, scored, START)


def test_forecast_trigger_on_a_leak_towards_its_limit(cfg, models):
    logic = SeriesLogic(cfg.scoring, models)
    st = None
    triggers, ttbs = [], []
    for i in range(240):
        v = 60.0 + 0.15 * i + (0.3 if i % 2 else -0.3)  # 9 points an hour towards 100
        ev = MetricEvent("s|memory_util|instance=a", "s", "memory_util", (("instance", "a"),), START + i * 60_000, v)
        st, scored, _ = logic.on_record(st, ev, "instance")
        triggers.append(scored.trigger)
        if scored.time_to_breach_s is not None:
            ttbs.append((i, scored.time_to_breach_s))
    assert "forecast" in triggers
    i, ttb = ttbs[-1]
    true_ttb = (100.0 - (60.0 + 0.15 * i)) / 0.15 * 60
    assert 0.2 * true_ttb <= ttb <= 5 * true_ttb, (ttb, true_ttb)


def test_late_events_go_to_dead_letters_not_into_state(cfg, models):
    job = InProcessJob(cfg, models)
    ev = {"metric": "cpu_util", "value": 1.0, "service": "s", "tags": {"instance": "a"}}
    job.feed(json.dumps({**ev, "timestamp": START + 3_600_000}).encode(), START)
    job.feed(json.dumps({**ev, "timestamp": START}).encode(), START)
    assert [d.reason for d in job.dead_letters] == ["late_event"]
    assert SeriesState.from_bytes(job.series_state["s|cpu_util|instance=a"]).window.n == 1


def test_an_event_ahead_of_its_series_makes_no_other_series_late(cfg, models):
    """Event time is per series: one host with a clock an hour ahead blinds nobody else."""
    job = InProcessJob(cfg, models)
    ev = {"metric": "cpu_util", "value": 1.0, "service": "s"}
    for i in range(30):
        for inst in ("a", "b"):
            job.feed(json.dumps({**ev, "tags": {"instance": inst}, "timestamp": START + i * 60_000}).encode(), START)
        if i == 10:  # host a's clock jumps an hour ahead, once
            job.feed(json.dumps({**ev, "tags": {"instance": "a"}, "timestamp": START + 3_600_000}).encode(), START)
    late = [d for d in job.dead_letters if d.reason == "late_event"]
    assert len(late) == 19  # a's normal events after the jump (11..29); all of b's were scored
    assert all("instance=a" in d.detail for d in late)
    assert SeriesState.from_bytes(job.series_state["s|cpu_util|instance=b"]).window.n == 30


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_outputs_do_not_depend_on_batch_boundaries(cfg, models, scenario, full_run, batch_size):
    """The same records cut into other batches give the same records on every output, in the same order."""
    p = payloads(scenario)
    p[50:50] = [b"[" * 1000, b'{"metric":"m","value":1,"timestamp":1,"service":"s"}']
    ref = InProcessJob(cfg, models, context=CTX.get).run(p, START, batch_size=256)
    job = InProcessJob(cfg, models, context=CTX.get).run(p, START, batch_size=batch_size)
    assert len(ref.alerts) > 0 and len(ref.forecasts) > 0
    assert job.alerts == ref.alerts
    assert job.forecasts == ref.forecasts
    assert job.drift == ref.drift
    assert [(d.reason, d.detail) for d in job.dead_letters] == [(d.reason, d.detail) for d in ref.dead_letters]
    assert job.series_state == ref.series_state
    assert job.entity_state == ref.entity_state
    assert max(job.batches) == min(batch_size, len(p))


class _DownRedis:
    def __init__(self):
        self.up = True
        self.empty = False

    def scan_iter(self, match, count):
        import redis

        if not self.up:
            raise redis.ConnectionError("connection refused")
        return iter([] if self.empty else [b"vigil:service:search"])

    def hgetall(self, key):
        return {b"owner": b"discovery", b"criticality": b"0.6", b"users": b"900000"}


def test_context_survives_redis_going_down():
    client = _DownRedis()
    now = [0.0]
    cache = ContextCache(client, refresh_s=10, clock=lambda: now[0])
    assert cache("search") == {"owner": "discovery", "criticality": 0.6, "users": 900000}
    client.up = False
    now[0] = 11.0
    assert cache("search")["owner"] == "discovery"
    assert cache.failures == 1
    # back, but empty (restarted without its data): what we knew keeps serving until keys reappear
    client.up, client.empty = True, True
    now[0] = 22.0
    assert cache("search")["owner"] == "discovery"
    client.empty = False
    now[0] = 33.0
    assert cache.refresh() and cache("search")["owner"] == "discovery"


def test_business_impact_figures():
    ctx = {"criticality": 1.0, "revenue_per_min": 400.0, "users": 1_000_000, "description": "billing"}
    imp = business_impact("errors", "critical", ctx, 0.5)
    assert imp["revenue_per_min_at_risk"] == 200.0
    assert imp["users_affected"] == 500_000
    assert imp["security"] == "high" and imp["user_experience"] == "high"
    low = business_impact("peer_drift", "low", ctx, 0.125)
    assert low["revenue_per_min_at_risk"] == pytest.approx(400 * 0.125 * 0.1 * 0.15, abs=0.01)
    assert low["security"] == "low"


def test_cluster_streak_and_reassignment_come_from_the_configuration(cfg, models, scenario):
    """``scoring.cluster_streak`` and ``scoring.cluster_reassign_s`` decide the cluster triggers."""
    bare = ModelBundle(models.detector, models.forecaster, models.clusterer)
    series = SeriesLogic(cfg.scoring, bare)
    ss: dict = {}
    scored = []
    for raw in payloads(scenario):
        for ev in parse_record(raw, START, cfg.validation.limits()):
            ss[ev.series], s, _ = series.on_record(ss.get(ev.series), ev, cfg.scoring.entity_tag)
            scored.append(s)

    def cluster_triggers(**scoring) -> int:
        # a low bar, so that the healthy scenario's entities make streaks at all
        sc = dataclasses.replace(cfg.scoring, **{"cluster_alert_above": 0.3, **scoring})
        entity = EntityLogic(sc, cfg.alerts, bare, CTX.get)
        es: dict = {}
        n = 0
        for s in scored:
            c = entity.candidate(es.setdefault(s.service, EntityState()), s)
            n += c is not None and c.trigger == "cluster"
        return n

    shipped = cluster_triggers()
    assert shipped > 0
    assert cluster_triggers(cluster_streak=1) > shipped > cluster_triggers(cluster_streak=20)
    # re-assigned at most once an hour, an entity is evaluated far less often: fewer streaks complete
    assert cluster_triggers(cluster_reassign_s=3600) < shipped


def _detector_alerts(cfg, models, learning_scores: int) -> list[dict]:
    """The alerts of a run where an injected spike comes 40 samples after its series' warm-up."""
    start = START + 7 * 3_600_000
    spike = Incident("t-young", "spike", "search", "i-1", ("latency_p99_ms",), start + 60 * 60_000,
                     start + 63 * 60_000, "latency")
    scen = generate(seed=3, hours=1.5, start_ms=start, instances=3, incidents=[spike], business_metric=False)
    c = dataclasses.replace(cfg, alerts=dataclasses.replace(cfg.alerts, learning_scores=learning_scores))
    run = InProcessJob(c, models, context=CTX.get).run(payloads(scen), start)
    return [json.loads(a) for a in run.alerts]


def test_a_young_series_detector_alerts_below_critical_are_written_suppressed_as_learning(cfg, models):
    key = series_key("search", "latency_p99_ms", (("instance", "i-1"),))
    off = _detector_alerts(cfg, models, 0)
    on = _detector_alerts(cfg, models, 10_000)  # every series is young
    assert not any("learning" in a["suppressed_by"] for a in off)
    learning = [a for a in on if "learning" in a["suppressed_by"]]
    assert learning and all(a["trigger"] == "detector" and a["severity"] != "critical" for a in learning)
    assert all(a["status"] == "suppressed" for a in learning if a["revision"] == 0)  # as it is first written
    # the same candidates: what the period holds back is still written, only its status differs
    assert sorted(a["alert_id"] for a in on) == sorted(a["alert_id"] for a in off)
    # critical alerts page in the learning period too
    critical = [a for a in on if a["trigger"] == "detector" and a["severity"] == "critical"
                and a["false_positive_probability"] < 0.9 and a["status"] != "resolved"]
    assert critical, sorted({(a["trigger"], a["severity"]) for a in on})
    assert all(a["status"] != "suppressed" and "learning" not in a["suppressed_by"] for a in critical)
    assert any(key in a["related_series"] for a in on)
