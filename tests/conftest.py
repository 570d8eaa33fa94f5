"""Shared fixtures: trained model versions, and the real Kafka and Redis that `make test` starts.

Tiers (markers): unit tests need nothing (``fuzz`` marks the slower property-based fuzzing among
them, which still runs by default); ``flink`` tests run the job graph on the local
MiniCluster; ``integration`` tests talk to the real broker and Redis (addresses from
VIGIL_KAFKA_BOOTSTRAP and VIGIL_REDIS_URL, which scripts/run-tests.sh sets after starting them).
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    config.addinivalue_line("markers", "flink: runs a job graph on the local Flink MiniCluster")
    config.addinivalue_line("markers", "integration: needs the real Kafka broker and Redis server")
    config.addinivalue_line("markers", "fuzz: property-based fuzzing (unit tier; about a minute)")
    config.addinivalue_line("markers", "fault: kills a real part mid-stream (integration tier; minutes each)")


def pytest_sessionfinish(session, exitstatus):
    """``make faults`` asks for the fault tests' figures as a report (VIGIL_FAULT_REPORT=path)."""
    out = os.environ.get("VIGIL_FAULT_REPORT")
    if not out:
        return
    import subprocess

    from tests.integration.faults import RESULTS, write_report

    if RESULTS:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        write_report(Path(out), commit or "unknown")


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory) -> Path:
    """Every model trained once per session (quick settings) into a fresh artifact store."""
    from training.train import train_all

    root = tmp_path_factory.mktemp("artifacts")
    train_all(root, seed=1, quick=True, runs_dir=None, progress=False)
    return root


def _reachable(hostport: str) -> bool:
    host, port = hostport.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def _service(var: str, default: str, to_hostport) -> str:
    value = os.environ.get(var, default)
    if not _reachable(to_hostport(value)):
        if os.environ.get("VIGIL_REQUIRE_SERVICES"):
            pytest.fail(f"{var}={value} is not reachable, but scripts/run-tests.sh started it")
        pytest.skip(f"{var}={value} not reachable: run the suite with `make test`")
    return value


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return _service("VIGIL_KAFKA_BOOTSTRAP", "127.0.0.1:9092", lambda v: v.split(",")[0])


@pytest.fixture(scope="session")
def alertmanager_url() -> str:
    return _service("VIGIL_ALERTMANAGER_URL", "http://127.0.0.1:9094", lambda v: v.split("//", 1)[1].split("/", 1)[0])


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _service("VIGIL_REDIS_URL", "redis://127.0.0.1:6390/0",
                    lambda v: v.split("//", 1)[1].split("/", 1)[0])


@pytest.fixture
def topic_prefix() -> str:
    """Each integration test on topics of its own."""
    return f"test-{uuid.uuid4().hex[:10]}"
