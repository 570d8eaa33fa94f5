"""Fixtures of the integration tests that need more than the broker and Redis."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

CLUSTER_SH = Path(__file__).resolve().parents[2] / "scripts" / "flink-cluster.sh"


def _running_jobs() -> list[str]:
    with urllib.request.urlopen("http://localhost:8081/jobs/overview", timeout=5) as r:
        return [j["jid"] for j in json.load(r)["jobs"] if j["state"] == "RUNNING"]


@pytest.fixture
def cluster():
    """A standalone Flink cluster (`make cluster-up`) for one test; a job still running at the end is
    cancelled, then the cluster stops (`make cluster-down`)."""
    up = subprocess.run([str(CLUSTER_SH), "up"], capture_output=True, text=True, timeout=180)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield
    finally:
        try:
            running = _running_jobs()
        except OSError:
            running = []
        for jid in running:
            subprocess.run([str(CLUSTER_SH), "cancel", jid], capture_output=True, text=True, timeout=60)
        subprocess.run([str(CLUSTER_SH), "down"], capture_output=True, text=True, timeout=120)
