"""Seasonal context of one series: a week of coarse buckets (mean, min, max) beside the short window.

The short window (:class:`models.features.SeriesWindow`) holds the last 32 samples: at a 5-minute
scrape that is under three hours, with no memory of yesterday. The seasonal context keeps, for each
bucket of the last week, the mean, the min and the max of the series' values in it, so that the
series knows what the same time yesterday and a week ago looked like.

The bucket width comes from the series' own spacing: the median of its first ``PROBE`` gaps,
rounded up to the nearest of ``WIDTHS_MIN`` (15 minutes for a 10-second to 15-minute scrape, an hour
for an hourly one). Until then the context is empty. A week at the finest width is 672 buckets,
13 bytes each (three float32 and a uint8 count): 8.8 KB of keyed state, the largest a context
gets (the budget for a whole series state is 16 KB).

The buckets are a ring over absolute bucket numbers ``ts // width``: the ring holds the week that
ends at the newest bucket seen (``head``), and moving the head forward clears the buckets it passes
over, so a bucket never holds data from a week before. An event older than the week is not kept
(the window and the detector still see it; the season has no slot for it).

:meth:`SeasonalContext.envelope` reads the buckets around a past time, a few buckets either side
(a day's pattern that comes a little earlier or later today still matches): the count-weighted mean,
the min and the max over them.

>>> c = SeasonalContext()
>>> HOUR = 3_600_000
>>> for i in range(24 * 8):  # eight days of an hourly series that repeats every day
...     c.update(i * HOUR, float(i % 24))
>>> c.width_ms == HOUR, c.buckets
(True, 168)
>>> ts = 24 * 8 * HOUR  # the next sample's time: the same hour yesterday held 0.0
>>> c.envelope(ts, DAY_MS, 0)
(0.0, 0.0, 0.0, 1)
>>> c.envelope(ts + 5 * HOUR, 7 * DAY_MS, 1)  # five hours ahead, a week before, one bucket either side
(5.0, 4.0, 6.0, 3)
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

SEASON_STATE = "season/v1"
MINUTE_MS = 60_000
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
WIDTHS_MIN = (15, 20, 30, 60)
PROBE = 8  # gaps measured before the width is fixed
PROFILE_DAYS = 7  # days a seasonal profile looks back over
F32_MAX = float(np.finfo(np.float32).max)
_NO_BUCKET = -(2**62)


def width_for(gap_ms: float) -> int:
    """The bucket width (ms) for a series whose samples come ``gap_ms`` apart: the smallest of
    ``WIDTHS_MIN`` that holds at least one sample, the widest for a sparser series."""
    for w in WIDTHS_MIN:
        if gap_ms <= w * MINUTE_MS:
            return w * MINUTE_MS
    return WIDTHS_MIN[-1] * MINUTE_MS


@dataclass(slots=True, eq=False)
class SeasonalContext:
    """A week of (mean, min, max, count) buckets of one series (state ``season/v1``)."""

    width_ms: int = 0  # 0: the width is not known yet
    head: int = _NO_BUCKET  # the absolute number of the newest bucket
    last_ts_ms: int = _NO_BUCKET  # while probing: the previous sample's time
    gaps: list[int] = field(default_factory=list)  # while probing: the gaps seen
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    lo: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    hi: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    count: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))

    _HEAD = struct.Struct("<BIqqB")
    VERSION = 1

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SeasonalContext) and self.to_bytes() == other.to_bytes()

    @property
    def buckets(self) -> int:
        return len(self.count)

    def update(self, ts_ms: int, x: float) -> None:
        """Fold value ``x`` observed at ``ts_ms`` into its bucket."""
        if not self.width_ms:
            self._probe(ts_ms)
            if not self.width_ms:
                return
        b = ts_ms // self.width_ms
        nb = len(self.count)
        if b > self.head:
            if b - self.head >= nb or self.head == _NO_BUCKET:
                self.count[:] = 0
            else:
                for k in range(self.head + 1, b + 1):
                    self.count[k % nb] = 0
            self.head = b
        elif b <= self.head - nb:
            return  # older than the week the ring holds
        i = b % nb
        v = min(max(x, -F32_MAX), F32_MAX)
        c = int(self.count[i])
        if c == 0:
            self.mean[i] = self.lo[i] = self.hi[i] = v
            self.count[i] = 1
            return
        c = min(c + 1, 255)  # past 255 samples the mean moves as an average of about the last 255
        self.count[i] = c
        self.mean[i] += (v - float(self.mean[i])) / c
        if v < self.lo[i]:
            self.lo[i] = v
        if v > self.hi[i]:
            self.hi[i] = v

    def _probe(self, ts_ms: int) -> None:
        if self.last_ts_ms != _NO_BUCKET and ts_ms > self.last_ts_ms:
            self.gaps.append(ts_ms - self.last_ts_ms)
        self.last_ts_ms = max(ts_ms, self.last_ts_ms)
        if len(self.gaps) >= PROBE:
            self.width_ms = width_for(float(np.median(self.gaps)))
            nb = WEEK_MS // self.width_ms
            self.mean, self.lo, self.hi = (np.zeros(nb, np.float32) for _ in range(3))
            self.count = np.zeros(nb, np.uint8)
            self.gaps, self.last_ts_ms = [], _NO_BUCKET

    def envelope(self, ts_ms: int, lag_ms: int, spread: int = 1) -> tuple[float, float, float, int] | None:
        """(mean, min, max, buckets) of the buckets within ``spread`` buckets of ``ts_ms - lag_ms``
        that hold data, the mean weighted by the buckets' counts; None when none does."""
        if not self.width_ms:
            return None
        b0 = (ts_ms - lag_ms) // self.width_ms
        nb = len(self.count)
        first, last = max(b0 - spread, self.head - nb + 1), min(b0 + spread, self.head)
        if first > last:
            return None
        idx = np.arange(first, last + 1) % nb
        c = self.count[idx].astype(np.float64)
        have = c > 0
        if not have.any():
            return None
        c, idx = c[have], idx[have]
        mean = float(np.dot(self.mean[idx].astype(np.float64), c) / c.sum())
        return mean, float(self.lo[idx].min()), float(self.hi[idx].max()), int(have.sum())

    def profile(self, targets_ms: np.ndarray, days: int = PROFILE_DAYS, spread: int = 1
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:func:`profiles` of this one context."""
        med, k, mad, latest = profiles([self], np.asarray(targets_ms, dtype=np.int64)[None, :], days, spread)
        return med[0], k[0], mad[0], latest[0]

    def to_bytes(self) -> bytes:
        head = self._HEAD.pack(self.VERSION, self.width_ms, self.head, self.last_ts_ms, len(self.gaps))
        gaps = struct.pack(f"<{len(self.gaps)}q", *self.gaps)
        nb = struct.pack("<I", len(self.count))
        return b"".join((head, gaps, nb, self.mean.tobytes(), self.lo.tobytes(), self.hi.tobytes(),
                         self.count.tobytes()))

    @classmethod
    def from_bytes(cls, data: bytes, offset: int = 0) -> tuple[SeasonalContext, int]:
        """The context encoded at ``offset`` of ``data``, and the offset just past it."""
        ver, width, head, last_ts, k = cls._HEAD.unpack_from(data, offset)
        if ver != cls.VERSION:
            raise ValueError(f"{SEASON_STATE}: cannot read state version {ver}")
        pos = offset + cls._HEAD.size
        gaps = list(struct.unpack_from(f"<{k}q", data, pos))
        pos += 8 * k
        (nb,) = struct.unpack_from("<I", data, pos)
        pos += 4
        arrays = []
        for dtype, size in ((np.float32, 4), (np.float32, 4), (np.float32, 4), (np.uint8, 1)):
            arrays.append(np.frombuffer(data, dtype, nb, pos).copy())
            pos += size * nb
        return cls(width, head, last_ts, gaps, *arrays), pos


@np.errstate(all="ignore")
def profiles(contexts: Sequence[SeasonalContext], targets_ms: np.ndarray, days: int = PROFILE_DAYS, spread: int = 1
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What each series did at the same time of day on each of the last ``days`` days before each of
    its target times (``targets_ms[k]``: series k's, an int64 array of shape (len(contexts), m)):
    per target, the median over those days of the day's count-weighted mean of the buckets within
    ``spread`` of the time (as :meth:`SeasonalContext.envelope`), the number of days that held data,
    the median absolute deviation of the days' means from that median, and the most recent day's
    mean; each of shape (len(contexts), m). A target with no such day gets NaN (and 0 days).

    Vectorised over the series that share a bucket width (one group per width) and computed
    silently: a numpy warning hangs PyFlink's embedded interpreter."""
    t_all = np.asarray(targets_ms, dtype=np.int64)
    n, m = t_all.shape
    med, mad, latest = np.full((n, m), np.nan), np.full((n, m), np.nan), np.full((n, m), np.nan)
    found = np.zeros((n, m), dtype=np.int64)
    groups: dict[int, list[int]] = {}
    for k, c in enumerate(contexts):
        if c.width_ms:
            groups.setdefault(c.width_ms, []).append(k)
    lags = np.arange(1, days + 1, dtype=np.int64) * DAY_MS
    offsets = np.arange(-spread, spread + 1, dtype=np.int64)
    for width, ks in groups.items():
        nb = WEEK_MS // width
        mean = np.stack([contexts[k].mean for k in ks])
        count = np.stack([contexts[k].count for k in ks])
        head = np.array([contexts[k].head for k in ks], dtype=np.int64)[:, None, None, None]
        b = ((t_all[ks][:, :, None] - lags) // width)[..., None] + offsets  # (g, m, days, 2 * spread + 1)
        inside = (b <= head) & (b > head - nb)
        idx = b % nb
        g = np.arange(len(ks))[:, None, None, None]
        weight = np.where(inside, count[g, idx], 0).astype(np.float64)
        tot = weight.sum(axis=3)
        day = np.where(tot > 0, (mean[g, idx].astype(np.float64) * weight).sum(axis=3) / np.maximum(tot, 1.0),
                       np.nan)  # (g, m, days)
        have = tot > 0
        kk = have.sum(axis=2)
        lo, hi = np.maximum(kk - 1, 0) // 2, np.minimum(kk // 2, days - 1)
        srt = np.sort(day, axis=2)  # NaNs last: the days with data come first
        mid = 0.5 * (np.take_along_axis(srt, lo[..., None], 2) + np.take_along_axis(srt, hi[..., None], 2))[..., 0]
        dev = np.sort(np.abs(day - mid[..., None]), axis=2)
        spread_ = 0.5 * (np.take_along_axis(dev, lo[..., None], 2) + np.take_along_axis(dev, hi[..., None], 2))[..., 0]
        first = np.take_along_axis(day, np.argmax(have, axis=2)[..., None], 2)[..., 0]
        ok = kk > 0
        med[ks] = np.where(ok, mid, np.nan)
        mad[ks] = np.where(ok, spread_, np.nan)
        latest[ks] = np.where(ok, first, np.nan)
        found[ks] = kk
    return med, found, mad, latest
