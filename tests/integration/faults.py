"""The harness of the fault tests: a labelled stream produced under load while something is killed, the
uninterrupted run to compare with (the in-process twin, equal to the job record for record), and the
figures each test records for ``reports/faults.md`` (``make faults`` writes it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kafka import KafkaProducer

from common.config import VigilConfig
from common.kafka_io import Follower
from jobs.inprocess import InProcessJob
from models.pipeline import ModelBundle
from tests.integration.kafka_helpers import read_all
from training.simulate import SERVICES, Incident, generate

ROOT = Path(__file__).resolve().parents[2]
START = 1_780_000_000_000 - (1_780_000_000_000 % 3_600_000)
CTX = {k: {f: v[f] for f in ("owner", "criticality", "revenue_per_min", "users", "description")}
       for k, v in SERVICES.items()}
RESULTS: list[FaultResult] = []  # what the fault tests measured, in the order they ran


@dataclass
class FaultResult:
    name: str
    fault: str  # what was done to which part
    records: int  # metric records produced
    expected_alerts: int  # alert records of the uninterrupted run
    expected_forecasts: int
    recovery_s: float | None  # from the fault (or the part's return) to the job's next committed output
    lost: int  # alert and forecast records of the uninterrupted run missing from the output
    duplicated: int  # records seen more than once
    changed: int  # records whose content differs (alerts: apart from emitted_at)
    notes: dict = field(default_factory=dict)


def stream(seed: int = 21) -> list[bytes]:
    """About 3 hours of a 3-instance fleet with two incidents: alerts, escalations and forecasts."""
    incidents = [
        Incident("f-spike", "spike", "search", "i-1", ("latency_p99_ms",), START + 80 * 60_000,
                 START + 84 * 60_000, "latency"),
        Incident("f-errors", "spike", "playback", "i-0", ("error_rate",), START + 140 * 60_000,
                 START + 146 * 60_000, "errors"),
    ]
    scen = generate(seed=seed, hours=3.0, start_ms=START, instances=3, incidents=incidents, business_metric=False)
    return [json.dumps(e).encode() for e in scen.events]


def reference(cfg_path: Path, store: Path, payloads: list[bytes]) -> InProcessJob:
    """The uninterrupted run of the same input, swept at its end (as the job's timer does)."""
    job = InProcessJob(VigilConfig.load(cfg_path), ModelBundle.load(store), context=CTX.get).run(payloads, START)
    job.sweep()
    return job


def compare(ref: InProcessJob, alerts: list[dict], forecasts: list[dict]) -> tuple[int, int, int]:
    """(lost, duplicated, changed) of the job's alert and forecast records against the uninterrupted run."""
    def alert_key(a: dict) -> tuple:
        return a["alert_id"], a["revision"]

    def strip(a: dict) -> dict:
        return {k: v for k, v in a.items() if k != "emitted_at"}

    lost = dup = changed = 0
    for want_raw, got, key, canon in (
        (ref.alerts, alerts, alert_key, strip),
        (ref.forecasts, forecasts, lambda f: (f["series"], f["ts_ms"] if "ts_ms" in f else f["event_time"]),
         lambda f: f),
    ):
        want = {key(w): canon(w) for w in map(json.loads, want_raw)}
        seen: dict[tuple, dict] = {}
        for g in got:
            k = key(g)
            if k in seen:
                dup += 1
            seen[k] = canon(g)
        lost += sum(1 for k in want if k not in seen)
        changed += sum(1 for k, w in want.items() if k in seen and seen[k] != w)
        changed += sum(1 for k in seen if k not in want)  # records the uninterrupted run never made
    return lost, dup, changed


class Load:
    """Produces records in the background at a steady rate; can be paused while a part is down."""

    def __init__(self, bootstrap: str, topic: str, payloads: list[bytes], rate_per_s: float) -> None:
        self.bootstrap, self.topic, self.payloads, self.rate = bootstrap, topic, payloads, rate_per_s
        self.sent = 0
        self.running = threading.Event()
        self.running.set()
        self.thread = threading.Thread(target=self._run, name="fault-load", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> Load:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            p = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, acks="all", retries=2_147_483_647,
                              max_block_ms=120_000, request_timeout_ms=30_000, max_in_flight_requests_per_connection=1)
            t0 = time.monotonic()
            step = 50
            for i in range(0, len(self.payloads), step):
                self.running.wait()
                for v in self.payloads[i:i + step]:
                    p.send(self.topic, v)
                p.flush()
                self.sent = min(i + step, len(self.payloads))
                lag = t0 + self.sent / self.rate - time.monotonic()
                if lag > 0:
                    time.sleep(lag)
                if not self.running.is_set():
                    t0 = time.monotonic() - self.sent / self.rate  # no catch-up burst after a pause
            p.close()
        except BaseException as e:  # noqa: BLE001 - reported by wait()
            self.error = e

    def wait_sent(self, n: int, timeout_s: float = 300) -> None:
        deadline = time.time() + timeout_s
        while self.sent < n and self.thread.is_alive() and time.time() < deadline:
            time.sleep(0.05)
        assert self.sent >= n, f"load stalled at {self.sent} of {n} ({self.error!r})"

    def wait(self, timeout_s: float = 600) -> None:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive() and self.error is None, f"load failed: {self.error!r}"


class CommitWatch:
    """Counts the committed records of a topic as they become visible, with the time of each change."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.follower = Follower(bootstrap, topic, reconnect_backoff_max_ms=1000)
        self.count = 0
        self.log: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="commit-watch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                got = self.follower.poll(0.1)
            except Exception:  # noqa: BLE001 - the broker may be down on purpose
                time.sleep(0.2)
                continue
            n = len(got)
            if n:
                self.count += n
                self.log.append((time.time(), self.count))

    def first_after(self, t: float, settle_s: float = 0.0) -> float | None:
        """When output resumed after time ``t``: the first change past the count seen ``settle_s`` after it
        (after a kill, what the dead job committed just before may still be arriving for a moment)."""
        base = max((c for ts, c in self.log if ts <= t + settle_s), default=0)
        return next((ts for ts, c in self.log if ts > t + settle_s and c > base), None)

    def wait_for(self, n: int, timeout_s: float) -> bool:
        deadline = time.time() + timeout_s
        while self.count < n and time.time() < deadline:
            time.sleep(0.2)
        return self.count >= n

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.follower.close()


class MiniClusterJob:
    """``python -m jobs.vigil_job`` in a process group of its own (the Python client and its JVM)."""

    def __init__(self, config: Path, log: Path, *args: str) -> None:
        self.log_path = log
        self.log = log.open("ab")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([sys.executable, "-m", "jobs.vigil_job", "--config", str(config), *args],
                                     cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def kill9(self) -> None:
        """SIGKILL to the whole process group: nothing gets to clean up."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)
        self.log.close()

    stop = kill9

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def settle(bootstrap: str, topics: list[str], quiet_s: float = 3.0) -> dict[str, list[dict]]:
    return {t: read_all(bootstrap, t, quiet_s=quiet_s) for t in topics}


def record(res: FaultResult) -> FaultResult:
    RESULTS.append(res)
    return res


def write_report(path: Path, commit: str) -> None:
    """``reports/faults.md`` and ``faults.json`` beside it, from what this session's fault tests measured."""
    rows = [asdict(r) for r in RESULTS]
    path.with_suffix(".json").write_text(json.dumps({"commit": commit, "results": rows}, indent=2) + "\n")
    lines = [
        "# Fault tests",
        "",
        f"Measured by `make faults` on commit `{commit}` (the fault tests of `make test`, "
        "`tests/integration/test_faults.py`, on this machine: 2 cores shared by Kafka, Redis, Flink and the "
        "load generator). Each test produces a labelled stream (3 hours of a 3-instance fleet, two incidents) "
        "under load while the job runs, injects the fault, and compares what a `read_committed` consumer sees "
        "on the alert and forecast topics with the uninterrupted run of the same input (the in-process twin, "
        "which equals the job record for record): alerts by id and revision, content apart from `emitted_at`; "
        "forecasts by series and time, whole content.",
        "",
        "Recovery is the time from the fault (for the broker and Redis: from the part's return) to the next "
        "committed output; it includes starting a new JVM where the test does so.",
        "",
        "| fault | records | alerts / forecasts expected | recovery | lost | duplicated | changed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in RESULTS:
        rec = "n/a" if r.recovery_s is None else f"{r.recovery_s:.1f} s"
        lines.append(f"| {r.fault} | {r.records:,} | {r.expected_alerts} / {r.expected_forecasts:,} | {rec} | "
                     f"{r.lost} | {r.duplicated} | {r.changed} |")
    notes = [(r.name, r.notes) for r in RESULTS if r.notes]
    if notes:
        lines += ["", "Notes:", ""]
        lines += [f"- `{n}`: " + "; ".join(f"{k} {v}" for k, v in d.items()) for n, d in notes]
    path.write_text("\n".join(lines) + "\n")
