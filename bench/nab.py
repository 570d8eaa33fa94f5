"""``make bench-nab``: detection quality on NAB v1.1, measured through the streaming path.

Every file of ``../shared/datasets/nab`` becomes one series: native events with ``metric`` the
file's stem, ``service`` ``nab-<category>``, no tags, and event time the file's timestamps (read as
UTC). The rows of all files are merged by event time, each file keeping its own row order, and
produced to a metrics topic of the run's own. The real job (``python -m jobs.vigil_job --bounded``:
the production operators on the embedded MiniCluster, exactly-once sinks) scores them and, with
``kafka.topics.scores`` set, writes every scored sample (``vigil.score/v1``) to a scores topic,
which this runner reads back (read_committed) and lines up with the rows, one score per row.

The anomaly score of a row is the detector's combined score (``Scored.score``, in [0, 1]): it
learns only from the rows before it, per series, with models trained on the project's synthetic
fleet and nothing tuned on NAB. Rows before a series' warm-up (its first ``scoring.warmup``
samples) get 0; they lie in NAB's probationary period anyway.

The same payloads, in the same order, are then fed to :class:`jobs.inprocess.InProcessJob` (the
same logic without Kafka or Flink) and the two are compared record by record. Both are scored with
:mod:`training.nab` (threshold per profile optimised exhaustively, as the spec says for a new
detector) into ``<out>/nab.json`` and ``<out>/nab.md``; the streaming scores also go to NAB's
results layout, ``<out>/nab/vigil/<category>/vigil_<file>.csv``.

Kafka and Redis must be up (``scripts/bench-nab.sh``, behind ``make bench-nab``, starts them when
they are not). A benchmark: it reports what it measured and fails only when the measurement
itself is broken (the job fails, a row gets no score or two, the two paths disagree).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from bench.kit import (
    MeasurementError,
    add_job_run,
    delete_topics,
    environment,
    fmt,
    job_topics,
    parser,
    produce,
    start_run,
    write_job_config,
)
from common.config import DEFAULT_CONFIG, VigilConfig
from common.kafka_io import GroupProgress, create_topics, end_offset, read_topic
from jobs.inprocess import InProcessJob
from jobs.launch import start_job, stop_job
from models.artifact import ArtifactStore, resolve_version
from models.context import connect
from models.pipeline import ModelBundle, score_json
from training import nab
from udfs.parse import series_key

NAME = "bench-nab"  # the run's topic prefix and folder: bench-nab-<UTC time>
DETECTOR = "vigil"
# published detectors shown beside ours (names as in final_results.json, labels as in the README)
SCOREBOARD = (("ARTime", "ARTime"), ("numenta", "Numenta HTM"), ("contextOSE", "CAD OSE"),
              ("randomCutForest", "Random Cut Forest"), ("twitterADVec", "Twitter ADVec"),
              ("windowedGaussian", "windowed Gaussian"), ("random", "random"), ("null", "null"))


class Row(NamedTuple):
    """One NAB row as one Kafka record."""

    key: str
    row: int  # its index in the file
    ts_ms: int
    payload: bytes


class ScoreRecord(NamedTuple):
    """One ``vigil.score/v1`` record, as sent (``raw``) and read."""

    raw: str
    series: str
    ts_ms: int
    value: float
    score: float
    trigger: str


def parse_score(raw: str) -> ScoreRecord:
    d = json.loads(raw)
    return ScoreRecord(raw, d["series"], int(d["ts_ms"]), float(d["value"]), float(d["score"]), d["trigger"])


def series_of(f: nab.NabFile) -> str:
    """The series id the job gives a file's events."""
    return series_key(f"nab-{f.category}", f.stem, ())


def event(f: nab.NabFile, i: int) -> dict[str, Any]:
    """Row ``i`` of ``f`` as a native Vigil metric event."""
    return {"metric": f.stem, "value": float(f.values[i]), "timestamp": f.timestamps[i].replace(" ", "T") + "Z",
            "service": f"nab-{f.category}", "tags": {}}


def replay_order(corpus: Sequence[nab.NabFile]) -> list[Row]:
    """Every row of every file, merged by event time; each file keeps its own order (ties: file order)."""
    streams = []
    for f in corpus:
        streams.append([Row(f.key, i, f.ts_ms(i), json.dumps(event(f, i), separators=(",", ":")).encode())
                        for i in range(f.n)])
    return list(heapq.merge(*streams, key=lambda r: r.ts_ms))


def disorder_ms(rows: Sequence[Row]) -> int:
    """How far behind the latest event time seen so far any row comes (0 for a sorted stream).

    NAB has repeated timestamps (clock changes) and one 55-minute step back
    (machine_temperature_system_failure, row 10150); the job's watermark must allow for it or
    those rows would be dead-lettered as late.
    """
    top, worst = -(2**63), 0
    for r in rows:
        top = max(top, r.ts_ms)
        worst = max(worst, top - r.ts_ms)
    return worst


def write_config(path: Path, prefix: str, *, base: Path = DEFAULT_CONFIG, bootstrap: str | None = None,
                 redis_url: str | None = None, store: str | Path | None = None,
                 out_of_orderness_ms: int = 5000, surprise: bool = True) -> VigilConfig:
    """The benchmark's job YAML: every topic the job knows under ``prefix``, scores on, replay bounds off,
    the detector's surprise on (``surprise``; off: the job's shipped default)."""
    raw = yaml.safe_load(Path(base).read_text())
    ooo = max(int(raw.get("job", {}).get("out_of_orderness_ms", 0)), out_of_orderness_ms)
    return write_job_config(path, prefix, name="vigil-bench-nab", base=base, bootstrap=bootstrap,
                            redis_url=redis_url, store=store,
                            overrides={"job": {"delivery": "exactly_once", "out_of_orderness_ms": ooo},
                                       "scoring": {"surprise": {"enabled": surprise}}})


# --------------------------------------------------------------------------------------------
# The streaming path


def read_back(bootstrap: str, topic: str, idle_s: float = 20.0, settle_s: float = 60.0) -> list[str]:
    """Every committed record of a topic the job wrote, as text, up to its end.

    The end is taken once no transaction is open any more (waiting up to ``settle_s`` for the job's
    last commit to land), so that nothing committed is left unread; a read that gets no record for
    ``idle_s`` keeps what it has (:func:`align` then says which rows lack a score).
    """
    r = read_topic(bootstrap, topic, must_exist=True, settle_s=settle_s, idle_s=idle_s, timeout_s=math.inf)
    return [rec.value.decode() for rec in r.records]


def _progress(progress: GroupProgress) -> str:
    try:
        done, end = progress()
        return f"{done}/{end} records committed by the job ({100 * done / max(end, 1):.0f}%)"
    except Exception as e:  # noqa: BLE001 - progress is a courtesy; never fail the run for it
        return f"progress unknown ({e})"


def run_job(cfg_path: Path, log_path: Path, timeout_s: float, bootstrap: str, group: str, topic: str) -> float:
    """Run the bounded job in a child process group until it finishes; return its wall time."""
    t0 = time.time()
    with open(log_path, "w") as log, GroupProgress(bootstrap, group, topic) as progress:
        job = start_job(cfg_path, bounded=True, log=log)
        print(f"[bench-nab] job started (MiniCluster, pid {job.pid}); log {log_path}", flush=True)
        try:
            next_note = t0 + 30
            while job.poll() is None:
                if time.time() - t0 > timeout_s:
                    raise MeasurementError(f"the job did not finish within {timeout_s:.0f} s; see {log_path}")
                if time.time() >= next_note:
                    print(f"[bench-nab]   {time.time() - t0:.0f} s: {_progress(progress)}", flush=True)
                    next_note += 30
                time.sleep(1)
        finally:
            stop_job(job)
    if job.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise MeasurementError(f"the job exited with code {job.returncode}; see {log_path}:\n{tail}")
    return time.time() - t0


# --------------------------------------------------------------------------------------------
# Lining records up with rows, and the in-process path


def align(corpus: Sequence[nab.NabFile], records: Sequence[ScoreRecord], what: str) -> dict[str, list[ScoreRecord]]:
    """One score record per row of every file, in file order, or a :class:`MeasurementError` saying why not.

    Records of one series arrive in the order the series' rows were produced; each must carry its
    row's event time and value.
    """
    by_series: dict[str, list[ScoreRecord]] = defaultdict(list)
    for r in records:
        by_series[r.series].append(r)
    out = {}
    for f in corpus:
        got = by_series.pop(series_of(f), [])
        if len(got) != f.n:
            raise MeasurementError(f"{what}: {f.key} has {f.n} rows but {len(got)} score records")
        for i, r in enumerate(got):
            if r.ts_ms != f.ts_ms(i) or r.value != float(f.values[i]):
                raise MeasurementError(f"{what}: {f.key} row {i} ({f.timestamps[i]}, {f.values[i]}) got the score "
                                       f"record of ({r.ts_ms}, {r.value})")
        out[f.key] = got
    if by_series:
        raise MeasurementError(f"{what}: score records of series no file produced: {sorted(by_series)[:5]}")
    return out


def refuse_nab_trained(cfg: VigilConfig) -> None:
    """Stop before measuring when the detector the job would serve learned from NAB (look-ahead)."""
    from training.sources import trained_on_nab

    try:
        client = connect(cfg.redis.url)
    except Exception:  # noqa: BLE001 - same rule as the job: no Redis, the store's latest versions
        client = None
    store = ArtifactStore(cfg.registry.path())
    version = resolve_version("detector", store, client)
    if version is not None and trained_on_nab(store.manifest("detector", version)):
        raise MeasurementError(f"detector {version} in {store.root} was trained on NAB (--data nab): its NAB "
                               "figures would be look-ahead; benchmark a generator- or replay-trained version")


def run_inprocess(cfg: VigilConfig, rows: Sequence[Row]) -> tuple[list[ScoreRecord], int, dict[str, str], float]:
    """The same payloads through :class:`InProcessJob`: (score records, dead letters, model versions, seconds)."""
    try:
        client = connect(cfg.redis.url)
    except Exception:  # noqa: BLE001 - same rule as the job: no Redis, the store's latest versions
        client = None
    bundle = ModelBundle.load(cfg.registry.path(), client)
    job = InProcessJob(cfg, bundle)
    now = int(time.time() * 1000)
    out: list[ScoreRecord] = []
    t0 = time.time()
    for r in rows:
        job.feed(r.payload, now)
        out.extend(parse_score(score_json(s)) for s in job.scored)
        job.scored.clear()  # the runner keeps only what it measures
        job.forecasts.clear()
        job.alerts.clear()
        job.drift.clear()
        job.shadow.clear()
    return out, len(job.dead_letters), bundle.versions(), time.time() - t0


def agreement(corpus: Sequence[nab.NabFile], a: dict[str, list[ScoreRecord]],
              b: dict[str, list[ScoreRecord]]) -> dict[str, Any]:
    """Row by row: how many records are identical (the whole JSON), and the largest score difference."""
    n = same = score_diff = 0
    worst = 0.0
    for f in corpus:
        for x, y in zip(a[f.key], b[f.key], strict=True):
            n += 1
            same += x.raw == y.raw
            d = abs(x.score - y.score)
            score_diff += d > 0
            worst = max(worst, d)
    return {"rows_compared": n, "identical_records": same, "rows_with_score_difference": score_diff,
            "max_abs_score_difference": worst}


# --------------------------------------------------------------------------------------------
# The report


def render_markdown(rep: dict[str, Any]) -> str:
    """``nab.md``: the figures of ``nab.json`` for a reader."""
    env, git, run, corp = rep["environment"], rep["git"], rep["run"], rep["corpus"]
    res, inp, agr = rep["results"], rep["inprocess"]["results"], rep["agreement"]
    dirty = ", ".join(git["dirty_files"]) if git["dirty_files"] else "none"
    lines = [
        "# NAB v1.1 through the streaming path",
        "",
        f"Measured {rep['measured_at']} on commit `{git['commit']}` (uncommitted changes to tracked files: {dirty}).",
        f"Machine: {env['cores']} cores ({env['cores_usable']} usable), {env['cpu']}; Python {env['python']}, "
        f"{env['java']}.",
        "Libraries: " + ", ".join(f"{k} {v}" for k, v in env["libraries"].items()) + "; jars: "
        + ", ".join(env["jars"]) + ".",
        "Models: " + ", ".join(f"{k} `{v}`" for k, v in rep["models"].items()) + ".",
        "",
        f"Corpus: {corp['files']} files, {corp['rows']:,} rows, {corp['windows']} counted windows"
        + ("" if corp["complete"] else " (a part of the corpus: a smoke run, not comparable to the scoreboard)")
        + ".",
        "",
        "## Scores",
        "",
        "| profile | NAB score (Kafka + Flink) | NAB score (in-process) | threshold θ* | raw S(θ*) "
        "| windows detected | FP rows |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in nab.PROFILE_NAMES:
        r, q = res[p], inp[p]
        lines.append(f"| {p} | **{fmt(r['score'])}** | {fmt(q['score'])} | {r['threshold']:.6g} | {r['raw']:.3f} "
                     f"| {r['detected_windows']}/{r['windows']} | {r['fp_rows']:,} |")
    lines += [
        "",
        "θ* is the exhaustive optimum of each profile over every distinct score (spec section 8), one threshold "
        "for all files, tuned on the test labels themselves as the NAB protocol does.",
        "",
        "## Streaming path = detector logic",
        "",
        f"Every row's `vigil.score/v1` record read back from the job's scores topic was compared with the record "
        f"the same logic makes in-process (no Kafka, no Flink) from the same payloads: "
        f"{agr['identical_records']:,} of {agr['rows_compared']:,} records identical, "
        f"{agr['rows_with_score_difference']} rows with a different score, largest score difference "
        f"{agr['max_abs_score_difference']:.3g}. Dead letters: {rep['streaming']['dead_letters']} from the job, "
        f"{rep['inprocess']['dead_letters']} in-process."
        + (f" The job was started {rep['streaming']['job_attempts']} times (it failed before writing a score)."
           if rep["streaming"].get("job_attempts", 1) > 1 else ""),
        "",
    ]
    if rep.get("published"):
        lines += ["## Beside the published scoreboard", "",
                  "| detector | standard | reward_low_FP_rate | reward_low_FN_rate |", "|---|---|---|---|"]
        board = [(label, rep["published"][name]) for name, label in SCOREBOARD if name in rep["published"]]
        label = "**Vigil (this run)**" if corp["complete"] else "**Vigil (this smoke run: not comparable)**"
        ours = (label, {p: res[p]["score"] for p in nab.PROFILE_NAMES})
        board.append(ours)
        board.sort(key=lambda x: -(x[1]["standard"] if x[1]["standard"] is not None else -1e9))
        for label, s in board:
            cells = [fmt(s[p], 1) for p in nab.PROFILE_NAMES]
            if label == ours[0]:
                cells = [f"**{c}**" for c in cells]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += ["", "Published figures from `../shared/datasets/nab/reference/final_results.json` (the scoreboard "
                  "of `../shared/datasets/README.md`). Some of them were scored at thresholds of NAB's older, "
                  "non-exhaustive optimiser; ours is the exhaustive optimum (spec section 8).", ""]
    fixed = rep.get("variants", {}).get("fixed_bar")
    if fixed:
        lines += ["## At the job's own alerting bar", "",
                  f"θ = {fixed['threshold']} (`scoring.surprise.alert_at`, fixed without labels) for every profile: "
                  + ", ".join(f"{p} {fmt(fixed[p]['score'])}" for p in nab.PROFILE_NAMES)
                  + f" ({fixed['standard']['detected_windows']}/{fixed['standard']['windows']} windows, "
                  f"{fixed['standard']['fp_rows']:,} FP rows).", ""]
    halves = rep.get("variants", {}).get("split_half")
    if halves:
        lines += ["## Split halves: a guard against fitting the benchmark", "",
                  "The threshold optimised on a random half of the files, the other half scored at it (normalised "
                  f"against its own windows), {halves['standard']['splits']} splits (seed "
                  f"{halves['standard']['seed']}):", "",
                  "| profile | held-out mean | held-out range | optimum on the held-out half (mean) |",
                  "|---|---|---|---|"]
        for p in nab.PROFILE_NAMES:
            h = halves[p]
            lines.append(f"| {p} | {fmt(h['held_out_mean'])} | {fmt(h['held_out_min'])} to "
                         f"{fmt(h['held_out_max'])} | {fmt(h['optimum_on_held_out_mean'])} |")
        lines.append("")
    var = rep.get("variants", {}).get("detector_alarms")
    if var:
        lines += ["## The job's own alarms", "",
                  "Another view, not the benchmark's figure: scoring 1 where the series' bar was reached "
                  "(`trigger == \"detector\"`) and 0 elsewhere, at θ = 1 (the job's decisions as they are, nothing "
                  "optimised): " + ", ".join(f"{p} {fmt(var[p]['score'])}" for p in nab.PROFILE_NAMES)
                  + f" ({var['standard']['detected_windows']}/{var['standard']['windows']} windows detected, "
                  f"{var['standard']['fp_rows']:,} alarm rows outside windows). NAB charges every alarm row "
                  "outside a window, while the job groups a series' alarms into one alert downstream.", ""]
    lines += ["## By category (standard profile, at θ*)", "",
              "| category | files | windows detected | FP rows | raw S |", "|---|---|---|---|---|"]
    for cat, c in rep["by_category"].items():
        lines.append(f"| {cat} | {c['files']} | {c['detected_windows']}/{c['windows']} | {c['fp_rows']:,} "
                     f"| {c['raw']:.2f} |")
    lines += [
        "",
        "## Run time",
        "",
        f"Total {run['total_s']:.0f} s: produce {run['produce_s']:.1f} s, job {run['job_s']:.1f} s (JVM and "
        f"MiniCluster start included; {corp['rows'] / max(run['job_s'], 1e-9):,.0f} rows/s), read back "
        f"{run['read_s']:.1f} s, in-process {run['inprocess_s']:.1f} s "
        f"({corp['rows'] / max(run['inprocess_s'], 1e-9):,.0f} rows/s), scoring {run['scoring_s']:.1f} s; "
        f"1-minute load average {run['load_average_start'][0]:.1f} at the start and "
        f"{run['load_average_end'][0]:.1f} at the end (the cores are shared). "
        "A benchmark, not a test: nothing fails on a slow machine.",
        "",
        "## How it was measured",
        "",
    ]
    lines += [f"- {m}" for m in rep["method"]]
    return "\n".join(lines) + "\n"


METHOD = [
    "Each NAB file is one series: native events `{metric: <file stem>, value, timestamp: <row timestamp>Z, "
    "service: nab-<category>, tags: {}}`, event time from the file (read as UTC).",
    "All files are merged into one stream by event time, each file in its own row order, and produced to a "
    "one-partition metrics topic of the run's own; the job (`jobs.vigil_job --bounded`, the production "
    "operators, exactly-once sinks) writes every scored sample to its own scores topic, read back read_committed.",
    "The job's out-of-orderness bound is raised to the stream's largest step back in time plus a minute, so that "
    "no row is dead-lettered as late: NAB repeats timestamps around clock changes and "
    "machine_temperature_system_failure steps back 55 minutes at row 10150.",
    "Anomaly score of a row: the detector's score as the job alerts on it (`Scored.score`, rounded to 6 decimals "
    "in `vigil.score/v1`): once the series has learned (120 samples), its surprise (`models.surprise`): the ONNX "
    "detector's combined score (isolation forest + robust statistics, calibrated on the synthetic fleet) averaged "
    "over 10 samples, as a tail probability against that average's distribution on the series' own past; 1.0 for "
    "a value beyond the range of the series' normal samples by 20% of it where the detector agrees; damped for 30 "
    "samples after a detection. Before that, the combined score itself; the first 20 samples get 0. All of it uses "
    "only the series' past. The models were trained on the synthetic fleet; the surprise's parameters are HTM's "
    "averaging window and round numbers, its range rule set on the synthetic fleet's false detections. Nothing was "
    "fitted on NAB, but while it was built a handful of design variants were scored on NAB too (the "
    "CHANGELOG says which): the split halves below are the check.",
    "Scoring: `training.nab`, an implementation of `../shared/specs/nab-scoring.md` (NAB v1.1 at ea702d75): "
    "label windows from `combined_windows.json`, probationary period, scaled-sigmoid weights, the three "
    "profiles, the exhaustive threshold per profile, normalisation against the null and perfect detectors.",
    "The corpus has 365,558 rows (the spec's text says 365,551; NAB's own per-file Total_Count agrees with "
    "365,558).",
    "The same payloads in the same order through `jobs.inprocess.InProcessJob` give the in-process column; the "
    "results CSVs (`nab/vigil/...`, NAB's layout) hold the streaming scores.",
]


def by_category(corpus: Sequence[nab.NabFile], result: nab.ProfileResult) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for f in corpus:
        c = out.setdefault(f.category, {"files": 0, "windows": 0, "detected_windows": 0, "fp_rows": 0, "raw": 0.0})
        s = result.per_file[f.key]
        c["files"] += 1
        c["windows"] += s.detected_windows + s.missed_windows
        c["detected_windows"] += s.detected_windows
        c["fp_rows"] += s.fp_rows
        c["raw"] += s.raw
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = parser("bench.nab", __doc__)
    ap.add_argument("--nab-root", default=None, help="NAB folder (default: $VIGIL_NAB_ROOT or ../shared/datasets/nab)")
    ap.add_argument("--files", nargs="+", default=None,
                    help="only these files (key such as realKnownCause/nyc_taxi.csv, file name, stem or category)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N rows of each file (smoke runs)")
    add_job_run(ap, NAME, run_dir="job config and log", timeout=3600,
                timeout_help="give up on the job after this many seconds")
    ap.add_argument("--no-surprise", dest="surprise", action="store_false",
                    help="score with the job's shipped default (scoring.surprise.enabled false) instead of the "
                         "detector's surprise")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = start_run(args, NAME)
    t_start, load_start, git, prefix, run_dir, out = (run.started, run.load_start, run.git, run.prefix, run.run_dir,
                                                      run.out)

    corpus = nab.load_corpus(args.nab_root, args.files, args.limit)
    rows = replay_order(corpus)
    late = disorder_ms(rows)
    cfg_path = run_dir / "vigil.yaml"
    cfg = write_config(cfg_path, prefix, base=Path(args.config), bootstrap=args.bootstrap, redis_url=args.redis_url,
                       store=args.store, out_of_orderness_ms=late + 60_000 if late else 0, surprise=args.surprise)
    boot, topics = cfg.kafka.bootstrap_servers, cfg.kafka.topics
    scores = topics.scores
    if scores is None:
        raise ValueError("the NAB benchmark needs kafka.topics.scores set")
    refuse_nab_trained(cfg)
    print(f"[bench-nab] {len(corpus)} files, {len(rows):,} rows; topics {prefix}.*; run folder {run_dir}", flush=True)

    # the model-updates topic (when the job has one) is the job's to create, compacted
    job_made = {getattr(topics, "model_updates", None)}
    create_topics(boot, [t for t in job_topics(cfg) if t not in job_made])
    try:
        t0 = time.time()
        produce(boot, topics.metrics, [r.payload for r in rows])
        produce_s = time.time() - t0
        print(f"[bench-nab] produced {len(rows):,} records in {produce_s:.1f} s", flush=True)
        job_s, attempts = 0.0, 0
        while True:
            attempts += 1
            log_path = run_dir / ("job.log" if attempts == 1 else f"job-{attempts}.log")
            try:
                job_s += run_job(cfg_path, log_path, args.timeout, boot, cfg.kafka.group_id, topics.metrics)
                break
            except MeasurementError as e:
                # PyFlink's gateway JVM sometimes fails to start on a loaded machine; a job that wrote
                # nothing (not even an open transaction) can simply be run again
                if attempts >= 2 or end_offset(boot, scores) > 0:
                    raise
                print(f"[bench-nab] the job failed before writing any score; running it again ({e})".splitlines()[0],
                      flush=True)
        t0 = time.time()
        stream = [parse_score(r) for r in read_back(boot, scores)]
        dead_stream = read_back(boot, topics.dead_letters, idle_s=5)
        read_s = time.time() - t0
        print(f"[bench-nab] job done in {job_s:.0f} s; read {len(stream):,} score records, "
              f"{len(dead_stream)} dead letters", flush=True)
    finally:
        if not args.keep_topics:
            err = delete_topics(boot, job_topics(cfg))
            if err:
                print(f"[bench-nab] could not delete the run's topics: {err}", file=sys.stderr)
    if dead_stream:
        (run_dir / "dead_letters.jsonl").write_text("\n".join(dead_stream) + "\n")
    stream_rows = align(corpus, stream, "streaming")

    inproc, dead_inproc, versions, inproc_s = run_inprocess(cfg, rows)
    inproc_rows = align(corpus, inproc, "in-process")
    print(f"[bench-nab] in-process path: {len(inproc):,} score records in {inproc_s:.0f} s", flush=True)
    agree = agreement(corpus, stream_rows, inproc_rows)

    t0 = time.time()
    s_scores = {k: [r.score for r in v] for k, v in stream_rows.items()}
    i_scores = {k: [r.score for r in v] for k, v in inproc_rows.items()}
    alarms = {k: [1.0 if r.trigger == "detector" else 0.0 for r in v] for k, v in stream_rows.items()}
    s_res, i_res = nab.evaluate(corpus, s_scores), nab.evaluate(corpus, i_scores)
    a_res = nab.evaluate(corpus, alarms, thresholds={p: 1.0 for p in nab.PROFILE_NAMES})
    halves = {p: nab.split_half(corpus, s_scores, prof) for p, prof in nab.STANDARD_PROFILES.items()}
    bar = cfg.scoring.surprise.alert_at if cfg.scoring.surprise.enabled else None
    f_res = nab.evaluate(corpus, s_scores, thresholds={p: bar for p in nab.PROFILE_NAMES}) if bar else None
    scoring_s = time.time() - t0

    nab.write_results(out / "nab", DETECTOR, corpus, s_scores)
    try:
        published = nab.published_results(args.nab_root)
    except OSError:
        published = {}
    rep: dict[str, Any] = {p: s_res[p].normalised for p in nab.PROFILE_NAMES}
    rep.update({
        "thresholds": {p: s_res[p].threshold for p in nab.PROFILE_NAMES},
        "raw": {p: s_res[p].raw for p in nab.PROFILE_NAMES},
        "detector": DETECTOR,
        "surprise": cfg.scoring.surprise.enabled,
        "anomaly_score": "Scored.score (detector combined score, 6 decimals); 0 before the series' warm-up",
        "optimiser": "exhaustive (spec section 8), one threshold per profile for all files",
        "results": {p: s_res[p].to_dict() for p in nab.PROFILE_NAMES},
        "inprocess": {"results": {p: i_res[p].to_dict() for p in nab.PROFILE_NAMES}, "dead_letters": dead_inproc,
                      "seconds": inproc_s},
        "streaming": {"dead_letters": len(dead_stream), "score_records": len(stream), "topic_prefix": prefix,
                      "job_attempts": attempts},
        "agreement": agree,
        "variants": {"detector_alarms": {p: a_res[p].to_dict() for p in nab.PROFILE_NAMES},
                     "split_half": halves,
                     **({"fixed_bar": {"threshold": bar, **{p: f_res[p].to_dict() for p in nab.PROFILE_NAMES}}}
                        if f_res else {})},
        "by_category": by_category(corpus, s_res["standard"]),
        "per_file": {f.key: {"rows": f.n, "windows": len(f.counted_windows()),
                             "raw_standard": s_res["standard"].per_file[f.key].raw,
                             "detected_windows": s_res["standard"].per_file[f.key].detected_windows,
                             "fp_rows": s_res["standard"].per_file[f.key].fp_rows} for f in corpus},
        "corpus": {"files": len(corpus), "rows": sum(f.n for f in corpus),
                   "windows": sum(len(f.counted_windows()) for f in corpus), "limit": args.limit,
                   "complete": args.limit is None and len(corpus) == len(nab.list_files(args.nab_root)),
                   "root": str(nab.nab_root(args.nab_root))},
        "job": {"out_of_orderness_ms": cfg.job.out_of_orderness_ms, "delivery": cfg.job.delivery,
                "parallelism": cfg.job.parallelism, "warmup": cfg.scoring.warmup},
        "models": versions,
        "published": {name: published[name] for name, _ in SCOREBOARD if name in published},
        "environment": environment(),
        "git": git,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "method": METHOD,
    })
    rep["run"] = {"produce_s": produce_s, "job_s": job_s, "read_s": read_s, "inprocess_s": inproc_s,
                  "scoring_s": scoring_s, "total_s": time.time() - t_start,
                  "load_average_start": load_start, "load_average_end": os.getloadavg()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "nab.json").write_text(json.dumps(rep, indent=1) + "\n")
    (out / "nab.md").write_text(render_markdown(rep))

    print(f"[bench-nab] NAB scores (streaming): standard {fmt(rep['standard'])}, "
          f"reward_low_FP_rate {fmt(rep['reward_low_FP_rate'])}, reward_low_FN_rate {fmt(rep['reward_low_FN_rate'])}")
    print(f"[bench-nab] streaming vs in-process: {agree['identical_records']:,}/{agree['rows_compared']:,} records "
          f"identical, max |score difference| {agree['max_abs_score_difference']:.3g}")
    print(f"[bench-nab] wrote {out / 'nab.json'}, {out / 'nab.md'} and {out / 'nab' / DETECTOR}/ "
          f"in {rep['run']['total_s']:.0f} s")
    if agree["identical_records"] != agree["rows_compared"] or dead_stream or dead_inproc:
        print("[bench-nab] the streaming path and the detector logic disagree, or rows were dead-lettered: "
              "the figures above do not measure the detector", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
