"""Faults on the real parts, mid-stream and under load: the job must come back by itself (or from its
retained checkpoint) and its committed output must equal an uninterrupted run: 0 lost, 0 duplicated.
Figures go to ``reports/faults.md`` when ``make faults`` runs these."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from models.context import connect, seed
from tests.integration.faults import (
    ROOT,
    CommitWatch,
    FaultResult,
    Load,
    MiniClusterJob,
    compare,
    record,
    reference,
    settle,
    stream,
)
from tests.integration.kafka_helpers import job_config, produce
from training.simulate import SERVICES

pytestmark = [pytest.mark.integration, pytest.mark.fault]
SERVICES_SH = ROOT / "scripts" / "services.sh"
CLUSTER_SH = ROOT / "scripts" / "flink-cluster.sh"
RATE = 2_500  # records/s while the fault happens: well within what the job sustains on 2 cores
PREFIX_SHARE = 0.15  # produced before the job starts


@pytest.fixture(scope="module")
def payloads() -> list[bytes]:
    return stream()


def _config(tmp_path, prefix, kafka, redis_url, store, **job) -> Path:
    seed(connect(redis_url), SERVICES)
    # a sweep every second: the job resolves quiet alert groups as soon as the reference's last sweep does
    return job_config(tmp_path, prefix, kafka, redis_url, store,
                      job={"checkpoint_interval_ms": 1000, "delivery": "exactly_once", **job},
                      state={"sweep_interval_s": 1})


def _finish(name, fault, cfg, store, payloads, kafka, prefix, watch, fault_at, notes=None, killed=False
            ) -> FaultResult:
    """Wait until the job has committed what the uninterrupted run made, a little longer for any
    duplicate to show, and compare."""
    ref = reference(cfg, store, payloads)
    watch.wait_for(len(ref.forecasts), timeout_s=300)
    time.sleep(4)  # a few more checkpoints: duplicates, if any, would be committed by now
    out = settle(kafka, [f"{prefix}.alerts", f"{prefix}.forecasts"])
    lost, dup, changed = compare(ref, out[f"{prefix}.alerts"], out[f"{prefix}.forecasts"])
    back = watch.first_after(fault_at, settle_s=0.5 if killed else 0.0)
    res = record(FaultResult(name, fault, len(payloads), len(ref.alerts), len(ref.forecasts),
                             None if back is None else round(back - fault_at, 1), lost, dup, changed, notes or {}))
    assert len(ref.alerts) >= 3 and len(ref.forecasts) > 1000, res
    assert (lost, dup, changed) == (0, 0, 0), res
    return res


@dataclass
class _Run:
    job: MiniClusterJob | _ClusterJob  # the one running now: a test that restarts the job sets it
    watch: CommitWatch
    load: Load
    n0: int  # records produced before the job started


@contextmanager
def _running(job_factory, kafka, prefix, payloads, rate=RATE):
    """The job started on the first records, committing, with the rest coming under load; at the end the
    watch is closed and the job stopped."""
    n0 = int(len(payloads) * PREFIX_SHARE)
    produce(kafka, f"{prefix}.metrics", payloads[:n0])
    run = _Run(job_factory(), CommitWatch(kafka, f"{prefix}.forecasts"), None, n0)  # type: ignore[arg-type]
    try:
        assert run.watch.wait_for(1, timeout_s=180), "the job committed nothing within 3 minutes"
        run.load = Load(kafka, f"{prefix}.metrics", payloads[n0:], rate).start()
        yield run
    finally:
        run.watch.close()
        run.job.stop()


def test_kill_9_of_the_minicluster_job_restarts_from_its_retained_checkpoint(
        tmp_path, trained_store, kafka_bootstrap, redis_url, topic_prefix, payloads):
    cfg = _config(tmp_path, topic_prefix, kafka_bootstrap, redis_url, trained_store)
    log = tmp_path / "job.log"
    with _running(lambda: MiniClusterJob(cfg, log), kafka_bootstrap, topic_prefix, payloads) as run:
        job, watch, load, n0 = run.job, run.watch, run.load, run.n0
        load.wait_sent((len(payloads) - n0) // 3)
        killed_at = time.time()
        job.kill9()
        checkpoints = sorted((tmp_path / "checkpoints").glob("*/chk-*/_metadata"))
        assert checkpoints, "no retained checkpoint to restart from"
        job = run.job = MiniClusterJob(cfg, log, "--restore", "latest")
        load.wait()
        res = _finish("minicluster_kill9", "`kill -9` of the MiniCluster job process (client and JVM), "
                      "restarted with `--restore latest`", cfg, trained_store, payloads, kafka_bootstrap,
                      topic_prefix, watch, killed_at, {"retained checkpoints found": len(checkpoints)}, killed=True)
        assert "restoring from" in job.output()
        assert res.recovery_s is not None


def _broker_pid() -> int:
    run = Path(__import__("os").environ.get("VIGIL_SERVICES_RUN", ROOT / ".cache" / "run"))
    return int((run / "kafka.pid").read_text())


def test_the_kafka_broker_killed_and_restarted_mid_stream(
        tmp_path, trained_store, kafka_bootstrap, redis_url, topic_prefix, payloads):
    cfg = _config(tmp_path, topic_prefix, kafka_bootstrap, redis_url, trained_store)
    log = tmp_path / "job.log"
    with _running(lambda: MiniClusterJob(cfg, log), kafka_bootstrap, topic_prefix, payloads) as run:
        job, watch, load, n0 = run.job, run.watch, run.load, run.n0
        load.wait_sent((len(payloads) - n0) // 3)
        load.running.clear()  # the load's producer waits too while the broker is gone
        subprocess.run(["kill", "-9", str(_broker_pid())], check=True)
        down_at = time.time()
        time.sleep(8)
        up = subprocess.run([str(SERVICES_SH), "up", "kafka"], capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, up.stdout + up.stderr
        back_at = time.time()
        load.running.set()
        load.wait()
        res = _finish("broker_kill9", "`kill -9` of the Kafka broker, restarted 8 s later", cfg, trained_store,
                      payloads, kafka_bootstrap, topic_prefix, watch, back_at,
                      {"broker down for": f"{back_at - down_at:.1f} s"})
        assert job.alive(), "the job process gave up"
        assert res.recovery_s is not None


def test_redis_stopped_mid_run_scoring_never_stops(
        tmp_path, trained_store, kafka_bootstrap, redis_url, topic_prefix, payloads):
    cfg = _config(tmp_path, topic_prefix, kafka_bootstrap, redis_url, trained_store)
    raw = yaml.safe_load(cfg.read_text())
    raw["redis"]["refresh_s"] = 1  # the job tries Redis every second while it is gone
    cfg.write_text(yaml.safe_dump(raw))
    log = tmp_path / "job.log"
    try:
        with _running(lambda: MiniClusterJob(cfg, log), kafka_bootstrap, topic_prefix, payloads, rate=1_000) as run:
            job, watch, load, n0 = run.job, run.watch, run.load, run.n0
            load.wait_sent((len(payloads) - n0) // 5)
            down = subprocess.run([str(SERVICES_SH), "down", "redis"], capture_output=True, text=True, timeout=60)
            assert down.returncode == 0, down.stdout + down.stderr
            down_at = time.time()
            time.sleep(6)  # six refreshes fail while the load goes on
            during = [c for t, c in watch.log if t > down_at]
            up = subprocess.run([str(SERVICES_SH), "up", "redis"], capture_output=True, text=True, timeout=60)
            assert up.returncode == 0, up.stdout + up.stderr
            seed(connect(redis_url), SERVICES)  # the test Redis keeps nothing on disk: its operator re-seeds it
            back_at = time.time()
            load.wait()
            _finish("redis_stop", f"Redis stopped for {back_at - down_at:.0f} s mid-run, then started and re-seeded",
                    cfg, trained_store, payloads, kafka_bootstrap, topic_prefix, watch, back_at,
                    {"forecasts committed while Redis was down": len(during)})
            assert during, "scoring stopped while Redis was down"
            assert job.alive() and "Restarting" not in job.output() and "RESTARTING" not in job.output()
    finally:
        subprocess.run([str(SERVICES_SH), "up", "redis"], capture_output=True, text=True, timeout=60)


# ---- the standalone cluster -------------------------------------------------------------------


def _rest(path: str):
    with urllib.request.urlopen(f"http://localhost:8081{path}", timeout=5) as r:
        return json.load(r)


def _running_job() -> str | None:
    jobs = [j for j in _rest("/jobs/overview")["jobs"] if j["state"] == "RUNNING"]
    return jobs[0]["jid"] if jobs else None


class _ClusterJob:
    def __init__(self, cfg: Path, *restore: str) -> None:
        cmd = [str(CLUSTER_SH), "restore", *restore, "--config", str(cfg)] if restore else \
            [str(CLUSTER_SH), "submit", "--config", str(cfg)]
        sub = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert sub.returncode == 0, sub.stdout[-3000:] + sub.stderr[-3000:]
        self.jid = re.search(r"JobID ([0-9a-f]{32})", sub.stdout).group(1)

    def stop(self) -> None:
        """Nothing: the ``cluster`` fixture cancels what still runs."""


def _taskmanager_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "org.apache.flink.runtime.taskexecutor.TaskManagerRunner"],
                         capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_kill_9_of_the_taskmanager_on_a_standalone_cluster(
        tmp_path, trained_store, kafka_bootstrap, redis_url, topic_prefix, payloads, cluster):
    cfg = _config(tmp_path, topic_prefix, kafka_bootstrap, redis_url, trained_store)
    with _running(lambda: _ClusterJob(cfg), kafka_bootstrap, topic_prefix, payloads) as run:
        job, watch, load, n0 = run.job, run.watch, run.load, run.n0
        load.wait_sent((len(payloads) - n0) // 3)
        tms = _taskmanager_pids()
        assert len(tms) == 1, tms
        subprocess.run(["kill", "-9", str(tms[0])], check=True)
        killed_at = time.time()
        add = subprocess.run([str(CLUSTER_SH), "add-tm"], capture_output=True, text=True, timeout=60)
        assert add.returncode == 0, add.stdout + add.stderr
        load.wait()
        res = _finish("taskmanager_kill9", "`kill -9` of the only TaskManager of a standalone cluster; a new "
                      "one started at once", cfg, trained_store, payloads, kafka_bootstrap, topic_prefix,
                      watch, killed_at, killed=True)
        assert _running_job() == job.jid  # the same job, restarted from its checkpoint by the JobManager
        assert res.recovery_s is not None


def test_stop_with_savepoint_and_restore_at_parallelism_2(
        tmp_path, trained_store, kafka_bootstrap, redis_url, topic_prefix, payloads, cluster):
    cfg = _config(tmp_path, topic_prefix, kafka_bootstrap, redis_url, trained_store)
    with _running(lambda: _ClusterJob(cfg), kafka_bootstrap, topic_prefix, payloads) as run:
        job, watch, load, n0 = run.job, run.watch, run.load, run.n0
        load.wait_sent((len(payloads) - n0) // 3)
        load.running.clear()  # the rest waits for the restored job (the stop itself takes seconds)
        sent_before = load.sent
        env = dict(__import__("os").environ, VIGIL_SAVEPOINT_DIR=str(tmp_path / "savepoints"))
        stop = subprocess.run([str(CLUSTER_SH), "savepoint", job.jid], capture_output=True, text=True, timeout=180,
                              env=env)
        assert stop.returncode == 0, stop.stdout[-3000:] + stop.stderr[-3000:]
        stopped_at = time.time()
        path = re.search(r"Savepoint completed\. Path: (\S+)", stop.stdout).group(1)
        raw = yaml.safe_load(cfg.read_text())
        raw["job"]["parallelism"] = 2
        cfg2 = cfg.with_name("p2.yaml")
        cfg2.write_text(yaml.safe_dump(raw))
        job2 = _ClusterJob(cfg2, path)
        load.running.set()
        load.wait()
        res = _finish("savepoint_rescale", "stop-with-savepoint at parallelism 1, restored at parallelism 2",
                      cfg, trained_store, payloads, kafka_bootstrap, topic_prefix, watch, stopped_at,
                      {"records produced after the savepoint": len(payloads) - n0 - sent_before})
        assert sent_before < len(payloads) - n0 and res.recovery_s is not None
        vertices = _rest(f"/jobs/{job2.jid}")["vertices"]
        assert max(v["parallelism"] for v in vertices) == 2


def _ms(iso_time: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso_time).timestamp() * 1000)


def test_after_a_restore_the_job_serves_the_versions_it_was_told(
        tmp_path, trained_store, kafka_bootstrap, redis_url, topic_prefix, payloads):
    """The registry (Redis) says v1, the update topic told the job v2: after kill -9 and a restore from
    the retained checkpoint the job serves v2, from its broadcast state."""
    import shutil

    from models.artifact import ArtifactStore, content_version
    from registry.client import kafka_publisher
    from tests.integration.kafka_helpers import read_all, wait_for

    store_root = tmp_path / "store"
    shutil.copytree(trained_store, store_root)
    store = ArtifactStore(store_root)
    v1 = {n: store.latest(n) for n in ("detector", "forecaster", "clusterer", "classifier")}
    manifest = json.loads((store_root / "detector" / v1["detector"] / "manifest.json").read_text())
    manifest["description"] += " (republished)"
    manifest["version"] = content_version(manifest)
    v2 = manifest["version"]
    shutil.copytree(store_root / "detector" / v1["detector"], store_root / "detector" / v2)
    (store_root / "detector" / v2 / "manifest.json").write_text(json.dumps(manifest))
    redis = connect(redis_url)
    for name, version in v1.items():
        redis.set(f"vigil:registry:{name}:production", version)
    cfg = _config(tmp_path, topic_prefix, kafka_bootstrap, redis_url, store_root)
    log = tmp_path / "job.log"
    n0 = int(len(payloads) * 0.4)  # up to 72 minutes: before either incident
    produce(kafka_bootstrap, f"{topic_prefix}.metrics", payloads[:n0])
    job = MiniClusterJob(cfg, log)
    try:
        assert wait_for(lambda: read_all(kafka_bootstrap, f"{topic_prefix}.forecasts", quiet_s=1), 180)
        kafka_publisher(kafka_bootstrap, f"{topic_prefix}.model_updates")(
            {"model": "detector", "version": v2, "alias": "production"})
        assert wait_for(lambda: [e for e in read_all(kafka_bootstrap, f"{topic_prefix}.model_events", quiet_s=1)
                                 if e["status"] == "serving" and e["version"] == v2], 120)
        # records scored by the swapped version, committed: the checkpoint that committed them holds the
        # told versions in the shards' keyed state
        n1 = int(len(payloads) * 0.45)
        before = len(read_all(kafka_bootstrap, f"{topic_prefix}.forecasts", quiet_s=1))
        produce(kafka_bootstrap, f"{topic_prefix}.metrics", payloads[n0:n1])
        assert wait_for(lambda: len(read_all(kafka_bootstrap, f"{topic_prefix}.forecasts", quiet_s=1)) > before, 60)
        time.sleep(2)
        job.kill9()
        job = MiniClusterJob(cfg, log, "--restore", "latest")
        produce(kafka_bootstrap, f"{topic_prefix}.metrics", payloads[n1:])
        second = "playback|error_rate|instance=i-0"  # the incident at 140 minutes, after the restore
        alerts = wait_for(lambda: [a for a in read_all(kafka_bootstrap, f"{topic_prefix}.alerts", quiet_s=1)
                                   if second in a["related_series"] and a["status"] != "resolved"], 240)
        assert alerts, "no alert on the second incident after the restore"
        first = json.loads(payloads[n0])
        swapped_ms = first["timestamp"] if "metric" in first else first["timestamp"] * 1000  # Telegraf: seconds
        after = [a for a in read_all(kafka_bootstrap, f"{topic_prefix}.alerts")
                 if a["status"] != "resolved" and _ms(a["event_time"]) >= swapped_ms]
        assert after and all(a["models"]["detector"] == v2 for a in after), {a["models"]["detector"] for a in after}
        events = read_all(kafka_bootstrap, f"{topic_prefix}.model_events")
        restored = [e for e in events if e["detail"].startswith("restored")]
        assert [(e["model"], e["version"], e["status"]) for e in restored] == [("detector", v2, "serving")]
    finally:
        job.kill9()
        for name in v1:
            redis.delete(f"vigil:registry:{name}:production")
