"""``make bench``: throughput, latency and memory of the job, and of the plain alternative beside it.

Three targets are measured one after the other, each on a metrics topic of its own holding the
same load:

- the job with exactly-once sinks (``job.delivery: exactly_once``, the shipped default), its
  alerts read ``read_committed``;
- the job with at-least-once sinks, its alerts read ``read_uncommitted``;
- the baseline, :mod:`bench.baseline`: a kafka-python loop with one river HalfSpaceTrees per
  series.

For each: (1) **throughput**: a backlog of ``--events`` events over ``--series`` series (a fleet of
services, each with a few instances of six metrics, every series sampled once a minute of event
time, a few spikes injected) is in the topic before the target starts; the rate is the slope of
the target's committed consumer-group offsets between the first offset past every series'
warm-up and 95 % of the backlog (startup and warm-up excluded). Alerts/s out is the number of
alerts emitted (their ``emitted_at``) in that window over its length. (2) **latency**: once the
backlog is consumed, events are produced at ``--rate`` events/s for ``--duration`` s with event
time = wall-clock produce time, and ``--spikes`` anomalies injected at known times on distinct
series; a consumer of the alert topic notes when each alert becomes visible, and the latency of
a spike is that time minus the time its event was produced (matched by ``series.key`` and
``event_time``).

From the job's own metrics (:mod:`operators.stats`, read through the MiniCluster's REST API on a
free port): thread CPU time (and wall time) per record in each Python operator and CPU time per
call of each model, over the throughput window of the exactly-once job. State: the logic's own
encodings (``SeriesState``/``EntityState.to_bytes``) after replaying the backlog of a subset of
the services in-process, scaled to 1,000 series, and the job's last checkpoint size. Memory: peak
resident memory (VmHWM) of the job's processes (the Flink JVM, which runs the Python operators
embedded in thread mode, and the launching Python process), the JVM's heap from its metrics, and
the baseline's process.

Kafka and Redis must be up (``scripts/bench.sh``, behind ``make bench``, starts them when they are
not). A benchmark: it reports what it measured and fails only when the measurement itself is
broken (a target dies, never catches up, or no injected spike is matched).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from bench import baseline as bench_baseline
from bench.kit import (
    MeasurementError,
    PeakMemory,
    add_job_run,
    delete_topics,
    environment,
    fmt,
    group_pids,
    job_topics,
    parser,
    produce,
    start_run,
    write_job_config,
)
from common.config import ROOT, VigilConfig
from common.kafka_io import Follower, GroupProgress, create_topics, read_topic
from jobs.inprocess import InProcessJob
from jobs.launch import start_job, stop_job
from models.catalog import MODEL_NAMES
from models.context import connect
from models.pipeline import ENTITY_STATE, SERIES_STATE, ModelBundle
from training.simulate import METRICS, SERVICES
from udfs.parse import series_key

NAME = "bench"  # the run's topic prefix and folder: bench-<UTC time>
TAG = "[bench]"
STEP_MS = 60_000  # event-time spacing of a series' samples in the backlog
SPIKE_FACTOR = 7.0
NOISE = {"cpu_util": 0.04, "memory_util": 0.01, "latency_p99_ms": 0.06, "error_rate": 0.15,
         "requests_per_s": 0.03, "disk_util": 0.005}
OPERATORS = ("score-shard",)  # the job's one Python operator (operators.functions.ScoreShard)
TARGETS = ("job-exactly-once", "job-at-least-once", "baseline")
LATENCY_LOAD = 0.7  # the latency phases run at this share of the exactly-once job's measured maximum


def log(msg: str) -> None:
    print(f"{TAG} {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# The load


class Series(NamedTuple):
    key: str
    service: str
    instance: str
    metric: str
    base: float


class Fleet:
    """``n`` series: services ``svc-0000``, ... with ``instances`` instances of the six fleet metrics
    each (baselines from :data:`training.simulate.SERVICES`, in turn), ordered round-robin over
    services so that consecutive events come from different services."""

    def __init__(self, n: int, instances: int = 2, seed: int = 7) -> None:
        if n < 1 or instances < 1:
            raise ValueError(f"a fleet needs at least one series and one instance per service; got {n}, {instances}")
        rng = np.random.default_rng(seed)
        profiles = list(SERVICES.values())
        per = instances * len(METRICS)
        rows: list[tuple[int, int, Series]] = []
        for k in range(math.ceil(n / per)):
            svc = f"svc-{k:04d}"
            for j in range(instances):
                for m in METRICS:
                    if len(rows) < n:
                        base = float(profiles[k % len(profiles)]["base"][m]) * float(rng.normal(1.0, 0.04))
                        tags = {"instance": f"i-{j}"}
                        rows.append((j * len(METRICS) + METRICS.index(m), k,
                                     Series(series_key(svc, m, tuple(tags.items())), svc, f"i-{j}", m, base)))
        self.series = [s for _, _, s in sorted(rows, key=lambda r: (r[0], r[1]))]
        self.services = len({s.service for s in self.series})
        self.rng = np.random.default_rng(seed + 1)

    def __len__(self) -> int:
        return len(self.series)

    def value(self, i: int, spike: bool = False) -> float:
        s = self.series[i]
        v = s.base * (SPIKE_FACTOR if spike else 1.0 + NOISE[s.metric] * float(self.rng.standard_normal()))
        if s.metric.endswith("_util"):
            v = min(v, 100.0)
        return round(max(v, 0.0), 6)

    def spike_value(self, i: int) -> float:
        return self.value(i, spike=True)

    def payload(self, i: int, ts_ms: int, spike: bool = False) -> bytes:
        s = self.series[i]
        return json.dumps({"metric": s.metric, "value": self.value(i, spike), "timestamp": ts_ms,
                           "service": s.service, "tags": {"instance": s.instance}},
                          separators=(",", ":")).encode()

    def backlog(self, steps: int, end_ms: int, spikes: int, first_spike_step: int) -> tuple[list[bytes], int]:
        """``steps`` samples of every series, one a minute of event time up to ``end_ms``, with
        ``spikes`` spikes at random (series, step) from ``first_spike_step`` on; (payloads, spikes)."""
        n = len(self)
        cand = max(steps - first_spike_step, 0) * n
        chosen = set()
        if cand:
            chosen = {first_spike_step * n + int(x) for x in self.rng.choice(cand, size=min(spikes, cand),
                                                                            replace=False)}
        out = []
        for step in range(steps):
            ts = end_ms - (steps - 1 - step) * STEP_MS
            for i in range(n):
                out.append(self.payload(i, ts, spike=(step * n + i) in chosen))
        return out, len(chosen)


def spike_plan(fleet: Fleet, total: int, spikes: int) -> dict[int, int]:
    """Event index -> series index for ``spikes`` spikes spread evenly over the middle 80 % of a
    stream of ``total`` round-robin events: each on a series of its own, consecutive ones on
    different services."""
    n = len(fleet)
    plan: dict[int, int] = {}
    used: set[int] = set()
    prev_service = None
    spikes = min(spikes, n, total)
    for j in range(spikes):
        k = int(total * (0.1 + 0.8 * (j + 0.5) / spikes))
        for _ in range(2 * n):
            i = k % n
            if i not in used and (fleet.series[i].service != prev_service or fleet.services == 1) and k not in plan:
                break
            k += 1
        else:
            continue
        if k >= total:
            continue
        plan[k] = k % n
        used.add(k % n)
        prev_service = fleet.series[k % n].service
    return plan


# --------------------------------------------------------------------------------------------
# Targets


class StartFailed(MeasurementError):
    """A target died before it consumed anything (PyFlink's gateway JVM now and then fails to start on a
    loaded machine): it can simply be started again."""


@dataclass
class Target:
    """One thing measured: the job in a delivery mode, or the baseline."""

    name: str
    kind: str  # "job" | "baseline"
    metrics: str
    alerts: str
    group: str
    read_committed: bool
    config: Path | None = None
    rest_port: int | None = None
    topics: list[str] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rest:
    """The few reads of Flink's REST API the benchmark needs (a MiniCluster on loopback)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.jid: str | None = None
        self.metric_ids: dict[str, list[str]] = {}  # vertex id -> ids of its vigil.* metrics
        self.vertices: list[str] | None = None
        self.tm: str | None = None

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=3) as r:
            return json.loads(r.read())

    def job(self) -> str | None:
        if self.jid is None:
            try:
                jobs = [j for j in self.get("/jobs")["jobs"] if j["status"] == "RUNNING"]
            except OSError:
                return None
            self.jid = jobs[0]["id"] if jobs else None
        return self.jid

    def counters(self) -> dict[str, int]:
        """``<operator>.<counter>`` -> value, summed over subtasks, of every ``vigil.*`` metric."""
        jid = self.job()
        if jid is None:
            return {}
        out: dict[str, int] = {}
        if self.vertices is None:
            self.vertices = [v["id"] for v in self.get(f"/jobs/{jid}/")["vertices"]]
        for vid in self.vertices:
            ids = self.metric_ids.get(vid)
            if ids is None:
                ids = [m["id"] for m in self.get(f"/jobs/{jid}/vertices/{vid}/metrics") if ".vigil." in m["id"]]
                # an operator registers its metrics in open(): look again until it has
                if len(ids) < 3:
                    continue
                self.metric_ids[vid] = ids
            if not ids:
                continue
            # a few ids a request: Flink's REST server refuses a request line past 4,096 bytes
            vals = [m for k in range(0, len(ids), 20)
                    for m in self.get(f"/jobs/{jid}/vertices/{vid}/metrics?get=" + ",".join(ids[k:k + 20]))]
            for m in vals:
                name = m["id"].split(".vigil.", 1)[1]
                out[name] = out.get(name, 0) + int(float(m["value"]))
        if all(f"{op}.records" in out for op in OPERATORS):  # every operator found: stop looking elsewhere
            for vid in self.vertices:
                self.metric_ids.setdefault(vid, [])
        return out

    def heap(self) -> dict[str, int]:
        if self.tm is None:
            self.tm = self.get("/taskmanagers")["taskmanagers"][0]["id"]
        names = ("Status.JVM.Memory.Heap.Used", "Status.JVM.Memory.Heap.Committed", "Status.JVM.Memory.Heap.Max")
        vals = self.get(f"/taskmanagers/{self.tm}/metrics?get=" + ",".join(names))
        return {m["id"].rsplit(".", 1)[1].lower(): int(float(m["value"])) for m in vals}

    def checkpoint(self) -> dict[str, Any] | None:
        jid = self.job()
        if jid is None:
            return None
        c = self.get(f"/jobs/{jid}/checkpoints")
        latest = (c.get("latest") or {}).get("completed")
        if not latest:
            return None
        return {"id": latest.get("id"), "state_size": latest.get("state_size"),
                "checkpointed_size": latest.get("checkpointed_size"),
                "completed": (c.get("counts") or {}).get("completed")}


class AlertWatch(threading.Thread):
    """Reads an alert topic from its current end, noting the wall-clock time each record became visible."""

    def __init__(self, bootstrap: str, topic: str, read_committed: bool) -> None:
        super().__init__(daemon=True)
        self.seen: list[tuple[float, bytes]] = []
        self.stop_flag = threading.Event()
        # from the end as it is now: records from here on are the phase's
        self.follower = Follower(bootstrap, topic, start="latest", committed=read_committed, fetch_max_wait_ms=20)

    def run(self) -> None:
        with self.follower:
            while not self.stop_flag.is_set():
                recs = self.follower.poll(0.05)
                now = time.time()
                self.seen.extend((now, r.value) for r in recs)


class ResourceWatch(threading.Thread):
    """Samples while a target runs: peak memory of its processes and the JVM heap once a second,
    the job's ``vigil.*`` counters (REST API) twice a second."""

    def __init__(self, pgid: int, rest: Rest | None) -> None:
        super().__init__(daemon=True)
        self.pgid = pgid
        self.rest = rest
        self.mem = PeakMemory()
        self.heap_peak: dict[str, int] = {}
        self.counters: list[tuple[float, dict[str, int]]] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        tick = 0
        while not self.stop_flag.wait(0.5):
            tick += 1
            if tick % 2:
                self.mem.sample(group_pids(self.pgid) or [self.pgid])
            if self.rest is None:
                continue
            try:
                t0 = time.time()
                got = self.rest.counters()
                if got:
                    self.counters.append(((t0 + time.time()) / 2, got))
                if tick % 2:
                    for k, v in self.rest.heap().items():
                        self.heap_peak[k] = max(self.heap_peak.get(k, 0), v)
            except (OSError, KeyError, IndexError, ValueError):
                pass


def _ms(iso_time: str) -> int:
    return round(datetime.fromisoformat(iso_time).timestamp() * 1000)


def percentiles(xs: Sequence[float]) -> dict[str, float | None]:
    if not xs:
        return {"p50": None, "p95": None, "p99": None, "min": None, "max": None, "mean": None}
    a = np.asarray(xs, dtype=float)
    return {"p50": round(float(np.percentile(a, 50)), 1), "p95": round(float(np.percentile(a, 95)), 1),
            "p99": round(float(np.percentile(a, 99)), 1), "min": round(float(a.min()), 1),
            "max": round(float(a.max()), 1), "mean": round(float(a.mean()), 1)}


def steady_rate(samples: Sequence[tuple[float, int]], lo: int, hi: int, min_steps: int = 3) -> dict[str, Any] | None:
    """Events/s between the first sample at or past ``lo`` and the first sample of the last
    offset at or below ``hi`` (both the moments a new commit was first seen), or None when fewer
    than ``min_steps`` new offsets were seen between them (too coarse to be a rate)."""
    first = next((s for s in samples if s[1] >= lo), None)
    below = [s for s in samples if s[1] <= hi]
    if first is None or not below:
        return None
    top = below[-1][1]
    last = next(s for s in samples if s[1] == top)
    if last[0] <= first[0] or last[1] <= first[1]:
        return None
    if len({c for _, c in samples if first[1] < c <= last[1]}) < min_steps:
        return None
    return {"events_per_s": (last[1] - first[1]) / (last[0] - first[0]), "t0": first[0], "t1": last[0],
            "offset0": first[1], "offset1": last[1]}


# --------------------------------------------------------------------------------------------
# Running one target


class Runner:
    def __init__(self, args: argparse.Namespace, bootstrap: str, run_dir: Path) -> None:
        self.args = args
        self.bootstrap = bootstrap
        self.run_dir = run_dir
        self.commit_every_s = 1.0  # the baseline commits as often as the job checkpoints (set by main)
        self.backlog_n = 0

    def start(self, t: Target) -> subprocess.Popen:
        logf = open(self.run_dir / f"{t.name}.log", "w")
        if t.kind == "job":
            assert t.config is not None
            p = start_job(t.config, log=logf, extra_env={"JAVA_TOOL_OPTIONS": f"-Xmx{self.args.job_heap}"})
        else:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(x for x in (str(ROOT), env.get("PYTHONPATH", "")) if x)
            p = subprocess.Popen([sys.executable, "-m", "bench.baseline", "--bootstrap", self.bootstrap,
                                  "--topic", t.metrics, "--alerts", t.alerts, "--group", t.group,
                                  "--stats", str(self.run_dir / f"{t.name}.stats.json"),
                                  "--commit-every-s", str(self.commit_every_s)],
                                 cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        return p

    def stop(self, t: Target, p: subprocess.Popen) -> None:
        if t.kind == "job":
            stop_job(p)
            return
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def _check_alive(self, t: Target, p: subprocess.Popen) -> None:
        if p.poll() is not None:
            tail = (self.run_dir / f"{t.name}.log").read_text()[-3000:]
            raise MeasurementError(f"{t.name} exited with code {p.returncode} during the run; see "
                                   f"{self.run_dir / (t.name + '.log')}:\n{tail}")

    def run(self, t: Target, fleet: Fleet, backlog_n: int, window: tuple[int, int],
            rate: float | None) -> dict[str, Any]:
        """Throughput on the backlog, then latency at ``rate`` (None: 70% of the throughput measured)."""
        progress = GroupProgress(self.bootstrap, t.group, t.metrics)
        t_start = time.time()
        p = self.start(t)
        log(f"{t.name}: started (pid {p.pid}); log {self.run_dir / (t.name + '.log')}")
        samples: list[tuple[float, int]] = []
        res: dict[str, Any] = {"target": t.name}
        self.backlog_n = backlog_n
        watch = ResourceWatch(p.pid, Rest(t.rest_port) if t.rest_port else None)
        watch.start()
        try:
            next_note = time.time() + 15
            while True:
                now = time.time()
                c = progress.committed()
                samples.append((now, c))
                if c >= backlog_n:
                    break
                if p.poll() is not None and not any(x[1] for x in samples):
                    raise StartFailed(f"{t.name} exited with code {p.returncode} before it committed anything; "
                                      f"see {self.run_dir / (t.name + '.log')}")
                self._check_alive(t, p)
                if now - t_start > self.args.timeout:
                    raise MeasurementError(f"{t.name} consumed {c} of {backlog_n} backlog events in "
                                           f"{self.args.timeout:.0f} s")
                if now >= next_note:
                    log(f"{t.name}:   {now - t_start:.0f} s: {c:,}/{backlog_n:,} backlog events committed")
                    next_note += 15
                time.sleep(0.5)
            backlog_s = time.time() - t_start
            steady = steady_rate(samples, *window)
            basis = "steady-state window"
            if steady is None:  # a short backlog: the commits past the first one, warm-up included
                steady = steady_rate(samples, 1, backlog_n)
                basis = "every commit after the first (the steady-state window held fewer than two)"
            if steady is None and watch.counters:
                # checkpoints (so commits) are rare while the job is backpressured; its own record
                # counter, sampled twice a second, still says how fast it went
                counted = [(at, c.get("score-shard.records", 0)) for at, c in list(watch.counters)]
                steady = steady_rate(counted, *window, min_steps=2) or steady_rate(counted, 1, backlog_n, min_steps=2)
                basis = "the job's score-shard record counter (too few offset commits during the backlog)"
            # each committed offset with the time (s after the start) it was first seen: the record of the rate
            res["commits"] = [[round(at - t_start, 2), c] for i, (at, c) in enumerate(samples)
                              if c and (i == 0 or samples[i - 1][1] != c)]
            if steady is None:
                raise MeasurementError(
                    f"{t.name}: the backlog was consumed within two offset commits, so no rate can be read from "
                    f"them: raise --events")
            res["throughput"] = {"events_per_s": round(steady["events_per_s"], 1), "basis": basis,
                                 "window_events": steady["offset1"] - steady["offset0"],
                                 "window_s": round(steady["t1"] - steady["t0"], 2),
                                 "backlog_events": backlog_n, "backlog_s": round(backlog_s, 1),
                                 "first_commit_s": round(next(x for x in samples if x[1] > 0)[0] - t_start, 1),
                                 "offset_samples": len(samples)}
            log(f"{t.name}: throughput {steady['events_per_s']:,.0f} events/s (steady state, "
                f"{steady['offset1'] - steady['offset0']:,} events in {steady['t1'] - steady['t0']:.1f} s)")
            if watch.rest is not None:
                res["operators"], res["models"], res["counter_events_per_s"] = _timings(list(watch.counters), steady)
                try:
                    res["checkpoint"] = watch.rest.checkpoint()
                except (OSError, KeyError, ValueError):
                    res["checkpoint"] = None
            if rate is None:
                rate = max(math.floor(steady["events_per_s"] * LATENCY_LOAD / 10) * 10, 10)
            res["latency"] = self.latency(t, p, fleet, rate, progress)
        finally:
            watch.stop_flag.set()
            watch.join(15)
            self.stop(t, p)
            progress.close()
        res["memory"] = {"peak_rss_mib": watch.mem.mib(),
                         "jvm_heap_peak_mib": {k: round(v / 2**20, 1) for k, v in watch.heap_peak.items()} or None}
        if t.kind == "baseline":
            stats_path = self.run_dir / f"{t.name}.stats.json"
            res["baseline_stats"] = json.loads(stats_path.read_text()) if stats_path.exists() else None
        steady_alerts = self.alerts_in_window(t, steady["t0"], steady["t1"])
        res["throughput"]["alerts"] = steady_alerts
        res["throughput"]["alerts_per_s"] = round(steady_alerts / (steady["t1"] - steady["t0"]), 2)
        res["wall_s"] = round(time.time() - t_start, 1)
        return res

    def latency(self, t: Target, p: subprocess.Popen, fleet: Fleet, rate: float,
                progress: GroupProgress) -> dict[str, Any]:
        from kafka import KafkaProducer

        a = self.args
        total = max(int(rate * a.duration), 1)
        plan = spike_plan(fleet, total, a.spikes)
        watch = AlertWatch(self.bootstrap, t.alerts, t.read_committed)
        watch.start()
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks=1, linger_ms=0)
        sent: dict[tuple[str, int], float] = {}
        n = len(fleet)
        log(f"{t.name}: latency phase: {rate:g} events/s for {a.duration:g} s, {len(plan)} spikes")
        t0 = time.monotonic()
        k = 0
        next_watch = t0 + 1
        while k < total:
            now = time.monotonic()
            due = min(int((now - t0) * rate) + 1, total)
            while k < due:
                i = k % n
                spike = k in plan
                ts = int(time.time() * 1000)
                at = time.time()
                producer.send(t.metrics, fleet.payload(i, ts, spike))
                if spike:
                    sent[(fleet.series[i].key, ts)] = at
                k += 1
            if now >= next_watch:
                self._check_alive(t, p)
                next_watch += 1
            time.sleep(0.002)
        producer.flush()
        produce_s = time.monotonic() - t0
        end = time.time() + a.drain

        def matched() -> dict[tuple[str, int], float]:
            got: dict[tuple[str, int], float] = {}
            for seen_at, raw in list(watch.seen):
                try:
                    al = json.loads(raw)
                    key = (al["series"]["key"], _ms(al["event_time"]))
                except (ValueError, KeyError, TypeError):
                    continue
                if key in sent and key not in got:
                    got[key] = seen_at
            return got

        while time.time() < end and len(matched()) < len(sent):
            time.sleep(0.25)
        watch.stop_flag.set()
        watch.join(10)
        producer.close()
        got = matched()
        lat = [(got[k] - sent[k]) * 1000 for k in got]
        by_time = [(got[k] - sent[k]) * 1000 for k in sorted(got, key=sent.__getitem__)]
        third = max(len(by_time) // 3, 1)
        committed = progress.committed()
        backlog_n = self.backlog_n
        return {"rate": rate, "duration_s": a.duration, "events": total, "produce_s": round(produce_s, 2),
                "spikes": len(sent), "matched": len(got), "other_alerts": len(watch.seen) - len(got),
                "latency_ms": percentiles(lat), "samples_ms": [round(x, 1) for x in sorted(lat)],
                "lag_at_end": backlog_n + total - committed,
                # a target that keeps up has about the same latency at the end of the phase as at its start
                "median_ms_first_third": round(float(np.median(by_time[:third])), 1) if by_time else None,
                "median_ms_last_third": round(float(np.median(by_time[-third:])), 1) if by_time else None,
                "isolation_level": "read_committed" if t.read_committed
                else "read_uncommitted"}

    def alerts_in_window(self, t: Target, t0: float, t1: float) -> int:
        """Alerts the target emitted (their ``emitted_at``) between ``t0`` and ``t1``."""
        lo, hi = t0 * 1000, t1 * 1000
        n = 0
        for r in read_topic(self.bootstrap, t.alerts, committed=t.read_committed, must_exist=True, idle_s=10,
                            timeout_s=math.inf).records:
            try:
                at = _ms(json.loads(r.value)["emitted_at"])
            except (ValueError, KeyError):
                continue
            n += lo <= at <= hi
        return n


def _timings(samples: list[tuple[float, dict[str, int]]], steady: dict[str, Any]):
    """Per-operator time per record and per-model time per call, between the first and the last
    counter sample inside the throughput window (the nearest ones when fewer than two are inside)."""
    inside = [x for x in samples if steady["t0"] <= x[0] <= steady["t1"]]
    if len(inside) >= 2:
        a, b = inside[0], inside[-1]
    elif len(samples) >= 2:
        a = min(samples, key=lambda x: abs(x[0] - steady["t0"]))
        b = min(samples, key=lambda x: abs(x[0] - steady["t1"]))
        if b[0] <= a[0]:
            a, b = samples[0], samples[-1]
    else:
        return None, None, None
    dt = b[0] - a[0]

    def d(k: str) -> int:
        return b[1].get(k, 0) - a[1].get(k, 0)

    ops: dict[str, dict[str, Any]] = {}
    models: dict[str, dict[str, Any]] = {}
    for op in OPERATORS:
        rec = d(f"{op}.records")
        batches = d(f"{op}.batches")
        ops[op] = {"records": rec, "batches": batches,
                   "mean_batch": round(rec / batches, 1) if batches else None,
                   "us_per_record": round(d(f"{op}.cpu_ns") / rec / 1000, 1) if rec else None,
                   "wall_us_per_record": round(d(f"{op}.busy_ns") / rec / 1000, 1) if rec else None,
                   "cpu_share": round(d(f"{op}.cpu_ns") / 1e9 / dt, 3)}
    for m in MODEL_NAMES:
        where = next((o for o in OPERATORS if d(f"{o}.{m}_calls")), None)
        calls = d(f"{where}.{m}_calls") if where else 0
        models[m] = {"calls": calls, "operator": where,
                     "us_per_call": round(d(f"{where}.{m}_cpu_ns") / calls / 1000, 1) if calls else None,
                     "calls_per_record": round(calls / ops[where]["records"], 4)
                     if where and ops[where]["records"] else None}
    return ops, models, round(d("score-shard.records") / dt, 1)


# --------------------------------------------------------------------------------------------
# State bytes, from the logic's own encodings


def state_bytes(cfg: VigilConfig, fleet: Fleet, payloads: Sequence[bytes], max_series: int) -> dict[str, Any]:
    """Replay the backlog of the first services (at least ``max_series`` series, or all) in-process
    and measure the keyed state the logic keeps, per 1,000 series."""
    services = []
    count = 0
    for s in sorted({s.service for s in fleet.series}):
        if count >= max_series:
            break
        services.append(s)
        count += sum(1 for x in fleet.series if x.service == s)
    keep = set(services)
    mine = [p for p in payloads if json.loads(p)["service"] in keep]
    try:
        client = connect(cfg.redis.url)
    except Exception:  # noqa: BLE001 - as the job: no Redis, the store's latest versions
        client = None
    job = InProcessJob(cfg, ModelBundle.load(cfg.registry.path(), client))
    t0 = time.perf_counter()
    for i in range(0, len(mine), 256):
        job.feed_batch(mine[i:i + 256], int(time.time() * 1000))
        for out in (job.alerts, job.scored, job.forecasts, job.drift, job.shadow):
            out.clear()  # only the state is measured
    secs = time.perf_counter() - t0
    ser = sum(len(v) for v in job.series_state.values())
    ent = sum(len(v) for v in job.entity_state.values())
    ns = len(job.series_state)
    return {"series": ns, "services": len(job.entity_state), "events_replayed": len(mine),
            "series_state_name": SERIES_STATE, "entity_state_name": ENTITY_STATE,
            "series_state_bytes": ser, "entity_state_bytes": ent,
            "series_state_bytes_per_1000_series": round(ser / ns * 1000) if ns else None,
            "entity_state_bytes_per_1000_series": round(ent / ns * 1000) if ns else None,
            "bytes_per_1000_series": round((ser + ent) / ns * 1000) if ns else None,
            "inprocess_events_per_s": round(len(mine) / secs, 1) if secs else None}


# --------------------------------------------------------------------------------------------
# The report


def build_report(args: argparse.Namespace, fleet: Fleet, results: dict[str, dict[str, Any]],
                 state: dict[str, Any], backlog: dict[str, Any], cfg: VigilConfig, versions: dict[str, str],
                 load: tuple[tuple[float, ...], tuple[float, ...]], t_total: float) -> dict[str, Any]:
    eo, alo, base = results["job-exactly-once"], results["job-at-least-once"], results["baseline"]
    env = environment()
    git = args.git_state  # as the run started: what was measured
    rate = eo["throughput"]["events_per_s"]
    brate = base["throughput"]["events_per_s"]
    bstats = base.get("baseline_stats") or {}
    mem_job = eo["memory"]["peak_rss_mib"]
    rep: dict[str, Any] = {
        "events_per_s": rate,
        "alerts_per_s": eo["throughput"]["alerts_per_s"],
        "latency_ms": _lat(alo),
        "latency_ms_exactly_once": _lat(eo),
        "baseline_events_per_s": brate,
        "baseline_alerts_per_s": base["throughput"]["alerts_per_s"],
        "baseline_latency_ms": _lat(base),
        "ratio_vs_baseline": round(rate / brate, 3) if brate else None,
        "events_per_s_at_least_once": alo["throughput"]["events_per_s"],
        "ratio_vs_baseline_at_least_once": round(alo["throughput"]["events_per_s"] / brate, 3) if brate else None,
        "operators_us_per_record": {op: v["us_per_record"] for op, v in (eo.get("operators") or {}).items()},
        "models_us_per_call": {m: v["us_per_call"] for m, v in (eo.get("models") or {}).items()},
        "state_bytes_per_1000_series": state["bytes_per_1000_series"],
        "peak_memory_mib": {
            "job_jvm_process_rss": mem_job.get("java"),
            "job_launcher_python_rss": mem_job.get("python -m jobs.vigil_job"),
            "job_jvm_heap_used": (eo["memory"]["jvm_heap_peak_mib"] or {}).get("used"),
            "job_jvm_heap_max": (eo["memory"]["jvm_heap_peak_mib"] or {}).get("max"),
            "baseline_process_rss": base["memory"]["peak_rss_mib"].get("python -m bench.baseline")
            or (round(bstats["peak_rss_kb"] / 1024, 1) if bstats.get("peak_rss_kb") else None),
        },
        "cores": env["cores"],
        "versions": {"python": env["python"], "flink": env["libraries"].get("apache-flink"), "kafka": env["kafka"],
                     "onnxruntime": env["libraries"].get("onnxruntime"), "river": env["libraries"].get("river"),
                     "kafka-python": env["libraries"].get("kafka-python"), "java": env["java"]},
        "commit": git["commit"],
        "parameters": {"series": len(fleet), "services": fleet.services, "instances_per_service": args.instances,
                       "backlog_events": backlog["events"], "backlog_spikes": backlog["spikes"],
                       "backlog_steps_per_series": backlog["steps"], "step_s": STEP_MS // 1000,
                       "rate": eo["latency"]["rate"], "rate_chosen": "given" if args.rate != "auto"
                       else "70% of the exactly-once job's measured throughput",
                       "duration_s": args.duration, "spikes": args.spikes, "drain_s": args.drain,
                       "job_heap": args.job_heap, "steady_window_offsets": backlog["window"],
                       "checkpoint_interval_ms": cfg.job.checkpoint_interval_ms,
                       "dedup_window_s": cfg.alerts.dedup_window_s, "warmup": cfg.scoring.warmup,
                       "baseline_model": {"kind": "river QuantileFilter(MinMaxScaler | HalfSpaceTrees)",
                                          "half_space_trees": bench_baseline.HST, "q": bench_baseline.QUANTILE,
                                          "protect_anomaly_detector": False,
                                          "warmup": [bench_baseline.WARMUP, bench_baseline.WARMUP_SCORED]}},
        "state": {**state, "checkpoint": eo.get("checkpoint"),
                  "checkpoint_bytes_per_1000_series": round(eo["checkpoint"]["state_size"] / len(fleet) * 1000)
                  if eo.get("checkpoint") and eo["checkpoint"].get("state_size") else None,
                  "baseline_model_bytes_per_1000_series": round(bstats["model_bytes"] / bstats["series"] * 1000)
                  if bstats.get("model_bytes") and bstats.get("series") else None},
        "targets": results,
        "models": versions,
        "environment": env,
        "git": git,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": {"total_s": round(t_total, 1), "load_average_start": load[0], "load_average_end": load[1]},
        "method": METHOD,
    }
    return rep


def _lat(r: dict[str, Any]) -> dict[str, Any]:
    L = r["latency"]
    return {**{k: L["latency_ms"][k] for k in ("p50", "p95", "p99")}, "matched": L["matched"], "spikes": L["spikes"]}


METHOD = [
    "Load: a fleet of services (`svc-0000`, ...) with a few instances of six metrics each; every series a native "
    "JSON event (`metric`, `value`, `timestamp`, `service`, `tags.instance`), values around per-service baselines "
    "with per-metric noise; a spike is 7x the series' baseline (util metrics capped at 100).",
    "Each target has a metrics topic of its own (one partition) holding the same backlog before it starts: "
    "every series sampled once a minute of event time, step after step, a few spikes among it.",
    "Throughput: the slope of the target's committed consumer-group offsets (sampled every 0.5 s) from the first "
    "commit past every series' warm-up (the job's `scoring.warmup` samples, the baseline's 75, whichever is "
    "longer; at least 10 % of the backlog) to the last commit at or below 95 % of it. The "
    "job commits offsets when a checkpoint completes, the baseline as often (`job.checkpoint_interval_ms`) after "
    "flushing its producer: both count events durably processed. When fewer than three new commits fall in the "
    "window (a short backlog, or a job whose checkpoints are slow while it is backpressured), the job's own "
    "record counter, sampled twice a second, is used over the same window instead (`throughput.basis` says "
    "which). Alerts/s out: alerts whose `emitted_at` falls in that window.",
    "Latency: after the backlog, events at a fixed rate with event time = wall-clock produce time, spikes at known "
    "times on distinct series (consecutive ones on different services); a consumer of the alert topic (fetch wait "
    "20 ms) notes when each alert becomes visible; latency = visible time - produce time of the spike's event, "
    "matched by `series.key` and `event_time`. The job with at-least-once sinks is read `read_uncommitted`; with "
    "exactly-once sinks `read_committed`, so its alerts become visible when the checkpoint after them completes.",
    "The job runs with `alerts.dedup_window_s: 1`, so that every candidate becomes an alert of its own and each "
    "spike can be matched (the shipped 1,800 s would fold a service's candidates into one alert); alerts/s out is "
    "therefore the candidate rate, an upper bound of the alert traffic the shipped config gives.",
    "Time per record and per model call: `operators.stats` counters (records, wall-clock and thread-CPU "
    "nanoseconds of each Python operator's `process_element`; calls and thread-CPU nanoseconds of each model's "
    "scoring methods), read through the MiniCluster's REST API at the two ends of the throughput window of the "
    "exactly-once job.",
    "State: the backlog of the first services replayed through `jobs.inprocess.InProcessJob` (the operators' logic "
    f"without Flink); the sizes of the `{SERIES_STATE}` and `{ENTITY_STATE}` encodings the operators store, per "
    "1,000 series (entity state is per service, so it depends on series per service). Beside it, the job's last "
    "completed checkpoint (all state, Kafka source and sink state included) and the baseline's river models "
    "(pickled) per 1,000 series.",
    "Memory: peak resident set (VmHWM from /proc) of each process, sampled about once a second. In thread mode "
    "the Python operators run embedded in the Flink JVM, so the `java` figure holds the JVM and the Python "
    "interpreter with its ONNX sessions; its heap is bounded by `-Xmx` (`--job-heap`) and its peak use read from "
    "the JVM's metrics. The launching Python process (`python -m jobs.vigil_job`) is shown apart.",
    "The baseline is `bench.baseline`: a kafka-python consumer loop, one river "
    "`QuantileFilter(MinMaxScaler | HalfSpaceTrees(n_trees=10, height=6, window_size=50), q=0.995)` per series "
    "on the event's value (no alert before a series' 76th sample: 50 that only teach the trees, 25 scored), "
    "score then learn, an alert "
    "JSON per event the filter classifies anomalous; at-least-once (commits after flushing), so its latency is "
    "read `read_uncommitted`. It reads the native shape only and does nothing else the job does.",
    "Targets run one after the other on the same machine (2 cores shared with whatever else runs there; see the "
    "load averages). A benchmark, not a test: nothing fails because a number is slow.",
]


def _int(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def render_markdown(rep: dict[str, Any]) -> str:
    env, git, prm, st = rep["environment"], rep["git"], rep["parameters"], rep["state"]
    t = rep["targets"]
    dirty = ", ".join(git["dirty_files"]) if git["dirty_files"] else "none"
    v = rep["versions"]
    lines = [
        "# Throughput, latency and memory (`make bench`)",
        "",
        f"Measured {rep['measured_at']} on commit `{rep['commit']}` (uncommitted changes to tracked files: {dirty}).",
        f"Machine: {env['cores']} cores ({env['cores_usable']} usable), {env['cpu']}; 1-minute load average "
        f"{rep['run']['load_average_start'][0]:.1f} at the start, {rep['run']['load_average_end'][0]:.1f} at the end.",
        f"Versions: Python {v['python']}, Flink (PyFlink) {v['flink']}, Kafka {v['kafka']}, onnxruntime "
        f"{v['onnxruntime']}, river {v['river']}, kafka-python {v['kafka-python']}; {v['java']}.",
        "Models: " + ", ".join(f"{k} `{x}`" for k, x in rep["models"].items()) + ".",
        "",
        f"Load: {prm['series']:,} series ({prm['services']} services x {prm['instances_per_service']} instances x "
        f"6 metrics); backlog {prm['backlog_events']:,} events ({prm['backlog_steps_per_series']} samples a series, "
        f"{prm['backlog_spikes']} spikes); latency phases at {prm['rate']:g} events/s ({prm['rate_chosen']}) for "
        f"{prm['duration_s']:g} s with {prm['spikes']} spikes each.",
        "",
        "## Summary",
        "",
        "| | job, exactly-once | job, at-least-once | baseline (kafka-python + river HST) |",
        "|---|---|---|---|",
    ]
    eo, alo, b = t["job-exactly-once"], t["job-at-least-once"], t["baseline"]

    def row(label: str, f) -> str:
        return f"| {label} | " + " | ".join(f(x) for x in (eo, alo, b)) + " |"

    def lat(x, k):
        return fmt(x["latency"]["latency_ms"][k], 0)

    lines += [
        row("throughput, events/s", lambda x: f"**{x['throughput']['events_per_s']:,.0f}**"),
        row("alerts/s out (throughput phase)", lambda x: f"{x['throughput']['alerts_per_s']:g}"),
        row("latency p50, ms", lambda x: lat(x, "p50")),
        row("latency p95, ms", lambda x: lat(x, "p95")),
        row("latency p99, ms", lambda x: lat(x, "p99")),
        row("spikes matched", lambda x: f"{x['latency']['matched']}/{x['latency']['spikes']}"),
        row("alerts read as", lambda x: x["latency"]["isolation_level"]),
        row("median latency, first / last third of the spikes, ms",
            lambda x: f"{fmt(x['latency']['median_ms_first_third'], 0)} / "
                      f"{fmt(x['latency']['median_ms_last_third'], 0)}"),
        row("events not yet committed when the latency phase ended", lambda x: f"{x['latency']['lag_at_end']:,}"),
        row("peak RSS, MiB", lambda x: ", ".join(f"{k} {m:,.0f}" for k, m in x["memory"]["peak_rss_mib"].items()
                                                 if not k.startswith("python -c"))),  # pemja's helper
        "",
        "A target that keeps up with the latency phase's rate has about the same latency in the last third of "
        "the spikes as in the first; one whose latency grows through the phase, with events still uncommitted at "
        "its end (beyond a commit interval's worth), fell behind, and its latency includes that queue.",
        "",
        f"**Ratio vs baseline** (events/s, exactly-once job / baseline): **{fmt(rep['ratio_vs_baseline'], 2)}**; "
        f"at-least-once job / baseline: {fmt(rep['ratio_vs_baseline_at_least_once'], 2)}.",
        "",
        f"JVM heap of the exactly-once job: peak used {fmt(rep['peak_memory_mib']['job_jvm_heap_used'], 0)} MiB of "
        f"{fmt(rep['peak_memory_mib']['job_jvm_heap_max'], 0)} MiB (`-Xmx{prm['job_heap']}`).",
        "",
        "## Where the job's time goes (exactly-once job, throughput window)",
        "",
        "| operator | records | CPU µs per record | wall µs per record | CPU share of one core |",
        "|---|---|---|---|---|",
    ]
    for op, x in (eo.get("operators") or {}).items():
        lines.append(f"| {op} | {x['records']:,} | {fmt(x['us_per_record'], 1)} | {fmt(x['wall_us_per_record'], 1)} "
                     f"| {x['cpu_share']:.0%} |")
    lines += ["", "| model | calls | CPU µs per call | calls per record of its operator | called from |",
              "|---|---|---|---|---|"]
    for m, x in (eo.get("models") or {}).items():
        lines.append(f"| {m} | {x['calls']:,} | {fmt(x['us_per_call'], 1)} | {fmt(x['calls_per_record'], 3)} "
                     f"| {x['operator'] or '-'} |")
    lines += ["", "CPU time is the thread's own (`thread_time_ns`); wall time also holds the waits for the one "
              "interpreter's GIL that the Python operators share in thread mode."]
    bs = b.get("baseline_stats") or {}
    if bs.get("model_calls"):
        lines += ["", f"Baseline: {bs['model_ns'] / bs['model_calls'] / 1000:.1f} µs per river call "
                  "(score_one + classify + learn_one) over the whole run."]
    cp = st.get("checkpoint") or {}
    lines += [
        "",
        f"Events/s from the job's own record counter over the same window: {fmt(eo.get('counter_events_per_s'), 0)}.",
        "",
        "## State",
        "",
        f"Keyed state the logic stores, per 1,000 series: **{st['bytes_per_1000_series']:,} bytes** "
        f"(`{st.get('series_state_name', SERIES_STATE)}` {st['series_state_bytes_per_1000_series']:,}, "
        f"`{st.get('entity_state_name', ENTITY_STATE)}` "
        f"{st['entity_state_bytes_per_1000_series']:,}), from {st['series']} series of {st['services']} services "
        f"replayed in-process ({st['events_replayed']:,} events at {_int(st['inprocess_events_per_s'])} events/s "
        "in-process, no Kafka, no Flink).",
        f"The job's last checkpoint: {cp.get('state_size', 'n/a'):,} bytes "
        f"({_int(st.get('checkpoint_bytes_per_1000_series'))} per 1,000 series, Kafka source and sink state "
        "included)." if cp.get("state_size") is not None else "The job's checkpoint size could not be read.",
        f"The baseline's river models, pickled: {_int(st.get('baseline_model_bytes_per_1000_series'))} bytes per "
        "1,000 series.",
        "",
        "## How it was measured",
        "",
    ]
    lines += [f"- {m}" for m in rep["method"]]
    lines += ["", f"Run time {rep['run']['total_s']:.0f} s. Figures from one run on a shared machine: re-measure "
              "before comparing runs."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = parser("bench.throughput", __doc__)
    ap.add_argument("--series", type=int, default=500, help="number of series (default: %(default)s)")
    ap.add_argument("--instances", type=int, default=2, help="instances per service (default: %(default)s)")
    ap.add_argument("--events", type=int, default=400_000,
                    help="backlog size for the throughput phase, rounded up to whole steps (default: %(default)s)")
    ap.add_argument("--backlog-spikes", type=int, default=20, help="spikes in the backlog (default: %(default)s)")
    ap.add_argument("--rate", default="auto",
                    help="events/s of the latency phases (default: 70%% of the exactly-once job's throughput)")
    ap.add_argument("--duration", type=float, default=30, help="seconds of each latency phase (default: %(default)s)")
    ap.add_argument("--spikes", type=int, default=40, help="spikes in each latency phase (default: %(default)s)")
    ap.add_argument("--drain", type=float, default=15,
                    help="seconds to wait for the last alerts after a latency phase (default: %(default)s)")
    ap.add_argument("--state-series", type=int, default=120,
                    help="series whose backlog is replayed in-process to measure state (default: %(default)s)")
    ap.add_argument("--checkpoint-interval-ms", type=int, default=None,
                    help="the job's checkpoint interval, and the baseline's commit interval (default: the config's)")
    ap.add_argument("--job-heap", default="768m", help="-Xmx of the job's JVM (default: %(default)s)")
    add_job_run(ap, NAME, run_dir="configs and logs", timeout=900,
                timeout_help="give up on a target's backlog after this many s")
    ap.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS,
                    help="measure only these (a partial run writes no report; for looking into one target)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rate != "auto" and float(args.rate) <= 0:
        raise SystemExit(f"--rate must be positive or 'auto'; got {args.rate}")
    run = start_run(args, NAME)
    t_start, load_start, prefix, run_dir, out = run.started, run.load_start, run.prefix, run.run_dir, run.out
    args.git_state = run.git  # as the run started: what was measured

    fleet = Fleet(args.series, args.instances)
    targets: list[Target] = []
    cfgs: dict[str, VigilConfig] = {}
    ckpt = {"checkpoint_interval_ms": args.checkpoint_interval_ms} if args.checkpoint_interval_ms else {}
    for name, short, delivery in (("job-exactly-once", "eo", "exactly_once"),
                                  ("job-at-least-once", "alo", "at_least_once")):
        port = free_port()
        path = run_dir / f"{name}.yaml"
        cfg = write_job_config(path, f"{prefix}.{short}", name=f"vigil-bench-{short}", base=Path(args.config),
                               bootstrap=args.bootstrap, redis_url=args.redis_url, store=args.store, scores=False,
                               overrides={"job": {"delivery": delivery, **ckpt, "flink_options": {
                                   "rest.port": port, "rest.address": "127.0.0.1", "rest.bind-address": "127.0.0.1",
                                   # the REST API's metric values are otherwise 10 s old
                                   "metrics.fetcher.update-interval": "500 ms"}},
                                   "alerts": {"dedup_window_s": 1}})
        cfgs[name] = cfg
        targets.append(Target(name, "job", cfg.kafka.topics.metrics, cfg.kafka.topics.alerts, cfg.kafka.group_id,
                              delivery == "exactly_once", path, port, job_topics(cfg)))
    cfg = cfgs["job-exactly-once"]
    boot = cfg.kafka.bootstrap_servers
    b = f"{prefix}.base"
    targets.append(Target("baseline", "baseline", f"{b}.metrics", f"{b}.alerts", b, False,
                          topics=[f"{b}.metrics", f"{b}.alerts"]))

    warm = max(cfg.scoring.warmup, bench_baseline.WARMUP + bench_baseline.WARMUP_SCORED) + 1
    steps = max(math.ceil(args.events / len(fleet)), warm + 5)
    payloads, n_spikes = fleet.backlog(steps, int(time.time() * 1000) - STEP_MS, args.backlog_spikes, warm)
    n = len(payloads)
    window = (min(max(warm * len(fleet), n // 10), n // 2), int(n * 0.95))
    log(f"{len(fleet):,} series over {fleet.services} services; backlog {n:,} events ({steps} a series, "
        f"{n_spikes} spikes); steady-state window offsets {window[0]:,}..{window[1]:,}; topics {prefix}.*; "
        f"run folder {run_dir}")

    results: dict[str, dict[str, Any]] = {}
    runner = Runner(args, boot, run_dir)
    runner.commit_every_s = cfg.job.checkpoint_interval_ms / 1000
    rate = None if args.rate == "auto" else float(args.rate)
    chosen = [t for t in targets if t.name in args.targets]
    try:
        for t in chosen:
            # a job's model-updates topic is the job's to create (compacted)
            job_made = cfgs[t.name].kafka.topics.model_updates if t.kind == "job" else None
            create_topics(boot, [x for x in t.topics if x != job_made])
            t0 = time.time()
            produce(boot, t.metrics, payloads)
            log(f"{t.name}: backlog of {n:,} events produced in {time.time() - t0:.1f} s")
            try:
                results[t.name] = runner.run(t, fleet, n, window, rate)
            except StartFailed as e:
                log(f"{e}; starting it again")
                results[t.name] = runner.run(t, fleet, n, window, rate)
                results[t.name]["attempts"] = 2
            (run_dir / f"{t.name}.result.json").write_text(json.dumps(results[t.name], indent=1) + "\n")
            rate = results[t.name]["latency"]["rate"]
            L = results[t.name]["latency"]
            log(f"{t.name}: latency p50/p95/p99 {L['latency_ms']['p50']}/{L['latency_ms']['p95']}/"
                f"{L['latency_ms']['p99']} ms ({L['matched']}/{L['spikes']} spikes matched)")
    finally:
        if not args.keep_topics:
            err = delete_topics(boot, [x for t in targets for x in t.topics])
            if err:
                print(f"{TAG} could not delete the run's topics: {err}", file=sys.stderr)

    if len(chosen) < len(targets):
        log(f"only {[t.name for t in chosen]} measured: no report; their results are in {run_dir}")
        return 0
    unmatched = [t for t, r in results.items() if r["latency"]["matched"] == 0]
    if unmatched:
        raise MeasurementError(f"no injected spike was matched to an alert for {unmatched}: the latency of "
                               "those targets was not measured; see the logs in " + str(run_dir))

    state = state_bytes(cfg, fleet, payloads, args.state_series)
    bstats_path = run_dir / "baseline.stats.json"
    try:
        client = connect(cfg.redis.url)
    except Exception:  # noqa: BLE001
        client = None
    versions = ModelBundle.load(cfg.registry.path(), client).versions()
    if bstats_path.exists():
        results["baseline"]["baseline_stats"] = json.loads(bstats_path.read_text())
    rep = build_report(args, fleet, results, state,
                       {"events": n, "spikes": n_spikes, "steps": steps, "window": list(window)},
                       cfg, versions, (load_start, os.getloadavg()), time.time() - t_start)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(rep, indent=1) + "\n")
    (out / "bench.md").write_text(render_markdown(rep))
    lat, lat_eo, blat = rep["latency_ms"], rep["latency_ms_exactly_once"], rep["baseline_latency_ms"]
    log(f"job: {rep['events_per_s']:,.0f} events/s (exactly-once), {rep['events_per_s_at_least_once']:,.0f} "
        f"(at-least-once); latency p50/p95/p99 {lat['p50']}/{lat['p95']}/{lat['p99']} ms at-least-once, "
        f"{lat_eo['p50']}/{lat_eo['p95']}/{lat_eo['p99']} ms exactly-once")
    log(f"baseline: {rep['baseline_events_per_s']:,.0f} events/s; latency p50/p95/p99 {blat['p50']}/{blat['p95']}/"
        f"{blat['p99']} ms; ratio job/baseline {fmt(rep['ratio_vs_baseline'], 2)}")
    log(f"wrote {out / 'bench.json'} and {out / 'bench.md'} in {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
