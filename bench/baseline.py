"""The alternative a user would otherwise write, for ``make bench`` to measure beside the job.

A plain kafka-python consumer loop: one river model per series, ``QuantileFilter(MinMaxScaler |
HalfSpaceTrees)`` as river's documentation composes them, fed the event's value. Past a warm-up
(:data:`WARMUP` samples that only teach the trees, then :data:`WARMUP_SCORED` that may not alert):
``score_one``, ``classify`` (the score at or above the series' running 99.5 % quantile of scores),
``learn_one``, and an alert JSON to a topic of its own when the score is classified anomalous.
Offsets are committed every ``--commit-every-s`` after the producer is flushed, so it is
at-least-once like the job in that mode. It reads the native event shape only and has no
validation, dead letters, forecasts, clustering, classification or dedup: the least a user would
write, which is what a ratio against it should be against.

Run as a process of its own by :mod:`bench.throughput` (its memory is measured apart) until TERM; on
exit it writes its own counts to ``--stats`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import pickle
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter_ns
from typing import Any

from udfs.parse import series_key
from udfs.records import BaselineAlertRecord

# chosen for a per-series model on a 2-core machine: river's defaults (height 8, window 250) take
# about 1.1 MB a series and score nothing before a series' 250th sample
HST = {"n_trees": 10, "height": 6, "window_size": 50}
QUANTILE = 0.995
# HalfSpaceTrees scores 0 until a series' first window is full; those samples only teach it, and the
# running quantile (river's P² estimate) gets WARMUP_SCORED scores before the series may alert:
# without that, most of a series' events alerted for a while after its first window
WARMUP = HST["window_size"]
WARMUP_SCORED = 25


def new_model(seed: int):
    from river import anomaly, compose, preprocessing

    # protect_anomaly_detector=False: with river's default (True) a series whose scores once passed
    # the quantile learns nothing more, the quantile stops moving and most of its events alert
    return anomaly.QuantileFilter(
        compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=seed, **HST)),  # type: ignore[arg-type]
        q=QUANTILE, protect_anomaly_detector=False)


def iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


class Baseline:
    """The loop's per-event work, apart from Kafka: score, classify, learn; the alert, if any."""

    def __init__(self) -> None:
        self.models: dict[str, Any] = {}
        self.seen: dict[str, int] = {}
        self.records = self.alerts = self.score_calls = 0
        self.score_ns = 0  # score_one + classify + learn_one

    def on_event(self, raw: bytes, now_ms: int) -> bytes | None:
        self.records += 1
        d = json.loads(raw)
        tags = d.get("tags") or {}
        key = series_key(d["service"], d["metric"], tuple(sorted(tags.items())))
        m = self.models.get(key)
        if m is None:
            m = self.models[key] = new_model(len(self.models))
        x = {"value": float(d["value"])}
        n = self.seen[key] = self.seen.get(key, 0) + 1
        t0 = perf_counter_ns()
        if n <= WARMUP:
            m.anomaly_detector.learn_one(x)
            anomalous = False
        else:
            score = m.score_one(x)
            anomalous = m.classify(score) and n > WARMUP + WARMUP_SCORED
            m.learn_one(x)
        self.score_ns += perf_counter_ns() - t0
        self.score_calls += 1
        if not anomalous:
            return None
        self.alerts += 1
        ts = int(d["timestamp"])
        return BaselineAlertRecord({"key": key, "service": d["service"], "metric": d["metric"], "tags": tags},
                                   event_time=iso(ts), emitted_at=iso(now_ms), value=x["value"],
                                   score=round(float(score), 6)).to_json().encode()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True, help="metrics topic to read")
    ap.add_argument("--alerts", required=True, help="topic to write alerts to")
    ap.add_argument("--group", required=True, help="consumer group")
    ap.add_argument("--commit-every-s", type=float, default=1.0, help="commit interval (default: %(default)s)")
    ap.add_argument("--stats", default=None, help="write the loop's own counts here (JSON) on exit")
    args = ap.parse_args(argv)

    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    from kafka import KafkaConsumer, KafkaProducer

    consumer = KafkaConsumer(args.topic, bootstrap_servers=args.bootstrap, group_id=args.group,
                             enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=500,
                             fetch_max_wait_ms=50)
    producer = KafkaProducer(bootstrap_servers=args.bootstrap, acks=1, linger_ms=0)
    loop = Baseline()
    last_commit = time.monotonic()
    busy_ns = 0
    pending = False  # records handled since the last commit
    while not stop:
        batches = consumer.poll(timeout_ms=100)
        t0 = perf_counter_ns()
        for recs in batches.values():
            for r in recs:
                out = loop.on_event(r.value, int(time.time() * 1000))
                if out is not None:
                    producer.send(args.alerts, out)
                pending = True
        busy_ns += perf_counter_ns() - t0
        if pending and time.monotonic() - last_commit >= args.commit_every_s:
            producer.flush()
            consumer.commit()
            last_commit = time.monotonic()
            pending = False
    producer.flush()
    consumer.commit()
    producer.close()
    consumer.close()
    if args.stats:
        status = Path("/proc/self/status").read_text()
        hwm = next((int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmHWM")), None)
        model_bytes = sum(len(pickle.dumps(m)) for m in loop.models.values())
        Path(args.stats).write_text(json.dumps({
            "records": loop.records, "alerts": loop.alerts, "series": len(loop.models), "model_bytes": model_bytes,
            "busy_ns": busy_ns, "model_calls": loop.score_calls, "model_ns": loop.score_ns,
            "peak_rss_kb": hwm, "model": {"kind": "river QuantileFilter(MinMaxScaler | HalfSpaceTrees)",
                                          "half_space_trees": HST, "q": QUANTILE}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
