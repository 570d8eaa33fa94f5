"""Start the Vigil job on the embedded MiniCluster in a process of its own, and stop it cleanly.

Used by the demo, the benchmarks and the tests that need a job running beside them. The job runs
in its own session so that stopping it also stops the Flink JVM it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

from common.config import ROOT


def start_job(config: Path, bounded: bool = False, log: IO | int = subprocess.DEVNULL,
              extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m jobs.vigil_job --config <config> [--bounded]`` with the project on PYTHONPATH
    (and ``extra_env``, e.g. ``JAVA_TOOL_OPTIONS`` to bound the Flink JVM's heap)."""
    env = {**os.environ, **(extra_env or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "jobs.vigil_job", "--config", str(config)] + (["--bounded"] if bounded else [])
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_job(job: subprocess.Popen, grace_s: float = 30) -> None:
    """TERM the job's process group, then KILL it if it has not gone within ``grace_s``."""
    if job.poll() is not None:
        return
    os.killpg(job.pid, signal.SIGTERM)
    try:
        job.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
