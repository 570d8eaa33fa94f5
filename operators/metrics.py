"""The job's metrics, registered on the Flink operator's metric group (Prometheus names them
``flink_taskmanager_job_task_operator_vigil_...``; ``flink-conf/grafana/vigil.json`` is a board on them).

Flink's metric groups have no labelled counters, but a key-value group becomes a Prometheus label,
so each breakdown (input shape, dead-letter reason, alert severity and status, histogram bucket) is
a counter under a group ``<key> = <value>``, every value registered in ``open()``. Histograms are
Prometheus' own layout: cumulative ``bucket`` counters by ``le``, a ``sum`` and a ``count``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from models.detector import SEVERITIES
from udfs.parse import REASONS, SHAPES, SKIP_REASONS

ALERT_STATUSES = ("open", "escalated", "suppressed", "resolved")
BATCH_BUCKETS = (1, 4, 16, 64, 256, 1024)  # records per batch
LATENCY_BUCKETS_S = (0.1, 0.5, 1, 5, 30, 60, 300, 3600)  # wall clock at emission minus event time


class Histogram:
    """Cumulative bucket counters (``le``), a sum and a count, as Prometheus reads a histogram."""

    def __init__(self, group: Any, name: str, bounds: Sequence[float], scale: float = 1.0) -> None:
        self.bounds = tuple(bounds)
        self.scale = scale  # the sum counter holds integers: observations times scale
        self.buckets = [group.add_group("le", _le(b)).counter(name + "_bucket") for b in self.bounds]
        # Flink's reporter turns "+" into "_" in label values; Prometheus reads "Inf" as +Inf too
        self.inf = group.add_group("le", "Inf").counter(name + "_bucket")
        self.sum = group.counter(name + "_sum")
        self.count = group.counter(name + "_count")

    def observe(self, value: float) -> None:
        for b, c in zip(self.bounds, self.buckets, strict=True):
            if value <= b:
                c.inc()
        self.inf.inc()
        self.sum.inc(int(round(value * self.scale)))
        self.count.inc()


def _le(b: float) -> str:
    return str(int(b)) if float(b).is_integer() else str(b)


class JobMetrics:
    """Everything the score-shard operator reports, from the results of a batch."""

    def __init__(self, root: Any) -> None:
        g = root.add_group("vigil")
        self.events_in = {s: g.add_group("shape", s).counter("records_in") for s in SHAPES}
        self.events = g.counter("events")
        self.dead = {r: g.add_group("reason", r).counter("dead_letters") for r in REASONS}
        self.skipped = {r: g.add_group("reason", r).counter("skipped") for r in SKIP_REASONS}
        self.late = g.counter("late_events")
        self.alerts = {(sev, st): g.add_group("severity", sev).add_group("status", st).counter("alerts")
                       for sev in SEVERITIES for st in ALERT_STATUSES}
        self.batch = Histogram(g, "batch_records", BATCH_BUCKETS)
        self.latency = Histogram(g, "event_to_alert_seconds", LATENCY_BUCKETS_S, scale=1000)  # sum in ms
        # The latest event time seen, as a counter (it only moves forward), so that event-time lag is
        # ``time() * 1000 - event_clock_ms`` in PromQL. Not a gauge: Flink reads a Python gauge by
        # calling into the embedded interpreter from the reporter's HTTP thread, and that crashed
        # the JVM (SIGSEGV in pemja's PyObject.invokeMethod) when a scrape met a running batch.
        self.event_clock = g.counter("event_clock_ms")
        self.clock_ms = 0
        # batches scored per model version: ``rate(...) > 0`` names the versions in service. A counter
        # per (model, version, alias), registered when a version is first served (hot swaps add them)
        self.group = g
        self.served: dict[tuple[str, str, str], Any] = {}

    def on_models(self, served: Sequence[tuple[str, str, str]]) -> None:
        """One batch scored by each ``(model, version, alias)`` in ``served``."""
        for key in served:
            c = self.served.get(key)
            if c is None:
                model, version, alias = key
                c = self.served[key] = (self.group.add_group("model", model).add_group("version", version)
                                        .add_group("alias", alias).counter("served_batches"))
            c.inc()

    def on_batch(self, res: Any, records: int, now_ms: int) -> None:
        self.batch.observe(records)
        for shape, n in res.shapes.items():
            self.events_in[shape].inc(n)
        if res.events:
            self.events.inc(res.events)
        if res.late:
            self.late.inc(res.late)
        for dl, *_ in res.dead_letters:
            self.dead[dl.reason].inc()
        for reason, n in res.skipped.items():
            self.skipped[reason].inc(n)
        if res.clock_ms > self.clock_ms:
            self.event_clock.inc(res.clock_ms - self.clock_ms)
            self.clock_ms = res.clock_ms
        self.on_alerts(res.alerts, now_ms)

    def on_alerts(self, alerts: Sequence[str], now_ms: int) -> None:
        for a in alerts:
            rec = json.loads(a)
            key = (rec.get("severity"), rec.get("status"))
            if key in self.alerts:
                self.alerts[key].inc()
            if rec.get("status") != "resolved":  # from the sample that raised or moved it
                t = _epoch_ms(rec.get("event_time"))
                if t is not None:
                    self.latency.observe(max(now_ms - t, 0) / 1000)


def _epoch_ms(iso: str | None) -> int | None:
    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000) if iso else None
    except ValueError:
        return None
