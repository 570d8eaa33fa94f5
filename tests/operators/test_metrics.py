"""operators.metrics: histograms in Prometheus' layout and the breakdowns of a batch's results."""

from __future__ import annotations

import json

from fakes import FakeGroup

from models.shard import BatchResult
from operators.metrics import Histogram, JobMetrics
from udfs.parse import DeadLetter


def test_histogram_buckets_are_cumulative_with_a_sum_and_a_count():
    g = FakeGroup()
    h = Histogram(g, "x", (1, 10), scale=1000)
    for v in (0.5, 3, 3, 50):
        h.observe(v)
    le = {k[1]: grp.counters["x_bucket"].value for k, grp in g.groups.items()}
    assert le == {"1": 1, "10": 3, "Inf": 4}
    assert (g.counters["x_count"].value, g.counters["x_sum"].value) == (4, 56_500)


def test_a_batch_is_counted_by_shape_reason_severity_and_status():
    root = FakeGroup()
    m = JobMetrics(root)
    res = BatchResult(events=7, late=1, shapes={"native": 5, "otlp": 1}, skipped={"stale_marker": 2},
                      clock_ms=1_000)
    res.dead_letters = [(DeadLetter("not_json", "x"), b"", 0, 0, 1), (DeadLetter("late_event", "y"), b"", 0, 0, 2)]
    res.alerts = [json.dumps({"severity": "high", "status": "open", "event_time": "2026-12-02T10:00:00+00:00"})]
    m.on_batch(res, 6, now_ms=1_796_205_605_000)  # 2026-12-02T10:00:05Z
    v = root.groups["vigil"]
    assert v.groups[("shape", "native")].counters["records_in"].value == 5
    assert v.groups[("reason", "not_json")].counters["dead_letters"].value == 1
    assert v.groups[("reason", "stale_marker")].counters["skipped"].value == 2
    assert v.groups[("severity", "high")].groups[("status", "open")].counters["alerts"].value == 1
    assert (v.counters["events"].value, v.counters["late_events"].value) == (7, 1)
    assert v.counters["event_to_alert_seconds_sum"].value == 5_000  # five seconds, in ms
    assert v.counters["batch_records_sum"].value == 6


def test_the_event_clock_counter_holds_the_latest_event_time_and_never_moves_back():
    root = FakeGroup()
    m = JobMetrics(root)
    for clock in (5_000, 9_000, 7_000):
        m.on_batch(BatchResult(clock_ms=clock), 1, now_ms=10_000)
    assert root.groups["vigil"].counters["event_clock_ms"].value == 9_000
    assert not root.groups["vigil"].gauges  # gauges are read from the reporter's thread; see JobMetrics


def test_model_versions_served_are_counted_per_batch_with_a_counter_for_each_new_version():
    root = FakeGroup()
    m = JobMetrics(root)
    m.on_models([("detector", "v-1", "production"), ("forecaster", "v-2", "production")])
    m.on_models([("detector", "v-1", "production"), ("detector", "v-3", "shadow")])
    m.on_models([("detector", "v-3", "production")])  # the shadow promoted by a hot swap

    def batches(model: str, version: str, alias: str) -> int:
        g = root.groups["vigil"].groups[("model", model)].groups[("version", version)].groups[("alias", alias)]
        return g.counters["served_batches"].value

    assert batches("detector", "v-1", "production") == 2
    assert batches("forecaster", "v-2", "production") == 1
    assert batches("detector", "v-3", "shadow") == 1
    assert batches("detector", "v-3", "production") == 1
    assert not root.groups["vigil"].gauges
