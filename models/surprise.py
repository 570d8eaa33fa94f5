"""Self-normalised anomaly scores: the detector's evidence as a probability against the series' own past.

The detector's combined score (:class:`models.detector.DetectorModel`) is calibrated on the
synthetic fleet, so the same value is rare on a quiet series and common on a noisy one. The
*surprise* of a sample turns it into a score that means the same on every series, in the manner
of the anomaly likelihood of Numenta's HTM detector (Ahmad et al., 2017):

1. the evidence is averaged over the series' last ``short`` samples (one odd point is less
   telling than a few in a row);
2. that average is compared with the distribution the same average has had on this series
   (exponentially weighted mean and variance, memory about ``1 / long_alpha`` samples): ``p`` is
   its Gaussian tail probability, and the score ``min(1, -log10(p + 1e-10) / 10)`` (0.5 is a
   1-in-100,000 average on that series, 1.0 one in 10^10);
3. a value beyond the range the series has shown, by more than ``range_tolerance`` of that range,
   where the detector's score is at least ``range_evidence_z`` spreads above its usual average and
   at least the series' own bar as a young series (``prior_bar``, its adaptive threshold),
   scores 1.0 (HTM's "spatial anomaly", there without the second condition); a flagged value
   moves the edge of the range only ``range_absorb`` of the way towards itself, so that a spike
   leaves the range nearly as it was (the next spike is a surprise again) while a lasting shift
   is absorbed within tens of samples;
4. only the first sample of a run of extreme scores counts: for ``refractory`` samples after a
   score at or above ``alert_at``, scores are multiplied by ``damp`` (< ``alert_at``, so a
   damped score never reaches the bar again within the run), unless the detector says more of a
   sample than of any before it in the run (a stronger event: it counts, and opens a new period).

Until a series has ``learn`` samples its surprise is 0: it has no past to be surprised against.
Everything is causal: a sample's score uses only that series' earlier samples.

State per series (:class:`SurpriseState`, a fixed-size encoding ``surprise/v1``) is updated for a
whole round of series at once, column-wise (:func:`surprise_round`).

A steady series scores 0.03 (p = 0.5) once it has learned, a value far beyond its range 1.0, and
the sample after that is damped:

>>> cfg = SurpriseConfig(learn=3, range_tolerance=0.05)
>>> states = [SurpriseState()]
>>> [round(float(surprise_round(states, np.array([e]), np.array([x]), cfg)[0]), 3)
...  for e, x in [(0.1, 1.0), (0.1, 2.0), (0.1, 1.5), (0.1, 1.2), (0.9, 9.0), (0.1, 1.1)]]
[0.0, 0.0, 0.0, 0.03, 1.0, 0.056]
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr

from models.config import SurpriseConfig

SURPRISE_STATE = "surprise/v1"
MIN_SD = 1e-3  # the evidence is in [0, 1]: a spread below this is no spread
P_FLOOR = 1e-10


@dataclass(slots=True)
class SurpriseState:
    """What the surprise of one series remembers: its recent evidence, the distribution of its
    average, the range of values seen, and the samples left in a refractory period."""

    recent: list[float] = field(default_factory=list)  # the last ``short`` evidence values, oldest first
    n: int = 0
    mean: float = 0.0
    var: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf
    quiet: int = 0
    flagged: float = math.nan  # the most extreme value of the latest run of flagged samples
    flagged_evidence: float = 0.0  # the detector's highest score in that run
    since_flag: int = 0  # samples since the latest flagged one

    _HEAD = struct.Struct("<BIIddddddI")
    VERSION = 1

    def to_bytes(self) -> bytes:
        head = self._HEAD.pack(self.VERSION, self.n, self.quiet, self.mean, self.var, self.lo, self.hi, self.flagged,
                               self.flagged_evidence, self.since_flag)
        return head + struct.pack("<B", len(self.recent)) + struct.pack(f"<{len(self.recent)}d", *self.recent)

    @classmethod
    def from_bytes(cls, data: bytes, offset: int = 0) -> tuple[SurpriseState, int]:
        """The state encoded at ``offset`` of ``data``, and the offset just past it."""
        ver, n, quiet, mean, var, lo, hi, flagged, flagged_ev, since = cls._HEAD.unpack_from(data, offset)
        if ver != cls.VERSION:
            raise ValueError(f"{SURPRISE_STATE}: cannot read state version {ver}")
        pos = offset + cls._HEAD.size
        k = data[pos]
        recent = list(struct.unpack_from(f"<{k}d", data, pos + 1))
        return cls(recent, n, mean, var, lo, hi, quiet, flagged, flagged_ev, since), pos + 1 + 8 * k

    def accept_flagged(self) -> None:
        """A person said the latest flagged value was normal for this series (a "false_positive"
        verdict): the range stretches to hold it, so a value like it is no longer beyond the range."""
        if not math.isnan(self.flagged):
            self.lo, self.hi = min(self.lo, self.flagged), max(self.hi, self.flagged)


# computes silently: a numpy warning issued on a task thread of PyFlink's embedded interpreter hung the
# job once (see models.features); inf - inf before a series has a range is expected and masked
@np.errstate(all="ignore")
def surprise_round(states: Sequence[SurpriseState], evidence: np.ndarray, values: np.ndarray,
                   cfg: SurpriseConfig, update: bool = True, prior_bar: np.ndarray | float | None = None
                   ) -> np.ndarray:
    """Surprise of one sample of each of several series: ``evidence`` (the detector's scores) and
    ``values`` (the samples) are parallel to ``states``. Returns the surprises; the states are
    updated in place unless ``update`` is false (a what-if, e.g. for a shadow model).

    ``prior_bar`` is the bar the caller applies to the evidence of young series (the series'
    adaptive threshold), one per series or one for all. A range break counts only where the
    evidence reaches it too (the range confirms what the detector half-sees; noise setting a new
    record on a short history does not page). A sample is *flagged* when its surprise reaches
    ``alert_at`` or, while the series learns, its evidence reaches ``prior_bar`` (None: no prior,
    no such conditions). Only flagged samples stretch the range partially (``range_absorb``); the
    others widen it to hold them, so that the range is that of the samples taken as normal."""
    n = len(states)
    ev = np.asarray(evidence, dtype=np.float64)
    x = np.asarray(values, dtype=np.float64)
    count = np.fromiter((s.n for s in states), dtype=np.int64, count=n)
    mean = np.fromiter((s.mean for s in states), dtype=np.float64, count=n)
    var = np.fromiter((s.var for s in states), dtype=np.float64, count=n)
    lo = np.fromiter((s.lo for s in states), dtype=np.float64, count=n)
    hi = np.fromiter((s.hi for s in states), dtype=np.float64, count=n)
    quiet = np.fromiter((s.quiet for s in states), dtype=np.int64, count=n)
    flagged_ev = np.fromiter((s.flagged_evidence for s in states), dtype=np.float64, count=n)
    short = cfg.short
    # the average of the last ``short`` evidence values, this one included
    kept = [s.recent[-(short - 1):] if short > 1 else [] for s in states]
    avg = np.fromiter(((sum(k) + e) / (len(k) + 1) for k, e in zip(kept, ev.tolist(), strict=True)),
                      dtype=np.float64, count=n)
    learned = count >= cfg.learn
    sd = np.maximum(np.sqrt(np.maximum(var, 0.0)), MIN_SD)
    z = (avg - mean) / sd
    p = ndtr(-z)
    score = np.where(learned, np.minimum(-np.log10(p + P_FLOOR) / 10.0, 1.0), 0.0)
    span = hi - lo
    tol = span * cfg.range_tolerance
    beyond = learned & (span > 0) & ((x > hi + tol) | (x < lo - tol)) & ((ev - mean) / sd >= cfg.range_evidence_z)
    if prior_bar is not None:
        beyond &= ev >= prior_bar
    score = np.where(beyond, 1.0, score)
    # in a refractory period, scores are damped, unless the detector says more than it did of any
    # flagged sample of the run (a stronger event than the one already flagged)
    damped = (quiet > 0) & ~((score >= cfg.alert_at) & (ev > flagged_ev))
    undamped = score
    score = np.where(damped, score * cfg.damp, score)
    if not update:
        return score
    k = np.maximum(cfg.long_alpha, 1.0 / (count + 1))
    d = avg - mean
    new_mean = mean + k * d
    new_var = (1.0 - k) * (var + k * d * d)
    new_quiet = np.where(score >= cfg.alert_at, cfg.refractory, np.where(damped, quiet - 1, 0))
    # flagged: at the bar before any damping (a refractory period's samples belong to the run that opened it)
    flagged = np.where(learned, undamped >= cfg.alert_at, False if prior_bar is None else ev >= prior_bar)
    # a flagged value beyond the range moves its edge only ``range_absorb`` of the way: a short
    # excursion leaves the range nearly as it was, a lasting shift is absorbed
    absorb = np.where(flagged, cfg.range_absorb, 1.0)
    new_lo = np.where(x < lo, np.where(np.isfinite(lo), lo + absorb * (x - lo), x), lo)
    new_hi = np.where(x > hi, np.where(np.isfinite(hi), hi + absorb * (x - hi), x), hi)
    for i, s in enumerate(states):
        recent = kept[i]
        recent.append(float(ev[i]))
        s.recent = recent
        s.n = int(count[i]) + 1
        s.mean, s.var = float(new_mean[i]), float(new_var[i])
        s.lo, s.hi = float(new_lo[i]), float(new_hi[i])
        s.quiet = int(new_quiet[i])
        if score[i] >= cfg.alert_at or (flagged[i] and not learned[i]):
            # within a run (flags less than ``refractory`` samples apart) keep its most extreme value
            v = float(x[i])
            mid = 0.5 * (s.lo + s.hi) if math.isfinite(s.lo + s.hi) else v
            if s.since_flag > cfg.refractory or math.isnan(s.flagged) or abs(v - mid) >= abs(s.flagged - mid):
                s.flagged = v
            new_run = s.since_flag > cfg.refractory or s.flagged_evidence == 0.0
            s.flagged_evidence = float(ev[i]) if new_run else max(s.flagged_evidence, float(ev[i]))
            s.since_flag = 0
        else:
            s.since_flag = min(s.since_flag + 1, 2**31)
    return score
