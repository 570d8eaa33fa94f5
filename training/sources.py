"""Where training data comes from: the fleet generator, the NAB corpus, or a replay of the metrics topic.

``python -m training train --data generator|nab|replay`` (default ``generator``). Whatever the
source, series are replayed through the job's own feature code (:class:`models.features.SeriesWindow`)
by :func:`extract_series`, so a feature means the same thing offline and in the stream.

Which models use which source (the manifest's ``training_data.lineage.data`` says, per model):

* ``generator``: all four, as before (:mod:`training.simulate`, labelled incidents).
* ``nab``: the detector and the forecaster learn from NAB's univariate series, split by file
  (seeded) into fit (~60%), validation (~20%: detector thresholds, forecaster intervals) and test
  (~20%: held-out figures); NAB's labelled windows label the detector's rows. The clusterer and
  the classifier need a fleet of entities (several metrics per instance, peers per service), which
  NAB does not have: they keep the generator. A NAB-trained detector has seen the benchmark's data
  and labels, so it must never be used for ``make bench-nab`` figures (look-ahead):
  :func:`trained_on_nab` tells.
* ``replay``: what the metrics topic holds, read once up to its end offsets at start
  (:func:`read_metrics`), parsed by the job's parser, grouped into series and cut in time at 60%
  and 80% of the span. The replay is unlabelled; it is used as the *normal background*: the
  detector's isolation forest and score calibration learn the fleet's own noise from the first
  60% (incidents hidden in it make the detector slightly less sensitive, never more), and its
  ensemble weight and thresholds are chosen, and its figures measured, on the later 20% slices
  with incidents of the generator's shapes (spike, level shift, and for ``*_util`` series a
  memory leak) injected into randomly chosen series (:func:`inject_incidents`). The forecaster
  needs no labels: it fits on the first 60%, calibrates its intervals on the next 20% and is
  measured on the last 20%, of the real values. The clusterer and the classifier keep the
  generator (labelled entities and incidents).

A model whose source cannot feed it (e.g. a replay shorter than the forecaster's one-day horizon
in each slice) falls back to the generator, and its lineage and the run's summary say so.

Fingerprints: a source's ``source()`` description carries a SHA-256 of the exact series content
read (never a path, a broker address or a time of reading), so the same data gives the same
version and different data a different one. Where it came from (folder, topic, offsets) goes to
the lineage only.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.features import FORECAST_HORIZONS_MIN, FORECASTER_FEATURES, SeriesWindow, forecaster_rows
from models.season import SeasonalContext
from training.data import LABEL_MARGIN_MS, MINUTE_MS, DetectorData, Extract, ForecastData
from training.simulate import Incident, Scenario, _effect
from udfs.parse import split_series_key

log = logging.getLogger(__name__)

SOURCES = ("generator", "nab", "replay")
CLEAN_AFTER_ROWS = 90  # rows after a labelled window before the series' state counts as recovered
CLEAN_BEFORE_ROWS = 5
NAB_SPLIT = {"validation": 0.2, "test": 0.2}  # the rest fits
REPLAY_CUTS = (0.6, 0.8)  # fit | validation | test, as fractions of the replayed time span
FORECAST_EVERY = {"fit": 10, "validation": 10, "test": 15}
MIN_DETECTOR_FIT_ROWS = 1000
MIN_FORECAST_ROWS_PER_HORIZON = 30
# A forecaster target further than this many robust standard deviations from the last value is left
# out: the history (say a long run of zeros, whose scale floors at 1e-6) says nothing about it, and
# one such row (NAB's ec2_disk_write_bytes: 1.4e14 scale units) outweighs every other in the MAE.
FORECAST_TARGET_LIMIT = 1000.0
DEFAULT_MAX_RECORDS = 2_000_000
DEFAULT_BACKGROUND = 50


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    """Which source trains the detector and the forecaster, and how to read it.

    ``nab_root`` None means ``../shared/datasets/nab`` beside the project (or ``$VIGIL_NAB_ROOT``).
    ``bootstrap``/``topic`` None mean the job configuration's (``flink-conf/vigil.yaml``).
    ``background``: with drift events and ``replay``, how many series that did not drift are
    replayed beside the drifted ones (chosen by a seeded hash of their key).
    """

    kind: str = "generator"
    nab_root: str | None = None
    nab_files: tuple[str, ...] | None = None
    nab_limit: int | None = None
    bootstrap: str | None = None
    topic: str | None = None
    max_records: int = DEFAULT_MAX_RECORDS
    timeout_s: float = 120.0
    background: int = DEFAULT_BACKGROUND
    kafka_options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in SOURCES:
            raise ValueError(f"The 'kind' parameter of DataConfig must be one of {list(SOURCES)}. Got {self.kind!r}.")
        for name in ("nab_limit", "max_records"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"The '{name}' parameter of DataConfig must be a positive integer. Got {v!r}.")
        if isinstance(self.background, bool) or not isinstance(self.background, int) or self.background < 0:
            raise ValueError(f"The 'background' parameter of DataConfig must be a non-negative integer. "
                             f"Got {self.background!r}.")
        if not (isinstance(self.timeout_s, (int, float)) and self.timeout_s > 0):
            raise ValueError(f"The 'timeout_s' parameter of DataConfig must be a positive number. "
                             f"Got {self.timeout_s!r}.")


# --------------------------------------------------------------------------------------------
# Series and their extraction through the job's feature code
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelWindow:
    """A labelled stretch of one series: rows with ``start_ms <= ts <= label_end_ms`` are positives."""

    id: str
    kind: str
    start_ms: int
    end_ms: int  # the incident's own end (exclusive, as the generator's)
    label_end_ms: int  # inclusive end of the labelled rows (the end plus any label margin)


@dataclass
class Series:
    """One univariate series in time order (duplicates of a timestamp: the last value kept)."""

    key: str
    service: str
    metric: str
    tags: tuple[tuple[str, str], ...]
    ts: np.ndarray  # int64 epoch ms, non-decreasing
    values: np.ndarray  # float64
    windows: list[LabelWindow] = field(default_factory=list)

    def digest(self, h: Any) -> None:
        h.update(self.key.encode() + b"\x00")
        h.update(np.ascontiguousarray(self.ts, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(self.values, dtype=np.float64).tobytes())
        for w in self.windows:
            h.update(f"{w.id}|{w.kind}|{w.start_ms}|{w.end_ms}|{w.label_end_ms}".encode())


def content_digest(series: Iterable[Series]) -> str:
    """SHA-256 over the keys, timestamps, values and label windows of ``series`` (in key order)."""
    h = hashlib.sha256()
    for s in sorted(series, key=lambda s: s.key):
        s.digest(h)
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True)
class SeriesSpec:
    """What a non-generator extract was built from. ``source()`` goes into fingerprints."""

    source_name: str
    role: str
    fields: tuple[tuple[str, Any], ...] = ()

    def source(self) -> dict[str, Any]:
        return {"source": self.source_name, "split": self.role, **dict(self.fields)}


def extract_series(series: Sequence[Series], spec: SeriesSpec, *, detector: bool = True, forecast_every: int = 0,
                   keep: tuple[int, int] | None = None, clean_after_rows: int = CLEAN_AFTER_ROWS,
                   forecast_steps: Sequence[int] = ()) -> Extract:
    """Replay each series through :class:`SeriesWindow` and collect detector and forecaster rows.

    Every series is replayed from its first sample (so the state is warm), and only rows with
    ``keep[0] <= ts < keep[1]`` are kept. Detector rows are labelled from the series' label
    windows; ``clean`` excludes labelled rows and the ``clean_after_rows`` rows after a window
    (state recovering) and a few before it. Forecaster rows are taken every ``forecast_every``-th
    warm row, one per horizon (the job's ``FORECAST_HORIZONS_MIN`` and ``forecast_steps`` times the
    series' median spacing) whose target ``ts + h`` exists exactly in the series and lies
    inside ``keep`` (no target from a later slice); a target beyond :data:`FORECAST_TARGET_LIMIT`
    scale units is left out and counted (``ForecastData.dropped``).
    """
    lo, hi = keep if keep is not None else (-(2**62), 2**62)
    det_rows: list[list[float]] = []
    det_meta: list[tuple[int, int, int, int, int]] = []
    det_kind: list[str] = []
    incidents: list[Incident] = []
    incident_keys: list[list[str]] = []
    fc: dict[str, list[Any]] = {k: [] for k in ("X", "y", "h", "anchor", "scale", "actual", "last", "origin", "step",
                                                 "series", "kind")}
    keys = [s.key for s in series]
    n_origins = 0
    dropped = 0
    for si, s in enumerate(series):
        ts, vals = s.ts, s.values
        n = len(ts)
        inc_of_row = np.full(n, -1, dtype=np.int64)
        dirty = np.zeros(n, dtype=bool)
        for w in s.windows:
            a = int(np.searchsorted(ts, w.start_ms, side="left"))
            b = int(np.searchsorted(ts, w.label_end_ms, side="right"))
            if b <= a:
                continue
            ii = len(incidents)
            incidents.append(Incident(w.id, w.kind, s.service, dict(s.tags).get("instance"), (s.metric,), w.start_ms,
                                      w.end_ms, "labelled"))
            incident_keys.append([s.key])
            free = inc_of_row[a:b] < 0
            inc_of_row[a:b][free] = ii
            dirty[max(a - CLEAN_BEFORE_ROWS, 0):b + clean_after_rows] = True
        index_of = {int(t): i for i, t in enumerate(ts.tolist())} if forecast_every else {}
        t0 = int(ts[0]) if n else 0
        w_state, season = SeriesWindow(), SeasonalContext()
        gap_ms = int(np.median(np.diff(ts))) if n > 1 else 0
        horizons = sorted(set(FORECAST_HORIZONS_MIN) | {int(k * gap_ms // MINUTE_MS) for k in forecast_steps
                                                        if gap_ms and k * gap_ms % MINUTE_MS == 0})
        for i in range(n):
            t, x = int(ts[i]), float(vals[i])
            inside = lo <= t < hi
            if detector and inside and w_state.warm:
                inc = int(inc_of_row[i])
                det_rows.append(w_state.detector_features(x))
                det_meta.append((si, i, inc >= 0, not dirty[i], inc))
                det_kind.append(incidents[inc].kind if inc >= 0 else "")
            w_state.update(t, x)
            season.update(t, x)
            if forecast_every and inside and w_state.warm and i % forecast_every == 0:
                rows, anchors, scales = forecaster_rows([w_state], [season], [t], horizons)
                anchor, scale = float(anchors[0]), float(scales[0])
                inc = int(inc_of_row[i])
                any_row = False
                for hi_, h in enumerate(horizons):
                    j = index_of.get(t + h * MINUTE_MS)
                    if j is None or not (lo <= int(ts[j]) < hi):
                        continue
                    future = float(vals[j])
                    if abs(future - anchor) > FORECAST_TARGET_LIMIT * scale:
                        dropped += 1
                        continue
                    fc["X"].append(rows[hi_])
                    fc["y"].append((future - anchor) / scale)
                    fc["h"].append(h)
                    fc["anchor"].append(anchor)
                    fc["scale"].append(scale)
                    fc["actual"].append(future)
                    fc["last"].append(x)
                    fc["origin"].append(n_origins)
                    fc["step"].append((t - t0) // MINUTE_MS)
                    fc["series"].append(si)
                    fc["kind"].append(incidents[inc].kind if inc >= 0 else "")
                    any_row = True
                n_origins += int(any_row)
    det = None
    if detector:
        det = DetectorData.from_rows(det_rows, det_meta, det_kind, keys, incidents, incident_keys)
    fcd = None
    if forecast_every:
        fcd = ForecastData(
            X=np.asarray(fc["X"], dtype=np.float32).reshape(-1, len(FORECASTER_FEATURES)),
            y=np.asarray(fc["y"], dtype=np.float64), horizon=np.asarray(fc["h"], dtype=np.int64),
            anchor=np.asarray(fc["anchor"], dtype=np.float64), scale=np.asarray(fc["scale"], dtype=np.float64),
            actual=np.asarray(fc["actual"], dtype=np.float64), last=np.asarray(fc["last"], dtype=np.float64),
            origin=np.asarray(fc["origin"], dtype=np.int64),
            step=np.asarray(fc["step"], dtype=np.int64), series=np.asarray(fc["series"], dtype=np.int64),
            kind=np.asarray(fc["kind"], dtype=object), keys=keys, dropped=dropped)
    starts = [int(s.ts[0]) for s in series if len(s.ts)]
    ends = [int(s.ts[-1]) for s in series if len(s.ts)]
    sc = Scenario(events=[], incidents=incidents, start_ms=min(starts, default=0), end_ms=max(ends, default=0))
    return Extract(sc, spec, det, None, fcd)  # type: ignore[arg-type]


def extract_job(job: tuple[list[Series], SeriesSpec, dict[str, Any]]) -> Extract:
    """:func:`extract_series` of one ``(series, spec, keyword arguments)`` job (for worker processes)."""
    series, spec, kw = job
    return extract_series(series, spec, **kw)


# --------------------------------------------------------------------------------------------
# NAB
# --------------------------------------------------------------------------------------------


def nab_series(root: str | Path | None = None, files: Iterable[str] | None = None,
               limit: int | None = None) -> list[Series]:
    """NAB data files as series keyed as ``make bench-nab`` keys them (service ``nab-<category>``,
    metric the file stem, no tags), each labelled with its windows (kind ``nab_window``)."""
    from training.nab import load_corpus, to_epoch_ms
    from udfs.parse import series_key

    out = []
    for f in load_corpus(root, files, limit):
        ts = np.asarray([to_epoch_ms(t) for t in f.timestamps], dtype=np.int64)
        vals = np.asarray([float(v) for v in f.values], dtype=np.float64)
        wins = [LabelWindow(f"{f.key}#{j}", "nab_window", int(ts[a]), int(ts[b]) + 1, int(ts[b]))
                for j, (a, b) in enumerate(f.windows)]
        service = f"nab-{f.category}"
        out.append(Series(series_key(service, f.stem, ()), service, f.stem, (), ts, vals, wins))
    return out


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def split_nab(series: Sequence[Series], seed: int) -> dict[str, list[Series]]:
    """Split NAB files into ``fit``, ``validation`` and ``test`` (seeded, by file).

    Validation and test each take about 20% of the files, all from files with at least one label
    window (thresholds and figures need incidents); every other file fits. Needs three files, two
    of them labelled.
    """
    labelled = sorted((s for s in series if s.windows), key=lambda s: _rank(seed, s.key))
    unlabelled = [s for s in series if not s.windows]
    n_each = max(1, min(round(NAB_SPLIT["test"] * len(series)), len(labelled) // 2))
    if len(series) < 3 or len(labelled) < 2:
        raise ValueError(f"--data nab needs at least 3 files, 2 of them with label windows (fit, validation, test); "
                         f"got {len(series)} files, {len(labelled)} labelled")
    test, val, rest = labelled[:n_each], labelled[n_each:2 * n_each], labelled[2 * n_each:]
    fit = sorted(rest + unlabelled, key=lambda s: s.key)
    if not fit:
        raise ValueError("--data nab left no file to fit on; select more files")
    return {"fit": fit, "validation": sorted(val, key=lambda s: s.key), "test": sorted(test, key=lambda s: s.key)}


def nab_jobs(series: Sequence[Series], seed: int, limit: int | None) -> list[tuple[str, tuple]]:
    """(role, extract job) for the NAB splits: each split gives detector and forecaster rows."""
    parts = split_nab(series, seed)
    jobs = []
    for role, ss in parts.items():
        spec = SeriesSpec("nab", role, (("files", [split_series_key(s.key)[0] + "/" + s.metric for s in ss]),
                                         ("rows", int(sum(len(s.ts) for s in ss))), ("limit", limit),
                                         ("sha256", content_digest(ss))))
        jobs.append((role, (list(ss), spec, {"detector": True, "forecast_every": FORECAST_EVERY[role]})))
    return jobs


def trained_on_nab(manifest: Mapping[str, Any]) -> bool:
    """True if a model version learned from NAB: its NAB benchmark figures would be look-ahead."""
    td = manifest.get("training_data") or {}
    return any(isinstance(s, Mapping) and s.get("source") == "nab" for s in td.get("sources") or ())


# --------------------------------------------------------------------------------------------
# Replay of the metrics topic
# --------------------------------------------------------------------------------------------


@dataclass
class Replay:
    """The metrics topic's series, and what reading and parsing them found."""

    series: list[Series]
    records: int
    events: int
    dead_letters: dict[str, int]
    read: dict[str, Any]  # kafka_io.TopicRead.describe()
    selection: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        return {"records": self.records, "events": self.events, "series": len(self.series),
                "dead_letters": dict(sorted(self.dead_letters.items())), "read": self.read,
                **({"selection": self.selection} if self.selection else {})}


def series_from_records(values: Iterable[bytes], max_bytes: int = 65536, progress: bool = False,
                        total: int | None = None) -> tuple[list[Series], dict[str, Any]]:
    """Parse raw metric records with the job's parser (no time bounds: old data is the point) and
    group them into series. Unparseable records are counted by dead-letter reason, never raised."""
    from tqdm.auto import tqdm

    from udfs.parse import DeadLetter, ParseLimits, parse_record

    limits = ParseLimits(max_bytes=max_bytes, max_past_s=None, max_future_s=None)
    groups: dict[str, tuple[Any, list[tuple[int, int, float]]]] = {}
    dead: dict[str, int] = {}
    n_rec = n_ev = 0
    for seq, payload in enumerate(tqdm(values, desc="parsing", unit="record", total=total, disable=not progress,
                                       mininterval=1.0)):
        n_rec += 1
        parsed = parse_record(payload, 0, limits)
        if isinstance(parsed, DeadLetter):
            dead[parsed.reason] = dead.get(parsed.reason, 0) + 1
            continue
        for ev in parsed:
            n_ev += 1
            g = groups.get(ev.series)
            if g is None:
                g = groups[ev.series] = (ev, [])
            g[1].append((ev.ts_ms, seq, ev.value))
    out = []
    for key in sorted(groups):
        ev, pts = groups[key]
        pts.sort()
        ts = np.asarray([p[0] for p in pts], dtype=np.int64)
        vals = np.asarray([p[2] for p in pts], dtype=np.float64)
        last = np.append(ts[1:] != ts[:-1], True)  # the last value read for each timestamp
        out.append(Series(key, ev.service, ev.metric, ev.tags, ts[last], vals[last]))
    return out, {"records": n_rec, "events": n_ev, "dead_letters": dead}


def read_metrics(cfg: DataConfig, bootstrap: str, topic: str, max_bytes: int = 65536, progress: bool = False) -> Replay:
    """Read the metrics topic (bounded, up to its end offsets at start) into series."""
    from common.kafka_io import read_topic

    r = read_topic(bootstrap, topic, max_records=cfg.max_records, timeout_s=cfg.timeout_s, must_exist=True,
                   options=dict(cfg.kafka_options), progress=progress)
    series, stats = series_from_records((rec.value for rec in r.records), max_bytes, progress, len(r.records))
    return Replay(series, stats["records"], stats["events"], stats["dead_letters"], r.describe())


def select_series(series: Sequence[Series], drifted: Iterable[str], background: int, seed: int
                  ) -> tuple[list[Series], dict[str, Any]]:
    """The drifted series, plus up to ``background`` others (lowest seeded hash of their key) as background.

    The background keeps the detector's notion of normal broad: calibrating on the drifted series
    alone would tune it to them and make it deaf or noisy everywhere else.
    """
    want = set(drifted)
    hit = [s for s in series if s.key in want]
    others = sorted((s for s in series if s.key not in want), key=lambda s: _rank(seed, s.key))[:background]
    chosen = sorted(hit + others, key=lambda s: s.key)
    info = {"drifted_requested": len(want), "drifted_found": len(hit),
            "drifted_missing": sorted(want - {s.key for s in hit}),
            "background": len(others), "background_limit": background}
    return chosen, info


def replay_cuts(series: Sequence[Series]) -> tuple[int, int, int, int]:
    """(start, cut1, cut2, end) in epoch ms: the replayed span cut at :data:`REPLAY_CUTS`."""
    t0 = min(int(s.ts[0]) for s in series if len(s.ts))
    t1 = max(int(s.ts[-1]) for s in series if len(s.ts))
    span = t1 - t0
    return t0, t0 + int(span * REPLAY_CUTS[0]), t0 + int(span * REPLAY_CUTS[1]), t1


def inject_incidents(series: Sequence[Series], lo: int, hi: int, seed: int, n: int | None = None
                     ) -> tuple[list[Series], int]:
    """Copies of ``series`` with incidents of the generator's shapes injected into ``[lo, hi)``.

    Kinds cycle through spike (2 to 7 samples), level shift (30 to 180 min, at most 30% of the
    slice) and, on ``*_util`` series, a memory leak (a ramp towards 99 until the slice ends); the
    values change exactly as :func:`training.simulate._effect` changes generated ones. Only series
    with a positive, non-constant median level in the slice are eligible (a multiplicative incident
    on a series of zeros would be invisible, and labelled anyway). Rows from the start to 10 min
    after the end (the generator's label margin) are labelled. ``n`` defaults to a quarter of the
    eligible series, between 4 and 40. Returns the series and the number of incidents injected.
    """
    rng = np.random.default_rng(seed)
    out = [Series(s.key, s.service, s.metric, s.tags, s.ts, s.values.copy(), list(s.windows)) for s in series]
    eligible = []
    for i, s in enumerate(out):
        inside = (s.ts >= lo) & (s.ts < hi)
        if inside.sum() >= 10:
            vals = s.values[inside]
            if float(np.median(vals)) > 0 and float(vals.max() - vals.min()) > 0:
                eligible.append(i)
    if not eligible:
        return out, 0
    if n is None:
        n = int(min(max(len(eligible) // 4, 4), 40))
    span = hi - lo
    order = [eligible[int(j)] for j in rng.permutation(len(eligible))]
    kinds = ("spike", "level_shift", "memory_leak")
    injected = 0
    for k in range(n):
        s = out[order[k % len(order)]]
        kind = kinds[k % len(kinds)]
        if kind == "memory_leak" and not s.metric.endswith("_util"):
            kind = "level_shift"
        m = np.flatnonzero((s.ts >= lo + int(0.1 * span)) & (s.ts < hi - int(0.3 * span)))
        if m.size == 0:
            continue
        a = int(m[int(rng.integers(m.size))])
        start = int(s.ts[a])
        step = int(np.median(np.diff(s.ts))) if len(s.ts) > 1 else MINUTE_MS
        if kind == "spike":
            end = start + int(rng.integers(2, 8)) * max(step, 1)
        elif kind == "level_shift":
            end = start + min(int(rng.integers(30, 181)) * MINUTE_MS, int(0.3 * span))
        else:
            end = hi
        end = min(end, hi)
        if any(w.start_ms <= end and start <= w.label_end_ms for w in s.windows):
            continue  # never overlap two incidents on one series
        inc = Incident(f"inj-{seed}-{k}", kind, s.service, None, (s.metric,), start, end, "injected")
        level = float(np.median(s.values[s.ts < lo])) if (s.ts < lo).any() else float(np.median(s.values))
        rows = np.flatnonzero((s.ts >= start) & (s.ts < end))
        for r in rows.tolist():
            v = _effect(inc, s.metric, int(s.ts[r]), float(s.values[r]), level, float(rng.random()))
            s.values[r] = min(max(v, 0.0), 100.0) if s.metric.endswith("_util") else max(v, 0.0)
        s.windows.append(LabelWindow(inc.id, kind, start, end, min(end + LABEL_MARGIN_MS, hi - 1)))
        injected += 1
    return out, injected


def replay_jobs(series: Sequence[Series], seed: int, digest_fields: tuple[tuple[str, Any], ...] = ()
                ) -> list[tuple[str, tuple]]:
    """(role, extract job) for a replay: the detector's fit / validation / test and the forecaster's
    fit / calibration / test, cut in time (see the module docstring)."""
    t0, c1, c2, t1 = replay_cuts(series)
    base = (("series", len(series)), ("rows", int(sum(len(s.ts) for s in series))),
            ("sha256", content_digest(series)), ("cuts_fraction", list(REPLAY_CUTS)), *digest_fields)
    val, n_val = inject_incidents(series, c1, c2, seed * 1000 + 201)
    test, n_test = inject_incidents(series, c2, t1 + 1, seed * 1000 + 202)
    end = t1 + 1
    return [
        ("fit", (list(series), SeriesSpec("replay", "fit", base),
                 {"detector": True, "forecast_every": FORECAST_EVERY["fit"], "keep": (t0, c1)})),
        ("det_validation", (val, SeriesSpec("replay", "validation", (*base, ("injected", {
            "seed": seed * 1000 + 201, "incidents": n_val, "shapes": "training.simulate._effect"}))),
            {"detector": True, "keep": (c1, c2)})),
        ("det_test", (test, SeriesSpec("replay", "test", (*base, ("injected", {
            "seed": seed * 1000 + 202, "incidents": n_test, "shapes": "training.simulate._effect"}))),
            {"detector": True, "keep": (c2, end)})),
        ("fc_calibration", (list(series), SeriesSpec("replay", "calibration", base),
                            {"detector": False, "forecast_every": FORECAST_EVERY["validation"], "keep": (c1, c2)})),
        ("fc_test", (list(series), SeriesSpec("replay", "test", base),
                     {"detector": False, "forecast_every": FORECAST_EVERY["test"], "keep": (c2, end)})),
    ]


# --------------------------------------------------------------------------------------------
# Can a source feed a model?
# --------------------------------------------------------------------------------------------


def detector_shortfall(fit: Extract, val: Extract, test: Extract) -> str | None:
    """Why these extracts cannot train and measure the detector, or None if they can."""
    f, v, t = fit.detector, val.detector, test.detector
    if f is None or v is None or t is None:
        return "no detector rows"
    if int(f.clean.sum()) < MIN_DETECTOR_FIT_ROWS:
        return f"{int(f.clean.sum())} clean rows to fit on; needs {MIN_DETECTOR_FIT_ROWS}"
    for name, d in (("validation", v), ("test", t)):
        if not d.label.any() or d.label.all():
            return f"the {name} slice has {int(d.label.sum())} labelled rows of {len(d.label)}; needs both kinds"
    return None


def forecaster_shortfall(*extracts: Extract) -> str | None:
    """Why these extracts cannot train, calibrate and measure the forecaster, or None if they can."""
    for e, name in zip(extracts, ("fit", "calibration", "test"), strict=False):
        f = e.forecast
        if f is None:
            return f"no forecaster rows in the {name} slice"
        for h in FORECAST_HORIZONS_MIN:
            n = int((f.horizon == h).sum())
            if n < MIN_FORECAST_ROWS_PER_HORIZON:
                return (f"{n} rows at horizon {h} min in the {name} slice; needs {MIN_FORECAST_ROWS_PER_HORIZON} "
                        f"(the series are too short for it)")
    return None


def metric_kind_weights(keys: Sequence[str], series_idx: np.ndarray, kinds: Iterable[str], weight: float
                        ) -> np.ndarray:
    """Per-row weights: ``weight`` for rows of series whose metric kind is in ``kinds``, else 1."""
    from models.features import metric_kind

    want = set(kinds)
    per_series = np.asarray([weight if metric_kind(split_series_key(k)[1]) in want else 1.0 for k in keys] or [1.0])
    return per_series[np.asarray(series_idx, dtype=np.int64)] if len(keys) else np.ones(len(series_idx))


def weighted_permutation(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """A random permutation in which heavier rows tend to come first (Efraimidis-Spirakis keys ``u^(1/w)``)."""
    u = rng.random(len(weights))
    keys = np.log(np.maximum(u, 1e-300)) / np.maximum(weights, 1e-12)
    return np.argsort(-keys, kind="stable")
