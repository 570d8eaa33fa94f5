"""The cluster path: `make cluster-up`, `make submit` (flink run), `make cluster-down`."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

from models.context import connect, seed
from tests.integration.kafka_helpers import job_config, produce, read_all, wait_for
from training.simulate import SERVICES, generate

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "flink-cluster.sh"
START = 1_780_000_000_000 - (1_780_000_000_000 % 3_600_000)


def _jobs() -> list[dict]:
    with urllib.request.urlopen("http://localhost:8081/jobs/overview", timeout=5) as r:
        return json.load(r)["jobs"]


def test_flink_run_on_a_standalone_cluster(tmp_path, trained_store, kafka_bootstrap, redis_url, topic_prefix, cluster):
    seed(connect(redis_url), SERVICES)
    cfg = job_config(tmp_path, topic_prefix, kafka_bootstrap, redis_url, trained_store)
    scen = generate(seed=13, hours=1.0, start_ms=START, instances=1, business_metric=False, incidents=[])
    produce(kafka_bootstrap, f"{topic_prefix}.metrics",
            [json.dumps(e).encode() for e in scen.events] + [b"garbage"])

    sub = subprocess.run([str(SCRIPT), "submit", "--config", str(cfg), "--bounded"],
                         capture_output=True, text=True, timeout=300)
    assert sub.returncode == 0, sub.stdout[-3000:] + sub.stderr[-3000:]
    assert "Job has been submitted with JobID" in sub.stdout

    finished = wait_for(lambda: [j for j in _jobs() if j["state"] in ("FINISHED", "FAILED", "CANCELED")], 300)
    assert finished and finished[0]["state"] == "FINISHED", _jobs()
    dead = read_all(kafka_bootstrap, f"{topic_prefix}.dead_letters")
    assert [d["reason"] for d in dead] == ["not_json"]
    forecasts = read_all(kafka_bootstrap, f"{topic_prefix}.forecasts")
    assert {f["series"].split("|")[0] for f in forecasts} == set(SERVICES)
