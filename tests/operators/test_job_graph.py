"""The whole job graph on the local Flink MiniCluster gives exactly what the logic gives in-process."""

from __future__ import annotations

import json

import pytest

from common.config import VigilConfig
from jobs.inprocess import InProcessJob
from models.artifact import ArtifactStore
from models.context import ContextCache, connect, seed
from models.pipeline import ModelBundle
from training.simulate import SERVICES, Incident, generate
from udfs.parse import MetricEvent, parse_record

pytestmark = [pytest.mark.flink, pytest.mark.integration]
START = 1_780_000_000_000 - (1_780_000_000_000 % 3_600_000)


def as_otlp(events: list[MetricEvent]) -> bytes:
    """Events as one OTLP/JSON export, a resource per service: the very same series and values."""
    by_service: dict[str, list[MetricEvent]] = {}
    for e in events:
        by_service.setdefault(e.service, []).append(e)
    return json.dumps({"resourceMetrics": [
        {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": svc}}]},
         "scopeMetrics": [{"scope": {"name": "vigil.test"}, "metrics": [
             {"name": e.metric, "gauge": {"dataPoints": [
                 {"asDouble": e.value, "timeUnixNano": str(e.ts_ms * 10**6),
                  "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in e.tags]}]}}
             for e in evs]}]}
        for svc, evs in by_service.items()]}).encode()


def _strip(alert: str) -> dict:
    a = json.loads(alert)
    a.pop("emitted_at")
    return a


def test_minicluster_job_graph_matches_in_process_logic(trained_store, redis_url):
    from pyflink.common import Row, Types
    from pyflink.datastream import StreamExecutionEnvironment

    from jobs.vigil_job import flink_configuration, wire

    seed(connect(redis_url), SERVICES)
    cfg = VigilConfig.load(overrides={
        "registry": {"root": str(trained_store)}, "redis": {"url": redis_url},
        "validation": {"max_past_s": None, "max_future_s": None},
    })
    inc = Incident("t", "level_shift", "payments", "i-0", ("error_rate",), START + 80 * 60_000,
                   START + 120 * 60_000, "errors")
    scen = generate(seed=5, hours=2, start_ms=START, instances=2, incidents=[inc], business_metric=False)
    # the first hour as native records, the second as OTLP exports of a minute each: every export
    # holds all five services, so the JVM splits it into one record per shard
    records = [json.dumps(e).encode() for e in scen.events]
    payloads, minutes = [], {}
    for r in records:
        evs = parse_record(r, START, cfg.validation.limits())
        if evs[0].ts_ms < START + 3_600_000:
            payloads.append(r)
        else:
            minutes.setdefault(evs[0].ts_ms // 60_000, []).extend(evs)
    assert len(minutes) == 60 and all(len({e.service for e in m}) == 5 for m in minutes.values())
    payloads += [as_otlp(m) for _, m in sorted(minutes.items())]
    # a Telegraf batch across two services with one refused part, and a staleness marker
    bad_part = {"name": "disk", "fields": {"used": 1}, "tags": {"service": "search"}, "timestamp": "soon"}
    batch = {"metrics": [{"name": "disk", "fields": {"used": 40.0, "state": "ok"}, "tags": {"service": "payments"},
                          "timestamp": START // 1000 + 600}, bad_part]}
    stale = {"labels": {"__name__": "up", "job": "search"}, "value": "NaN", "timestamp": START + 600_000}
    payloads[100:100] = [b"not json", b'{"metric":"m","value":NaN,"timestamp":1,"service":"s"}',
                         json.dumps(batch).encode(), json.dumps(stale).encode()]

    env = StreamExecutionEnvironment.get_execution_environment(flink_configuration(cfg))
    env.set_parallelism(1)
    rows = [Row(0, p, 0, i) for i, p in enumerate(payloads)]
    raw = env.from_collection(rows, type_info=Types.ROW([Types.INT(), Types.PRIMITIVE_ARRAY(Types.BYTE()),
                                                          Types.INT(), Types.LONG()]))
    # one update naming the version already served: every operator re-verifies it and says so
    store = ArtifactStore(trained_store)
    update = json.dumps({"model": "detector", "version": store.latest("detector"), "alias": "production"}).encode()
    updates = env.from_collection([Row(update)], type_info=Types.ROW([Types.PRIMITIVE_ARRAY(Types.BYTE())]))
    out_streams = wire(cfg, raw, updates)
    # one collect over the union (no extra Python operators): records say what they are by schema
    merged = out_streams["alerts"].union(out_streams["forecasts"], out_streams["dead_letters"],
                                         out_streams["model_events"])
    with merged.execute_and_collect() as results:
        out = [(json.loads(s)["schema"], s) for s in results]

    flink_alerts = [_strip(s) for k, s in out if k == "vigil.alert/v1"]
    # shards interleave on the outputs: dead letters in source order
    flink_dead = sorted((json.loads(s) for k, s in out if k == "vigil.deadletter/v1"),
                        key=lambda d: d["source"]["offset"])
    flink_forecasts = sorted(s for k, s in out if k == "vigil.forecast/v1")

    ctx = ContextCache(connect(redis_url), refresh_s=30)
    local = InProcessJob(cfg, ModelBundle.load(trained_store), context=ctx).run(payloads, START)

    assert [d["reason"] for d in flink_dead] == ["not_json", "non_finite_value", "wrong_type"]
    assert [(d["source"]["partition"], d["source"]["offset"]) for d in flink_dead] == [(0, 100), (0, 101), (0, 102)]
    assert json.loads(flink_dead[2]["payload"]) == bad_part  # the refused part alone, the rest scored
    refused = zip(local.dead_letters[2:], local.dead_payloads[2:], strict=True)
    assert [(d.reason, json.loads(p)) for d, p in refused] == [("wrong_type", bad_part)]
    assert local.skipped == {"non_numeric_field": 1, "stale_marker": 1}
    assert len(flink_forecasts) == len(local.forecasts) > 0
    assert flink_forecasts == sorted(local.forecasts)
    # the OTLP half gives the very series and values the native records would have
    native = InProcessJob(cfg, ModelBundle.load(trained_store), context=ctx).run(
        records, START)
    assert sorted(native.forecasts) == sorted(f for f in local.forecasts if '"disk_used"' not in f)
    # shards interleave on the output; within a service (one shard) the order is the logic's
    assert sorted(flink_alerts, key=json.dumps) == sorted((_strip(a) for a in local.alerts), key=json.dumps)
    for service in {a["series"]["service"] for a in flink_alerts}:
        assert [a for a in flink_alerts if a["series"]["service"] == service] == [
            _strip(a) for a in local.alerts if json.loads(a)["series"]["service"] == service]
    assert any(a["series"]["service"] == "payments" for a in flink_alerts)
    events = [json.loads(s) for k, s in out if k == "vigil.model-event/v1"]
    assert sorted((e["operator"], e["status"], e["version"]) for e in events) == [
        ("score-shard", "serving", store.latest("detector"))]
