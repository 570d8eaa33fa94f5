"""Feature schemas shared by training and the running job.

Everything a model sees is computed here, once, so that the offline training package and the
streaming operators cannot drift apart. Each schema is an ordered tuple of feature names; the
artifact manifest stores it and the loader refuses a model whose schema differs.

The per-series state (:class:`SeriesWindow`) is O(1) to update: slow and fast exponentially
weighted statistics, a Holt level/trend pair in units per minute, and a ring buffer of the last
``HISTORY`` values for robust (median/MAD) statistics. It encodes to a compact, explicit byte
layout (``SERIES_WINDOW_STATE``), never a pickle.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.season import MINUTE_MS, SeasonalContext, profiles

HISTORY = 32
WARMUP = 20
SERIES_WINDOW_STATE = "series_window/v1"

ALPHA_SLOW = 0.02
ALPHA_FAST = 0.3
ALPHA_LEVEL = 0.2
ALPHA_TREND = 0.05
ALPHA_TREND_LONG = 0.005
CLIP = 10.0

DETECTOR_FEATURES: tuple[str, ...] = (
    "z_robust",
    "z_ewma",
    "z_delta",
    "z_fast_shift",
    "vol_ratio",
    "trend_z",
)

FORECAST_HORIZONS_MIN: tuple[int, ...] = (5, 30, 60, 360, 1440)

# One row per (series, horizon), in units of the series' robust scale around its robust median (the
# anchor); the season_* features come from the series' week of context (models.season): the median
# over the last seven days of the same time of day at the target time and now, how many days held
# data, how far the days disagree, and the most recent day alone (seasonal naive).
FORECASTER_FEATURES: tuple[str, ...] = (
    "z_robust",
    "z_level_gap",
    "trend_short_h",
    "trend_long_h",
    "log_horizon",
    "vol",
    "season_at_target",
    "season_now",
    "season_days",
    "season_spread",
    "season_last_day",
)

# The entity (service instance) vector the clusterer sees: one slot per metric kind, each mapped
# to a comparable, roughly unit scale. Missing kinds are imputed by the operator.
ENTITY_METRICS: tuple[str, ...] = (
    "cpu_util",
    "memory_util",
    "latency_p99_ms",
    "error_rate",
    "requests_per_s",
)
CLUSTERER_FEATURES: tuple[str, ...] = tuple(f"entity_{m}" for m in ENTITY_METRICS)

CATEGORIES: tuple[str, ...] = ("latency", "errors", "saturation", "traffic", "peer_drift")
PRIORITIES: tuple[str, ...] = ("P1", "P2", "P3", "P4")
TEAMS: tuple[str, ...] = ("edge", "playback", "discovery", "payments", "sre")
METRIC_KINDS: tuple[str, ...] = ENTITY_METRICS + ("disk_util", "plays_per_min")
TEXT_BUCKETS = 16

CLASSIFIER_FEATURES: tuple[str, ...] = (
    (
        "score",
        "score_margin",
        "z_robust",
        "z_delta",
        "z_fast_shift",
        "trend_z",
        "cluster_outlier",
        "breach_soon",
        "log_time_to_breach",
        "criticality",
        "related_anomalies",
        "hour_sin",
        "hour_cos",
    )
    + tuple(f"moved_{m}" for m in ENTITY_METRICS)
    + tuple(f"kind_{k}" for k in METRIC_KINDS + ("other",))
    + tuple(f"owner_{t}" for t in TEAMS + ("unknown",))
    + tuple(f"text_{i}" for i in range(TEXT_BUCKETS))
)


def _slog(v: float) -> float:
    """Signed log1p, clipped: keeps tails informative without letting them dominate."""
    if not math.isfinite(v):
        v = math.copysign(1e12, v) if not math.isnan(v) else 0.0
    r = math.copysign(math.log1p(abs(v)), v)
    return CLIP if r > CLIP else (-CLIP if r < -CLIP else r)


@dataclass(slots=True)
class SeriesWindow:
    """Rolling statistics and a short history of one series (one metric of one entity)."""

    n: int = 0
    last_ts_ms: int = 0
    last: float = 0.0
    mean: float = 0.0
    var: float = 0.0
    fast: float = 0.0
    level: float = 0.0
    trend: float = 0.0
    trend_long: float = 0.0
    absdelta: float = 0.0
    ring: list[float] = field(default_factory=list)
    head: int = 0

    _FMT = struct.Struct("<BIqddddddddd")
    VERSION = 1

    def history(self) -> list[float]:
        """The ring buffer's values, oldest first."""
        if len(self.ring) < HISTORY:
            return list(self.ring)
        return self.ring[self.head :] + self.ring[: self.head]

    def robust(self) -> tuple[float, float]:
        """(median, scale) of the history; the scale never collapses to zero."""
        vals = sorted(self.ring)
        k = len(vals)
        med = vals[k // 2] if k % 2 else 0.5 * (vals[k // 2 - 1] + vals[k // 2])
        devs = sorted(abs(v - med) for v in vals)
        mad = devs[k // 2] if k % 2 else 0.5 * (devs[k // 2 - 1] + devs[k // 2])
        scale = max(1.4826 * mad, 0.25 * math.sqrt(max(self.var, 0.0)), 1e-3 * abs(med), 1e-6)
        return med, scale

    def detector_features(self, x: float, robust: tuple[float, float] | None = None) -> list[float]:
        """Features of value ``x`` against the history *before* ``x`` (call before :meth:`update`).

        ``robust`` is :meth:`robust` of this same state when the caller has it already.
        """
        med, scale = robust or self.robust()
        sd = max(math.sqrt(max(self.var, 0.0)), scale * 0.5)
        fast_new = self.fast + ALPHA_FAST * (x - self.fast)
        delta = x - self.last
        return [
            _slog((x - med) / scale),
            _slog((x - self.mean) / sd),
            _slog(delta / scale),
            _slog((fast_new - self.mean) / sd),
            _slog(math.log((abs(delta) + 1e-9 * scale + 1e-12) / (self.absdelta + 1e-9 * scale + 1e-12))),
            _slog(self.trend * 60.0 / scale),
        ]

    def update(self, ts_ms: int, x: float) -> None:
        """Fold value ``x`` observed at ``ts_ms`` into the state."""
        if self.n == 0:
            self.mean = self.fast = self.level = self.last = x
            self.var = 0.0
        else:
            dt_min = max((ts_ms - self.last_ts_ms) / 60000.0, 1e-3)
            d = x - self.mean
            self.mean += ALPHA_SLOW * d
            self.var = (1 - ALPHA_SLOW) * (self.var + ALPHA_SLOW * d * d)
            self.fast += ALPHA_FAST * (x - self.fast)
            prev_level = self.level
            self.level = ALPHA_LEVEL * x + (1 - ALPHA_LEVEL) * (self.level + self.trend * dt_min)
            slope = (self.level - prev_level) / dt_min
            self.trend += ALPHA_TREND * (slope - self.trend)
            self.trend_long += ALPHA_TREND_LONG * (slope - self.trend_long)
            self.absdelta += ALPHA_SLOW * (abs(x - self.last) - self.absdelta)
            self.last = x
        self.last_ts_ms = ts_ms
        self.n += 1
        if len(self.ring) < HISTORY:
            self.ring.append(x)
        else:
            self.ring[self.head] = x
            self.head = (self.head + 1) % HISTORY

    @property
    def warm(self) -> bool:
        return self.n >= WARMUP

    def to_bytes(self) -> bytes:
        """Compact encoding: a fixed header then the ring as float64, oldest first."""
        hist = self.history()
        head = self._FMT.pack(
            self.VERSION,
            self.n,
            self.last_ts_ms,
            self.last,
            self.mean,
            self.var,
            self.fast,
            self.level,
            self.trend,
            self.trend_long,
            self.absdelta,
            0.0,
        )
        return head + struct.pack(f"<{len(hist)}d", *hist)

    @classmethod
    def from_bytes(cls, data: bytes) -> SeriesWindow:
        fmt = cls._FMT
        (ver, n, ts, last, mean, var, fast, level, trend, trend_long, absdelta, _r) = fmt.unpack_from(data)
        if ver != cls.VERSION:
            raise ValueError(f"{SERIES_WINDOW_STATE}: cannot read state version {ver}")
        k = (len(data) - fmt.size) // 8
        ring = list(struct.unpack_from(f"<{k}d", data, fmt.size))
        return cls(n, ts, last, mean, var, fast, level, trend, trend_long, absdelta, ring, 0)


def _slog_rows(v: np.ndarray) -> np.ndarray:
    """:func:`_slog` of every element (non-finite values as :func:`_slog` maps them)."""
    v = np.nan_to_num(v, nan=0.0, posinf=1e12, neginf=-1e12)
    return np.clip(np.copysign(np.log1p(np.abs(v)), v), -CLIP, CLIP)


# The vectorised functions below meet the same overflows and 0/0 as the scalar ones (huge or
# hostile values) and map the results as they do. numpy would warn, and a warning issued on a task
# thread of PyFlink's embedded interpreter hung the job (py-spy: parked in the warning's ``np.log``
# line): they compute silently.
@np.errstate(all="ignore")
def robust_rows(rings: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`SeriesWindow.robust` of several series with full rings at once: ``rings`` is
    (n, HISTORY), ``var`` their slow variances; returns (median, scale) arrays."""
    med = np.median(rings, axis=1)
    mad = np.median(np.abs(rings - med[:, None]), axis=1)
    scale = np.maximum.reduce([1.4826 * mad, 0.25 * np.sqrt(np.maximum(var, 0.0)), 1e-3 * np.abs(med),
                               np.full_like(med, 1e-6)])
    return med, scale


@np.errstate(all="ignore")
def detector_feature_rows(x: np.ndarray, med: np.ndarray, scale: np.ndarray, w: dict[str, np.ndarray]
                          ) -> np.ndarray:
    """:meth:`SeriesWindow.detector_features` of several series at once: values ``x``, their robust
    (median, scale), and ``w`` the windows' fields ``var``, ``mean``, ``fast``, ``last``,
    ``absdelta`` and ``trend`` as arrays. Returns (n, 6) float64."""
    sd = np.maximum(np.sqrt(np.maximum(w["var"], 0.0)), scale * 0.5)
    mean = w["mean"]
    fast_new = w["fast"] + ALPHA_FAST * (x - w["fast"])
    delta = x - w["last"]
    tiny = 1e-9 * scale + 1e-12
    raw = np.stack([
        (x - med) / scale,
        (x - mean) / sd,
        delta / scale,
        (fast_new - mean) / sd,
        np.log((np.abs(delta) + tiny) / (w["absdelta"] + tiny)),
        w["trend"] * 60.0 / scale,
    ], axis=1)
    return _slog_rows(raw)


@np.errstate(all="ignore")
def forecaster_rows(wins: Sequence[SeriesWindow], seasons: Sequence[SeasonalContext], now_ms: Sequence[int],
                    horizons_min: Sequence[float] | np.ndarray = FORECAST_HORIZONS_MIN
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The forecaster's input rows for several series at once: ``wins[k]`` and ``seasons[k]`` are
    series k's window and seasonal context after its sample at ``now_ms[k]``. Returns the rows
    ((n * horizons, 11) float32, each series' horizons together, ``FORECASTER_FEATURES`` order),
    and per series the anchor (its robust median) and scale: the model predicts
    ``(x(now + h) - anchor) / scale``."""
    n, nh = len(wins), len(horizons_min)
    h = np.asarray(horizons_min, dtype=np.float64)
    med, scale = np.empty(n), np.empty(n)
    full = [k for k, w in enumerate(wins) if len(w.ring) == HISTORY]
    if full:
        med[full], scale[full] = robust_rows(np.array([wins[k].ring for k in full]),
                                             np.array([wins[k].var for k in full]))
    for k, w in enumerate(wins):
        if len(w.ring) != HISTORY:
            med[k], scale[k] = w.robust()
    col = {f: np.array([getattr(w, f) for w in wins], dtype=np.float64) for f in ("last", "level", "var", "trend",
                                                                                  "trend_long")}
    # the seasonal profile now (column 0) and at each target time, per series
    offsets = np.concatenate(([0], np.rint(h * MINUTE_MS))).astype(np.int64)
    p_med, p_days, p_mad, p_last = profiles(seasons, np.asarray(now_ms, dtype=np.int64)[:, None] + offsets[None, :])
    found = p_days[:, 1:] > 0
    sc = scale[:, None]
    rows = np.empty((n, nh, len(FORECASTER_FEATURES)), dtype=np.float32)
    rows[:, :, 0] = _slog_rows((col["last"] - med) / scale)[:, None]
    rows[:, :, 1] = _slog_rows((col["last"] - col["level"]) / scale)[:, None]
    rows[:, :, 2] = _slog_rows(col["trend"][:, None] * h[None, :] / sc)
    rows[:, :, 3] = _slog_rows(col["trend_long"][:, None] * h[None, :] / sc)
    rows[:, :, 4] = np.log1p(h)[None, :]
    rows[:, :, 5] = _slog_rows(np.sqrt(np.maximum(col["var"], 0.0)) / scale)[:, None]
    rows[:, :, 6] = np.where(found, _slog_rows((p_med[:, 1:] - med[:, None]) / sc), 0.0)
    rows[:, :, 7] = np.where(p_days[:, :1] > 0, _slog_rows((p_med[:, :1] - med[:, None]) / sc), 0.0)
    rows[:, :, 8] = p_days[:, 1:]
    rows[:, :, 9] = np.where(found, _slog_rows(p_mad[:, 1:] / sc), -1.0)
    rows[:, :, 10] = np.where(found, _slog_rows((p_last[:, 1:] - med[:, None]) / sc), 0.0)
    return rows.reshape(n * nh, len(FORECASTER_FEATURES)), med, scale


def value_lattice(wins: Sequence[SeriesWindow]) -> tuple[np.ndarray, np.ndarray]:
    """Per series, whether every value in its short window is a whole number (a count) and whether
    none is negative: :meth:`models.forecaster.ForecasterModel.values` keeps a forecast on that
    lattice, so that a counter's forecast is a whole number and a non-negative series' is not
    negative. The model predicts a median; off the lattice a forecast of 0.3 for a counter that is
    mostly 0 is wrong every time it is 0.

    >>> w = SeriesWindow()
    >>> for t, x in enumerate([0.0, 2.0, 0.0, 5.0]):
    ...     w.update(t * 60_000, x)
    >>> value_lattice([w, SeriesWindow()])
    (array([ True, False]), array([ True, False]))
    """
    whole, nonneg = np.zeros(len(wins), dtype=bool), np.zeros(len(wins), dtype=bool)
    by_length: dict[int, list[int]] = {}  # one array op per window length (nearly all are full)
    for k, w in enumerate(wins):
        if w.ring:
            by_length.setdefault(len(w.ring), []).append(k)
    for ks in by_length.values():
        r = np.array([wins[k].ring for k in ks], dtype=np.float64)
        whole[ks] = (r == np.round(r)).all(axis=1)
        nonneg[ks] = r.min(axis=1) >= 0.0
    return whole, nonneg


def entity_vector(latest: dict[str, float]) -> list[float | None]:
    """Map an entity's latest metric values to the clusterer's comparable scale (None = missing)."""
    out: list[float | None] = []
    for m in ENTITY_METRICS:
        v = latest.get(m)
        if v is None:
            out.append(None)
        elif m in ("cpu_util", "memory_util"):
            out.append(v / 100.0)
        elif m == "latency_p99_ms":
            out.append(math.log10(max(v, 0.1)) - 2.0)
        elif m == "error_rate":
            out.append(math.log10(max(v, 1e-5)) / 2.0 + 1.0)
        else:
            out.append(math.log10(max(v, 0.0) + 1.0) / 2.0 - 1.0)
    return out


def metric_kind(metric: str) -> str:
    """The known metric kind a metric name belongs to, or ``"other"``."""
    if metric in METRIC_KINDS:
        return metric
    for k in METRIC_KINDS:
        if metric.startswith(k) or k.split("_")[0] in metric.split("_")[:1]:
            return k
    return "other"


def text_buckets(text: str) -> list[float]:
    """Hashed bag of words (crc32 of lower-cased tokens), L1-normalised."""
    out = [0.0] * TEXT_BUCKETS
    tokens = [t for t in "".join(c if c.isalnum() else " " for c in text.lower()).split() if t]
    for t in tokens:
        out[zlib.crc32(t.encode()) % TEXT_BUCKETS] += 1.0
    total = sum(out)
    return [v / total for v in out] if total else out


def classifier_features(c: dict) -> list[float]:
    """Feature row of a candidate alert ``c`` in ``CLASSIFIER_FEATURES`` order.

    ``c`` keys: score, threshold, det (detector feature list), cluster_outlier (0..1),
    time_to_breach_s (None if no breach within the largest horizon), criticality (0..1),
    related_anomalies (count), ts_ms, metric, owner, text, and moved (the entity's deviation from
    its cluster's centroid per ``ENTITY_METRICS``; zeros when absent): which of its metrics moved,
    what tells the category of a cluster-triggered candidate, whose own metric is only the one
    whose sample carried the evaluation.
    """
    det = c["det"]
    ttb = c.get("time_to_breach_s")
    hour = (c["ts_ms"] / 3_600_000.0) % 24.0
    kind = metric_kind(c["metric"])
    owner = c.get("owner") if c.get("owner") in TEAMS else "unknown"
    row = [
        c["score"],
        c["score"] - c["threshold"],
        det[0],
        det[2],
        det[3],
        det[5],
        c.get("cluster_outlier", 0.0),
        1.0 if ttb is not None else 0.0,
        math.log1p(ttb / 60.0) if ttb is not None else math.log1p(FORECAST_HORIZONS_MIN[-1] * 2),
        c.get("criticality", 0.5),
        math.log1p(c.get("related_anomalies", 0)),
        math.sin(2 * math.pi * hour / 24.0),
        math.cos(2 * math.pi * hour / 24.0),
    ]
    row += list(c.get("moved") or (0.0,) * len(ENTITY_METRICS))
    row += [1.0 if kind == k else 0.0 for k in METRIC_KINDS + ("other",)]
    row += [1.0 if owner == t else 0.0 for t in TEAMS + ("unknown",)]
    row += text_buckets(c.get("text", c["metric"]))
    return row
