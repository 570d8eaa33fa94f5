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
from dataclasses import dataclass, field

import numpy as np

SEASON_STATE = "season/v1"
MINUTE_MS = 60_000
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
WIDTHS_MIN = (15, 20, 30, 60)
PROBE = 8  # gaps measured before the width is fixed
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
