"""The Numenta Anomaly Benchmark (NAB v1.1): corpus, scoring and the results layout.

An implementation of ``../shared/specs/nab-scoring.md`` (NAB at commit ea702d75): the corpus and
its label windows are read from ``../shared/datasets/nab`` beside the checkout (never copied into
the project); a detector's output is one anomaly score in [0, 1] per row of every file, in file
order. :func:`evaluate` finds, per profile, the one threshold shared by every file that maximises
the raw score (the spec's section 8, exhaustively, over every distinct score), and normalises it
against the null and perfect detectors (section 9). :func:`score_at` scores a fixed threshold
(e.g. a published one). :func:`write_results` writes NAB's own results layout,
``<out>/<detector>/<category>/<detector>_<file>.csv``, and :func:`read_results` reads it back
(NAB's published ``results/`` folders included).

Pure Python and numpy: no Flink, no Kafka.

>>> round(scaled_sigmoid(-1.0), 6), round(scaled_sigmoid(0.0), 6), scaled_sigmoid(3.5)
(0.986614, 0.0, -1.0)
>>> probation_rows(4032), probation_rows(22695)
(604, 750)
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_NAB_ROOT = PROJECT_ROOT.parent / "shared" / "datasets" / "nab"
PROFILE_NAMES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
NO_DETECTION = 1.1  # the spec's "threshold above every score": no row is a detection
PROBATION_FRACTION = 0.15
PROBATION_CAP = 0.15 * 5000
RESULT_COLUMNS = ("timestamp", "value", "anomaly_score", "label")


def nab_root(root: str | Path | None = None) -> Path:
    """The NAB folder: ``root``, else ``$VIGIL_NAB_ROOT``, else ``../shared/datasets/nab``."""
    return Path(root or os.environ.get("VIGIL_NAB_ROOT") or DEFAULT_NAB_ROOT)


# --------------------------------------------------------------------------------------------
# Scoring primitives (spec sections 3 and 4)


def scaled_sigmoid(y: float) -> float:
    """NAB's scaled sigmoid: ``2 / (1 + exp(5y)) - 1`` for ``y <= 3``, else ``-1``. Decreasing in ``y``."""
    if y > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def probation_rows(n: int) -> int:
    """Rows at the start of an ``n``-row file that are not scored: ``min(floor(0.15 n), 750)``."""
    return int(min(math.floor(PROBATION_FRACTION * n), PROBATION_CAP))


@dataclass(frozen=True)
class Profile:
    """One NAB application profile: the weights of a true positive, a false positive, a missed window."""

    name: str
    tp: float
    fp: float
    fn: float

    def null_score(self, windows: int) -> float:
        """Raw score of the null detector (no detections): every counted window missed."""
        return -self.fn * windows

    def perfect_score(self, windows: int) -> float:
        """Raw score of the perfect detector: each window caught on its first row, no false positive."""
        return self.tp * windows

    def normalise(self, raw: float, windows: int) -> float | None:
        """NAB score ``100 (S - S_null) / (S_perfect - S_null)``; ``None`` when no window counts."""
        span = self.perfect_score(windows) - self.null_score(windows)
        if span <= 0:
            return None
        return 100.0 * (raw - self.null_score(windows)) / span


STANDARD_PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", 1.0, 0.11, 1.0),
    "reward_low_FP_rate": Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    "reward_low_FN_rate": Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
}


def load_profiles(root: str | Path | None = None) -> dict[str, Profile]:
    """The profiles of ``config/profiles.json`` (A_TN is read by nobody, as in NAB)."""
    raw = json.loads((nab_root(root) / "config" / "profiles.json").read_text())
    out = {}
    for name, body in raw.items():
        m = body["CostMatrix"]
        out[name] = Profile(name, float(m["tpWeight"]), float(m["fpWeight"]), float(m["fnWeight"]))
    return out


# --------------------------------------------------------------------------------------------
# Corpus


@dataclass(frozen=True)
class NabFile:
    """One data file: its rows as written (timestamp and value strings) and its label windows.

    ``windows`` are inclusive row-index pairs ``(a, b)``, in file order.
    """

    key: str  # "<category>/<name>.csv", as in combined_windows.json
    timestamps: tuple[str, ...]
    values: tuple[str, ...]
    windows: tuple[tuple[int, int], ...]

    @property
    def category(self) -> str:
        return self.key.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split("/", 1)[1]

    @property
    def stem(self) -> str:
        return self.name[:-4] if self.name.endswith(".csv") else self.name

    @property
    def n(self) -> int:
        return len(self.timestamps)

    @property
    def probation(self) -> int:
        return probation_rows(self.n)

    def labels(self) -> list[int]:
        """1 for rows inside a window, else 0."""
        out = [0] * self.n
        for a, b in self.windows:
            for i in range(a, b + 1):
                out[i] = 1
        return out

    def counted_windows(self) -> list[tuple[int, int]]:
        """Windows with at least one row past the probationary period (section 3)."""
        p = self.probation
        return [(a, b) for a, b in self.windows if b >= p]

    def ts_ms(self, i: int) -> int:
        """Row ``i``'s timestamp as epoch milliseconds, read as UTC."""
        return to_epoch_ms(self.timestamps[i])


def to_epoch_ms(ts: str) -> int:
    """A NAB timestamp (``YYYY-MM-DD HH:MM:SS``) as epoch milliseconds, read as UTC."""
    dt = datetime.strptime(ts[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1000


def _strip(ts: str) -> str:
    return ts[:-7] if ts.endswith(".000000") else ts


def _window_rows(timestamps: Sequence[str], start: str, end: str, key: str) -> tuple[int, int]:
    """Row indices of a window given by its two (inclusive) timestamps.

    A timestamp that occurs more than once (repeated hours in some files) starts the window at
    its first occurrence and ends it at its last. In v1.1 no window edge is such a timestamp.
    """
    start, end = _strip(start), _strip(end)
    try:
        a = timestamps.index(start)
        b = len(timestamps) - 1 - timestamps[::-1].index(end)
    except ValueError:
        raise ValueError(f"{key}: window [{start}, {end}] does not match timestamps of the file") from None
    if b < a:
        raise ValueError(f"{key}: window [{start}, {end}] ends before it starts")
    return a, b


def list_files(root: str | Path | None = None) -> list[str]:
    """Every data file's key (``<category>/<name>.csv``), sorted."""
    data = nab_root(root) / "data"
    return sorted(f"{p.parent.name}/{p.name}" for p in data.glob("*/*.csv"))


def select_files(keys: Sequence[str], wanted: Iterable[str] | None) -> list[str]:
    """Filter ``keys`` by ``wanted`` entries: a full key, a file name, a stem or a category."""
    if wanted is None:
        return list(keys)
    out: list[str] = []
    for w in wanted:
        hits = [k for k in keys if w in (k, k.split("/")[1], k.split("/")[1][:-4], k.split("/")[0])]
        if not hits:
            raise ValueError(f"No NAB file matches {w!r}. Give a key such as 'realKnownCause/nyc_taxi.csv', "
                             f"a file name, a stem or a category.")
        out.extend(h for h in hits if h not in out)
    return out


def load_corpus(root: str | Path | None = None, files: Iterable[str] | None = None,
                limit: int | None = None) -> list[NabFile]:
    """Read the data files and their windows (``labels/combined_windows.json``).

    ``files`` selects some of them (see :func:`select_files`); ``limit`` keeps only the first
    ``limit`` rows of each, for smoke runs: windows are then clipped to the rows kept, and a window
    left with fewer than two rows is dropped (the post-window weighting divides by width - 1).
    """
    base = nab_root(root)
    if limit is not None and limit < 1:
        raise ValueError(f"The 'limit' parameter of load_corpus must be a positive integer. Got {limit!r}.")
    if not (base / "labels" / "combined_windows.json").exists():
        raise FileNotFoundError(f"No NAB corpus at {base} (expected labels/combined_windows.json and data/): "
                                f"pass its folder or set VIGIL_NAB_ROOT.")
    windows = json.loads((base / "labels" / "combined_windows.json").read_text())
    out = []
    for key in select_files(list_files(base), files):
        with open(base / "data" / key, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            if header[:2] != ["timestamp", "value"]:
                raise ValueError(f"{key}: expected columns timestamp,value; got {header}")
            rows = [r for r in reader if r]
        ts = [r[0] for r in rows]
        wins = [_window_rows(ts, s, e, key) for s, e in windows.get(key, [])]
        if limit is not None and limit < len(rows):
            rows, ts = rows[:limit], ts[:limit]
            wins = [(a, min(b, limit - 1)) for a, b in wins if a < limit]
            wins = [(a, b) for a, b in wins if b - a + 1 >= 2]
        out.append(NabFile(key, tuple(ts), tuple(r[1] for r in rows), tuple(wins)))
    return out


# --------------------------------------------------------------------------------------------
# Per-row weights (section 5), scoring at a threshold (sections 6-7), optimisation (section 8)


@dataclass(frozen=True)
class FileRows:
    """The scored rows of one file (index >= probation): what a detection there is worth.

    ``window`` is the row's counted-window number within the file (-1 outside every window);
    ``unit`` is the profile-free weight: ``sigma(y) / sigma(-1)`` inside a window (times A_TP),
    ``sigma(y)`` or -1 outside (times A_FP).
    """

    index: np.ndarray
    window: np.ndarray
    unit: np.ndarray
    n_windows: int


def file_rows(f: NabFile) -> FileRows:
    """Per-row weights of ``f``: fixed by its labels, whatever the detector says."""
    p = f.probation
    counted = f.counted_windows()
    number = {w: k for k, w in enumerate(counted)}
    window = np.full(f.n, -1, dtype=np.int64)
    unit = np.empty(f.n, dtype=np.float64)
    sig_m1 = scaled_sigmoid(-1.0)
    wins = list(f.windows)
    w_i = 0
    prev: tuple[int, int] | None = None  # (right edge, width) of the last finished window
    for i in range(f.n):
        while w_i < len(wins) and wins[w_i][1] < i:
            a, b = wins[w_i]
            prev = (b, b - a + 1)
            w_i += 1
        if w_i < len(wins) and wins[w_i][0] <= i:  # inside window [a, b]
            a, b = wins[w_i]
            width = b - a + 1
            unit[i] = scaled_sigmoid(-(b - i + 1) / width) / sig_m1
            window[i] = number.get((a, b), -1)
        elif prev is None:
            unit[i] = -1.0
        else:
            b_prev, w_prev = prev
            if w_prev < 2:
                raise ValueError(f"{f.key}: a window of width {w_prev} ends at row {b_prev}; NAB's weighting "
                                 f"after a window divides by width - 1")
            unit[i] = scaled_sigmoid((i - b_prev) / (w_prev - 1))
    return FileRows(np.arange(p, f.n), window[p:], unit[p:], len(counted))


@dataclass(frozen=True)
class FileScore:
    """One file at one threshold under one profile."""

    raw: float
    detected_windows: int
    missed_windows: int
    fp_rows: int  # detections outside every window
    fp_sum: float  # their (negative) contribution


def score_file(rows: FileRows, scores: np.ndarray, profile: Profile, threshold: float) -> FileScore:
    """``S_f(threshold)`` (section 7): each counted window its earliest detection or ``-A_FN``, every
    detection outside windows its own (negative) weight. ``scores`` are the file's, all rows."""
    s = np.asarray(scores, dtype=np.float64)[rows.index]
    det = s >= threshold
    outside = det & (rows.window < 0)
    fp_sum = float(np.sum(profile.fp * rows.unit[outside]))
    total = fp_sum
    detected = 0
    for k in range(rows.n_windows):
        hit = det & (rows.window == k)
        if hit.any():
            total += float(np.max(profile.tp * rows.unit[hit]))
            detected += 1
        else:
            total -= profile.fn
    return FileScore(total, detected, rows.n_windows - detected, int(outside.sum()), fp_sum)


@dataclass(frozen=True)
class ProfileResult:
    """A detector on the corpus under one profile at one threshold."""

    profile: str
    threshold: float
    raw: float
    normalised: float | None
    windows: int
    detected_windows: int
    fp_rows: int
    per_file: dict[str, FileScore]

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "raw": self.raw, "score": self.normalised, "windows": self.windows,
                "detected_windows": self.detected_windows, "missed_windows": self.windows - self.detected_windows,
                "fp_rows": self.fp_rows}


def _check_scores(corpus: Sequence[NabFile], scores: Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
    out = {}
    for f in corpus:
        if f.key not in scores:
            raise ValueError(f"No anomaly scores for {f.key}.")
        s = np.asarray(scores[f.key], dtype=np.float64)
        if s.shape != (f.n,):
            raise ValueError(f"{f.key} has {f.n} rows but {s.size} anomaly scores.")
        if not np.all(np.isfinite(s)) or s.min() < 0.0 or s.max() > 1.0:
            raise ValueError(f"Anomaly scores of {f.key} must lie in [0, 1] (NAB requires it).")
        out[f.key] = s
    return out


def score_at(corpus: Sequence[NabFile], scores: Mapping[str, Sequence[float]], profile: Profile,
             threshold: float, rows: Mapping[str, FileRows] | None = None) -> ProfileResult:
    """The corpus at one threshold shared by every file: ``S(threshold)``, normalised."""
    arr = _check_scores(corpus, scores)
    rows = rows or {f.key: file_rows(f) for f in corpus}
    per = {f.key: score_file(rows[f.key], arr[f.key], profile, threshold) for f in corpus}
    k = sum(rows[f.key].n_windows for f in corpus)  # the windows of these files (rows may hold more)
    raw = math.fsum(p.raw for p in per.values())
    return ProfileResult(profile.name, threshold, raw, profile.normalise(raw, k), k,
                         sum(p.detected_windows for p in per.values()), sum(p.fp_rows for p in per.values()), per)


def optimise_threshold(corpus: Sequence[NabFile], scores: Mapping[str, Sequence[float]], profile: Profile,
                       rows: Mapping[str, FileRows] | None = None) -> tuple[float, float]:
    """``(theta*, S(theta*))``: the threshold maximising the corpus raw score (section 8).

    Candidates are 1.1 (no detection) and every distinct score on a non-probationary row. Rows are
    visited by descending score, one group of equal scores at a time, keeping the running FP sum
    and each window's best (earliest) detection: O(R log R). Of equal raw scores the highest
    threshold wins (the first met, as NAB's sweeper does).
    """
    arr = _check_scores(corpus, scores)
    rows = rows or {f.key: file_rows(f) for f in corpus}
    s_parts, gid_parts, val_parts = [], [], []
    offset = 0
    for f in corpus:
        r = rows[f.key]
        s_parts.append(arr[f.key][r.index])
        gid_parts.append(np.where(r.window >= 0, r.window + offset, -1))
        val_parts.append(np.where(r.window >= 0, profile.tp * r.unit, profile.fp * r.unit))
        offset += r.n_windows
    k = offset
    s = np.concatenate(s_parts) if s_parts else np.empty(0)
    gid = np.concatenate(gid_parts) if gid_parts else np.empty(0, dtype=np.int64)
    val = np.concatenate(val_parts) if val_parts else np.empty(0)
    order = np.argsort(-s, kind="stable")
    s_sorted, gid_sorted, val_sorted = s[order].tolist(), gid[order].tolist(), val[order].tolist()
    best_in: list[float | None] = [None] * k
    total = profile.null_score(k)
    best_total, best_theta = total, NO_DETECTION
    n = len(s_sorted)
    i = 0
    while i < n:
        theta = s_sorted[i]
        while i < n and s_sorted[i] == theta:
            g, v = gid_sorted[i], val_sorted[i]
            if g < 0:
                total += v
            else:
                cur = best_in[g]
                if cur is None:
                    total += profile.fn + v
                    best_in[g] = v
                elif v > cur:
                    total += v - cur
                    best_in[g] = v
            i += 1
        if total > best_total:
            best_total, best_theta = total, theta
    return best_theta, best_total


def evaluate(corpus: Sequence[NabFile], scores: Mapping[str, Sequence[float]],
             profiles: Mapping[str, Profile] | None = None,
             thresholds: Mapping[str, float] | None = None) -> dict[str, ProfileResult]:
    """Every profile: the exhaustive optimum (or the given ``thresholds``), scored exactly there."""
    profiles = profiles or STANDARD_PROFILES
    rows = {f.key: file_rows(f) for f in corpus}
    out = {}
    for name, prof in profiles.items():
        theta = thresholds[name] if thresholds is not None else optimise_threshold(corpus, scores, prof, rows)[0]
        out[name] = score_at(corpus, scores, prof, theta, rows)
    return out


def split_half(corpus: Sequence[NabFile], scores: Mapping[str, Sequence[float]], profile: Profile,
               splits: int = 20, seed: int = 0) -> dict[str, Any]:
    """A check against fitting the benchmark: ``splits`` times, the files are cut at random into two
    halves, the threshold is optimised on one half and the other half is scored at it (normalised
    against its own windows). Returns the mean and range of those held-out scores, and the mean of
    the optimum on the held-out half itself, for comparison. A detector whose corpus-wide optimum
    leans on a few files shows a large gap here."""
    rows = {f.key: file_rows(f) for f in corpus}
    rng = np.random.default_rng(seed)
    held: list[float] = []
    best: list[float] = []
    for _ in range(splits):
        order = rng.permutation(len(corpus))
        half = len(corpus) // 2
        tune = [corpus[i] for i in order[:half]]
        test = [corpus[i] for i in order[half:]]
        theta = optimise_threshold(tune, scores, profile, rows)[0]
        held.append(_number(score_at(test, scores, profile, theta, rows).normalised))
        theta_test = optimise_threshold(test, scores, profile, rows)[0]
        best.append(_number(score_at(test, scores, profile, theta_test, rows).normalised))
    return {"splits": splits, "seed": seed, "held_out_mean": float(np.mean(held)), "held_out_min": float(min(held)),
            "held_out_max": float(max(held)), "optimum_on_held_out_mean": float(np.mean(best))}


# --------------------------------------------------------------------------------------------
# NAB's results layout


def result_path(out: str | Path, detector: str, key: str) -> Path:
    """``<out>/<detector>/<category>/<detector>_<file>``, NAB's layout."""
    category, name = key.split("/", 1)
    return Path(out) / detector / category / f"{detector}_{name}"


def write_results(out: str | Path, detector: str, corpus: Sequence[NabFile],
                  scores: Mapping[str, Sequence[float]]) -> list[Path]:
    """One CSV per file (``timestamp,value,anomaly_score,label``; label 1 inside a window)."""
    arr = _check_scores(corpus, scores)
    paths = []
    for f in corpus:
        path = result_path(out, detector, f.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        labels = f.labels()
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(RESULT_COLUMNS)
            for t, v, s, lab in zip(f.timestamps, f.values, arr[f.key].tolist(), labels, strict=True):
                w.writerow((t, v, repr(float(s)), lab))
        paths.append(path)
    return paths


def read_results(out: str | Path, detector: str, corpus: Sequence[NabFile]) -> dict[str, list[float]]:
    """The ``anomaly_score`` column of each file's results CSV (NAB's published folders too)."""
    got = {}
    for f in corpus:
        with open(result_path(out, detector, f.key), newline="") as fh:
            reader = csv.DictReader(fh)
            got[f.key] = [float(r["anomaly_score"]) for r in reader]
    return got


def published_results(root: str | Path | None = None) -> dict[str, dict[str, float]]:
    """The published scoreboard (``reference/final_results.json``): detector -> profile -> score."""
    return json.loads((nab_root(root) / "reference" / "final_results.json").read_text())


def _number(v: float | None) -> float:
    """A normalised score, which is None only for a half with no windows at all (then NaN)."""
    return float("nan") if v is None else v
