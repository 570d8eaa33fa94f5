"""Flink's Prometheus reporter during a real run: every metric the Grafana board uses is served,
with non-zero values where the run must have produced some."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from models.context import connect, seed
from tests.integration.kafka_helpers import job_config, produce
from tests.integration.test_kafka_job import BAD, spike_scenario
from training.simulate import SERVICES

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BOARD = ROOT / "flink-conf" / "grafana" / "vigil.json"
VIGIL = "flink_taskmanager_job_task_operator_vigil_"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def samples(body: str) -> list[tuple[str, str, float]]:
    out = []
    for line in body.splitlines():
        m = SAMPLE.match(line)
        if m:
            out.append((m.group(1), m.group(2) or "", float(m.group(3))))
    return out


def board_metrics() -> set[str]:
    """The metric names the dashboard's queries read."""
    board = json.loads(BOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert exprs, "the board has no queries"
    return {n for e in exprs for n in re.findall(r"\bflink_[a-zA-Z0-9_]+", e)}


def test_the_reporter_serves_every_metric_of_the_grafana_board(tmp_path, trained_store, kafka_bootstrap, redis_url,
                                                               topic_prefix):
    seed(connect(redis_url), SERVICES)
    port = free_port()
    cfg = job_config(tmp_path, topic_prefix, kafka_bootstrap, redis_url, trained_store,
                     job={"prometheus_port": str(port)})
    _, scen = spike_scenario()
    good = [json.dumps(e).encode() for e in scen.events]
    stale = {"labels": {"__name__": "up", "job": "search"}, "value": "NaN", "timestamp": scen.events[0]["timestamp"]}
    produce(kafka_bootstrap, f"{topic_prefix}.metrics",
            good[:500] + [b for b, _ in BAD] + [json.dumps(stale).encode()] + good[500:])

    records = len(good) + len(BAD) + 1

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    log = tmp_path / "job.log"  # a file, not a pipe: nothing reads a pipe while the job runs, and a full one blocks it
    with log.open("w") as sink:  # unbounded: its tasks live on, idle, once the topic is read
        job = subprocess.Popen([sys.executable, "-m", "jobs.vigil_job", "--config", str(cfg)],
                               cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    # Flink's reporter reads each counter on its own, while the Python worker's updates of a bundle
    # land in the JVM counter by counter: a scrape in the middle of a run may see a histogram's
    # +Inf bucket and its count one bundle apart. The board's invariants hold for a job at rest, so
    # they are checked on a settled scrape: every record read, and two scrapes in a row the same.
    settled = ""
    previous: list[tuple[str, str, float]] = []
    served: set[str] = set()
    deadline = time.time() + 420
    try:
        while not settled and job.poll() is None and time.time() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                time.sleep(0.5)
                continue
            now = samples(body)
            served |= {n for n, _, _ in now}
            ours = sorted(s for s in now if s[0].startswith(VIGIL))
            read = sum(v for n, _, v in ours if n == VIGIL + "batch_records_sum")
            if read >= records and ours == previous:
                settled = body
            previous = ours
            time.sleep(1.0)
    finally:
        alive = job.poll() is None
        if alive:  # its Flink JVM too, which a kill of the Python process alone leaves running
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        out = log.read_text(errors="replace")
    assert alive, "the job stopped: " + out[-3000:]
    assert settled, f"no settled scrape held all {records} records within the deadline: " + out[-2000:]

    got = samples(settled)
    missing = board_metrics() - served
    assert not missing, f"the board reads metrics the reporter does not serve: {sorted(missing)}"

    def total(name: str, **labels: str) -> float:
        return sum(v for n, lab, v in got if n == name
                   and all(f'{k}="{val}"' in lab for k, val in labels.items()))

    p = VIGIL
    # (a key-value group puts its key into the name, and its value into the label)
    assert total(p + "shape_records_in", shape="native") > 1000
    assert total(p + "events") > 1000
    assert total(p + "reason_dead_letters") >= len(BAD)
    assert total(p + "reason_dead_letters", reason="not_json") >= 1
    assert total(p + "reason_skipped", reason="stale_marker") == 1
    assert total(p + "batch_records_count") > 0
    assert total(p + "le_batch_records_bucket", le="Inf") == total(p + "batch_records_count")
    assert total(p + "batch_records_sum") >= total(p + "shape_records_in")
    serving = {lab for m, lab, v in got if m == p + "model_version_alias_served_batches" and v > 0}
    for model in ("detector", "forecaster", "clusterer", "classifier"):
        assert any(f'model="{model}"' in lab and 'alias="production"' in lab and 'version="v' in lab
                   for lab in serving), (model, serving)
