"""What the benchmarks (``make bench-nab``, ``make bench``, ``make bench-forecast`` and the small
``python -m bench.*`` ones) share: their command lines, the start of a run, run configs, topics,
producing, process memory, and the environment and commit a report names.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from common import kafka_io
from common.config import DEFAULT_CONFIG, ROOT, TopicsConfig, VigilConfig, _merge

LIBRARIES = ("apache-flink", "kafka-python", "onnxruntime", "numpy", "scikit-learn", "skl2onnx", "river", "redis",
             "PyYAML")


class MeasurementError(RuntimeError):
    """The benchmark could not measure what it claims to (not a slow machine: a broken run)."""


# --------------------------------------------------------------------------------------------
# Command lines and the start of a run


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of ``python -m <module>``, described by the first paragraph of its docstring."""
    return argparse.ArgumentParser(prog=f"python -m {module}", description=(doc or "").split("\n\n")[0])


def add_store(ap: argparse.ArgumentParser, default: str | None = "artifacts") -> None:
    """``--store``: the artifact store the benchmark loads its models from."""
    ap.add_argument("--store", default=default, help="artifact store (default: %(default)s)" if default
                    else "artifact store (default: the config's registry.root)")


def add_job_run(ap: argparse.ArgumentParser, name: str, *, run_dir: str, timeout: float, timeout_help: str) -> None:
    """The options of a benchmark that runs the job on topics of its own (run :func:`start_run` with
    the same ``name``): where the report goes, the job's base config and services, the run's
    topics and folder (``run_dir`` says what it holds), when to give up, whether to keep the topics."""
    ap.add_argument("--out", default=str(ROOT / "reports"), help="report folder (default: %(default)s)")
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="base job YAML (default: %(default)s)")
    add_store(ap, None)
    ap.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (default: the config's)")
    ap.add_argument("--redis-url", default=None, help="Redis URL (default: the config's)")
    ap.add_argument("--topic-prefix", default=None, help=f"prefix of the run's topics (default: {name}-<UTC time>)")
    ap.add_argument("--run-dir", default=None, help=f"{run_dir} (default: runs/{name}-<UTC time>)")
    ap.add_argument("--timeout", type=float, default=timeout, help=timeout_help)
    ap.add_argument("--keep-topics", action="store_true", help="keep the run's topics (default: delete them)")


@dataclass(frozen=True)
class Run:
    """The start of a benchmark run: when, the load then, the commit measured (taken before the run
    writes its own report files into the tree), its topic prefix, run folder and report folder."""

    started: float
    load_start: tuple[float, float, float]
    git: dict[str, Any]
    prefix: str
    run_dir: Path
    out: Path


def start_run(args: argparse.Namespace, name: str) -> Run:
    """Begin a run of the options of :func:`add_job_run`: a TERM exits (so that ``finally`` blocks
    stop what the run started), the topic prefix and run folder default to ``<name>-<UTC time>``,
    the run folder is made."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started, load_start, git = time.time(), os.getloadavg(), git_state()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = Path(args.run_dir) if args.run_dir else ROOT / "runs" / f"{name}-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    return Run(started, load_start, git, args.topic_prefix or f"{name}-{stamp}", run_dir, Path(args.out))


def write_job_config(path: Path, prefix: str, *, name: str, base: Path = DEFAULT_CONFIG, bootstrap: str | None = None,
                     redis_url: str | None = None, store: str | Path | None = None, scores: bool = True,
                     overrides: dict | None = None) -> VigilConfig:
    """A benchmark's job YAML: every topic the job knows under ``prefix`` (the scores topic only when
    ``scores``), its own consumer group reading from the earliest offset, the replay bounds of
    validation off, then ``overrides`` (nested sections) on top; validated and returned."""
    raw = yaml.safe_load(Path(base).read_text())
    raw.setdefault("job", {})["name"] = name
    topics = {f.name: f"{prefix}.{f.name.replace('_', '-')}" for f in dataclasses.fields(TopicsConfig)
              if scores or f.name != "scores"}
    raw.setdefault("kafka", {}).update(group_id=prefix, startup="earliest", topics=topics)
    if bootstrap:
        raw["kafka"]["bootstrap_servers"] = bootstrap
    if redis_url:
        raw.setdefault("redis", {})["url"] = redis_url
    if store:
        raw.setdefault("registry", {})["root"] = str(Path(store).resolve())
    raw.setdefault("validation", {}).update(max_past_s=None, max_future_s=None)
    raw["job"]["checkpoint_dir"] = str(path.parent.resolve() / "checkpoints")  # beside the run's other files
    raw = _merge(raw, overrides or {})
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return VigilConfig.load(path)


def job_topics(cfg: VigilConfig) -> list[str]:
    """Every topic a job config names."""
    t = cfg.kafka.topics
    return [getattr(t, f.name) for f in dataclasses.fields(TopicsConfig) if getattr(t, f.name) is not None]


def delete_topics(bootstrap: str, topics: Iterable[str]) -> str | None:
    """Delete those of ``topics`` that exist; an error message instead of an exception (leftover
    topics are untidy, not a failed measurement)."""
    try:
        kafka_io.delete_topics(bootstrap, topics)
    except Exception as e:  # noqa: BLE001
        return str(e)
    return None


def produce(bootstrap: str, topic: str, payloads: Sequence[bytes]) -> None:
    """Send every payload (acks from all replicas), or raise :class:`MeasurementError`."""
    try:
        kafka_io.produce(bootstrap, topic, payloads)
    except kafka_io.ProduceError as e:
        raise MeasurementError(str(e)) from None


# --------------------------------------------------------------------------------------------
# Process memory


def _status(pid: int) -> dict[str, str]:
    out = {}
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = ln.partition(":")
        out[k] = v.strip()
    return out


def group_pids(pgid: int) -> list[int]:
    """Live processes of process group ``pgid``."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.getpgid(int(d.name)) == pgid:
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


class PeakMemory:
    """Peak resident memory (VmHWM, kB as the kernel counts it) of processes, by command name.

    ``sample`` reads ``/proc/<pid>/status`` of the given processes (or of a whole process group)
    and keeps the largest VmHWM seen for each; call it every second or so while they run (a process
    that has exited can no longer be read).
    """

    def __init__(self) -> None:
        self.peak_kb: dict[str, int] = {}
        self.pids: dict[int, str] = {}

    def sample(self, pids: Iterable[int]) -> None:
        for pid in pids:
            try:
                st = _status(pid)
            except OSError:
                continue
            name = self.pids.setdefault(pid, _label(pid, st.get("Name", "?")))
            hwm = int(st.get("VmHWM", "0 kB").split()[0])
            self.peak_kb[name] = max(self.peak_kb.get(name, 0), hwm)

    def mib(self) -> dict[str, float]:
        return {k: round(v / 1024, 1) for k, v in sorted(self.peak_kb.items())}


def _label(pid: int, name: str) -> str:
    """``java`` or ``python`` (the kernel's name may be truncated or a thread's), with the module run."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return name
    exe = Path(argv[0].decode(errors="replace")).name if argv and argv[0] else name
    if "java" in exe:
        return "java"
    if exe.startswith("python") and len(argv) > 2 and argv[1] == b"-m":
        return f"python -m {argv[2].decode(errors='replace')}"
    if exe.startswith("python") and len(argv) > 1 and argv[1] == b"-c":
        return "python -c"  # a helper (pemja asks a python where libpython is)
    return exe


# --------------------------------------------------------------------------------------------
# What a report names


def environment() -> dict[str, Any]:
    libs: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            libs[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            libs[name] = None
    cpu = None
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), None)
    except OSError:
        pass
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30).stderr.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        java = None
    jars = sorted(p.name for p in (ROOT / ".cache" / "jars").glob("*/*.jar")
                  if p.name.startswith(("kafka_", "flink-sql-connector-kafka")))
    kafka = next((j[len("kafka_2.13-"):-len(".jar")] for j in jars if j.startswith("kafka_2.13-")), None)
    return {"cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)), "cpu": cpu,
            "python": platform.python_version(), "platform": platform.platform(), "java": java,
            "kafka": kafka, "libraries": libs, "jars": jars}


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout

    try:
        commit = git("rev-parse", "HEAD").strip() or None
        dirty = [ln[3:] for ln in git("status", "--porcelain", "--untracked-files=no").splitlines() if ln.strip()]
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, []
    return {"commit": commit, "dirty_files": dirty}


def short_commit() -> str:
    """The commit checked out, abbreviated as ``git`` abbreviates it (``unknown`` outside a checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    return out.strip() or "unknown"


def fmt(x: float | None, nd: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"
