"""Anomaly detector runtime: isolation forest + robust statistics, calibrated, with adaptive thresholds.

The artifact's ONNX graph is one ``TreeEnsembleRegressor`` reproducing scikit-learn's
``IsolationForest.score_samples`` (higher = more normal). Post-processing, all in the manifest:

* two raw anomaly scores per row: ``-score_samples`` (isolation) and
  ``max(|z_robust|, |z_fast_shift|)`` (robust statistics: a point far from the series' median,
  or a fast mean far from the slow mean = level shift);
* each mapped to a calibrated score in [0, 1]: the tail probability ``p`` of the raw score under
  the training distribution of normal data (empirical CDF, with an exponential tail fitted
  beyond its 99th percentile), then ``min(1, -log10(p) / log10_range)``; so 0.33 is a 1-in-100
  point and 1.0 a 1-in-10^log10_range point, whatever the raw scale;
* the combined score ``w * isolation + (1 - w) * statistical``, ``w`` chosen on validation data.

In the job this combined score is the *evidence*: a young series alerts when it reaches the series'
:class:`AdaptiveThreshold`; once the series has learned its own past, :mod:`models.surprise` turns
it into a score normalised against that past, and the series alerts when that reaches its bar.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.artifact import LoadedModel
from models.features import DETECTOR_FEATURES
from models.runtime import ModelRuntime

NAME = "detector"
SEVERITIES = ("low", "medium", "high", "critical")
_STAT_COLUMNS = (0, 3)  # z_robust, z_fast_shift


class TailCalibration:
    """Raw anomaly score -> calibrated score in [0, 1] through a tail probability.

    ``quantiles``/``probs``: the empirical CDF of raw scores on normal data (increasing);
    ``tail_scale``: mean excess over the last quantile (exponential tail beyond it);
    ``log10_range``: ``-log10(p)`` that maps to 1.0.
    """

    __slots__ = ("_p", "_q", "_q_last", "_tail_p", "log10_range", "probs", "quantiles", "tail_scale")

    def __init__(self, quantiles: Sequence[float], probs: Sequence[float], tail_scale: float,
                 log10_range: float) -> None:
        q = [float(v) for v in quantiles]
        p = [float(v) for v in probs]
        if len(q) != len(p) or len(q) < 2 or any(b < a for a, b in itertools.pairwise(q)):
            raise ValueError("The 'quantiles' of TailCalibration must be a non-decreasing list matching 'probs'.")
        if not tail_scale > 0 or not log10_range > 0:
            raise ValueError(f"TailCalibration needs tail_scale > 0 and log10_range > 0. Got {tail_scale}, "
                             f"{log10_range}.")
        self.quantiles, self.probs = q, p
        self.tail_scale, self.log10_range = float(tail_scale), float(log10_range)
        self._q, self._p = np.asarray(q), np.asarray(p)
        self._q_last, self._tail_p = q[-1], 1.0 - p[-1]

    @classmethod
    def fit(cls, raw: np.ndarray, probs: Sequence[float], log10_range: float) -> TailCalibration:
        """Calibrate against ``raw`` scores of normal data."""
        raw = np.sort(np.asarray(raw, dtype=np.float64))
        q = np.quantile(raw, probs)
        q = np.maximum.accumulate(q)
        exceed = raw[raw > q[-1]] - q[-1]
        scale = float(exceed.mean()) if exceed.size else 0.0
        scale = max(scale, 1e-6 * max(abs(float(q[-1])), 1.0))
        return cls(q.tolist(), list(probs), scale, log10_range)

    def to_dict(self) -> dict[str, Any]:
        return {"quantiles": self.quantiles, "probs": self.probs, "tail_scale": self.tail_scale,
                "log10_range": self.log10_range}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TailCalibration:
        return cls(d["quantiles"], d["probs"], d["tail_scale"], d["log10_range"])

    def tail_prob(self, raw: np.ndarray) -> np.ndarray:
        """P(normal raw score >= raw), vectorised."""
        raw = np.asarray(raw, dtype=np.float64)
        body = 1.0 - np.interp(raw, self._q, self._p)
        tail = self._tail_p * np.exp(-np.maximum(raw - self._q_last, 0.0) / self.tail_scale)
        return np.where(raw > self._q_last, tail, body)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        p = np.maximum(self.tail_prob(raw), 1e-300)
        return np.minimum(-np.log10(p) / self.log10_range, 1.0)

    def one(self, raw: float) -> float:
        """Scalar version of ``__call__`` without numpy overhead (for batch-of-one scoring)."""
        q = self.quantiles
        if raw > self._q_last:
            lp = math.log10(self._tail_p) - (raw - self._q_last) / self.tail_scale / math.log(10.0)
            return min(-lp / self.log10_range, 1.0)
        i = bisect.bisect_right(q, raw)
        if i == 0:
            cdf = self.probs[0]
        else:
            lo, hi = q[i - 1], q[min(i, len(q) - 1)]
            plo, phi = self.probs[i - 1], self.probs[min(i, len(q) - 1)]
            cdf = phi if hi <= lo else plo + (phi - plo) * (raw - lo) / (hi - lo)
        p = max(1.0 - cdf, 1e-300)
        return min(-math.log10(p) / self.log10_range, 1.0)


class AdaptiveThreshold:
    """Per-series threshold ``max(base, ewma_mean + k * ewma_std)`` of that series' recent scores.

    A series that is noisy for a while (or stuck in a new regime) raises its own bar instead of
    paging on every point; a quiet series alerts at ``base``. Until ``warmup`` scores have been
    seen the threshold is ``base``. State is three floats: ``to_tuple()`` / ``from_tuple()``.
    """

    __slots__ = ("alpha", "base", "k", "mean", "n", "var", "warmup")

    def __init__(self, base: float, k: float, alpha: float = 0.05, warmup: int = 10,
                 mean: float = 0.0, var: float = 0.0, n: int = 0) -> None:
        if not 0.0 < base <= 1.0:
            raise ValueError(f"The 'base' parameter of AdaptiveThreshold must be in (0, 1]. Got {base!r}.")
        if not k >= 0.0:
            raise ValueError(f"The 'k' parameter of AdaptiveThreshold must be a non-negative float. Got {k!r}.")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"The 'alpha' parameter of AdaptiveThreshold must be in (0, 1]. Got {alpha!r}.")
        self.base, self.k, self.alpha, self.warmup = float(base), float(k), float(alpha), int(warmup)
        self.mean, self.var, self.n = float(mean), float(var), int(n)

    @property
    def threshold(self) -> float:
        if self.n < self.warmup:
            return self.base
        return max(self.base, self.mean + self.k * math.sqrt(self.var))

    def update(self, score: float) -> None:
        """Fold a new score of this series into the running mean and variance."""
        if self.n == 0:
            self.mean, self.var = float(score), 0.0
        else:
            d = score - self.mean
            self.mean += self.alpha * d
            self.var = (1.0 - self.alpha) * (self.var + self.alpha * d * d)
        self.n += 1

    def to_tuple(self) -> tuple[float, float, float]:
        """Compact state ``(mean, var, n)``; the parameters live in the model manifest."""
        return (self.mean, self.var, float(self.n))

    @classmethod
    def from_tuple(cls, state: Sequence[float], *, base: float, k: float, alpha: float = 0.05,
                   warmup: int = 10) -> AdaptiveThreshold:
        mean, var, n = state
        return cls(base, k, alpha, warmup, mean, var, int(n))


def adaptive_thresholds(scores: np.ndarray, base: float, k: float, alpha: float, warmup: int) -> np.ndarray:
    """Thresholds :class:`AdaptiveThreshold` gives each score of each series, vectorised.

    ``scores`` is (n_series, T) in time order; entry [s, t] is the threshold *before* folding
    ``scores[s, t]`` in (what the job compares the score against). Same arithmetic as the class.
    """
    n_series, T = scores.shape
    out = np.empty_like(scores, dtype=np.float64)
    mean = np.zeros(n_series)
    var = np.zeros(n_series)
    for t in range(T):
        if t < warmup:
            out[:, t] = base
        else:
            out[:, t] = np.maximum(base, mean + k * np.sqrt(var))
        x = scores[:, t]
        if t == 0:
            mean = x.astype(np.float64).copy()
        else:
            d = x - mean
            mean = mean + alpha * d
            var = (1.0 - alpha) * (var + alpha * d * d)
    return out


def severity(score: float, threshold: float, bands: Mapping[str, float]) -> str:
    """Severity from how far ``score`` is past ``threshold``, as a fraction of the room above it.

    ``bands`` maps "medium", "high", "critical" to the fraction needed (e.g. 0.1, 0.3, 0.6);
    anything at or below the threshold, or below the medium band, is "low".
    """
    room = max(1.0 - threshold, 1e-9)
    e = (score - threshold) / room
    if e >= bands["critical"]:
        return "critical"
    if e >= bands["high"]:
        return "high"
    if e >= bands["medium"]:
        return "medium"
    return "low"


class DetectorModel(ModelRuntime):
    """Scores detector feature rows (``DETECTOR_FEATURES`` order) in [0, 1]; higher = more anomalous."""

    name = NAME
    features = DETECTOR_FEATURES

    def __init__(self, loaded: LoadedModel) -> None:
        super().__init__(loaded)
        post = loaded.postprocessing
        self.iforest_calibration = TailCalibration.from_dict(post["calibration"]["iforest"])
        self.stat_calibration = TailCalibration.from_dict(post["calibration"]["stat"])
        self.weight = float(post["ensemble"]["iforest_weight"])
        th = post["threshold"]
        self.threshold_base, self.threshold_k = float(th["base"]), float(th["k"])
        self.threshold_alpha, self.threshold_warmup = float(th["alpha"]), int(th["warmup"])
        self.severity_bands: dict[str, float] = {k: float(post["severity_bands"][k])
                                                 for k in ("medium", "high", "critical")}
        ex = post["explain"]
        # per-series floors learned in retraining from "false positive" verdicts (absent: none)
        self.series_floor: dict[str, float] = {k: float(v) for k, v in post.get("series_threshold_floor", {}).items()}
        self._median = np.asarray(ex["median"], dtype=np.float64)
        self._iqr = np.asarray(ex["iqr"], dtype=np.float64)
        self._out = ["score_samples"]

    def score_samples(self, rows: np.ndarray) -> np.ndarray:
        """The isolation forest's ``score_samples`` (sklearn's sign: higher = more normal), one ONNX call."""
        x = np.ascontiguousarray(rows, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(DETECTOR_FEATURES):
            raise ValueError(f"rows must have shape (n, {len(DETECTOR_FEATURES)}). Got {x.shape}.")
        return self._onnx({"X": x}, self._out)[0]

    def components(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated (isolation, statistical) scores, each in [0, 1]."""
        x = np.ascontiguousarray(rows, dtype=np.float32)
        iso = self.iforest_calibration(-self.score_samples(x).astype(np.float64))
        stat = self.stat_calibration(np.abs(x[:, _STAT_COLUMNS]).max(axis=1).astype(np.float64))
        return iso, stat

    def score(self, rows: np.ndarray) -> np.ndarray:
        """Combined anomaly scores in [0, 1] for a batch of rows (n, 6); one ONNX call."""
        iso, stat = self.components(rows)
        return self.weight * iso + (1.0 - self.weight) * stat

    def score_one(self, row: Sequence[float]) -> float:
        """Combined anomaly score of one row (a list of 6 floats), without vectorisation overhead."""
        x = np.asarray(row, dtype=np.float32).reshape(1, -1)
        raw = -float(self._onnx({"X": x}, self._out)[0][0])
        stat = max(abs(float(x[0, 0])), abs(float(x[0, 3])))
        w = self.weight
        return w * self.iforest_calibration.one(raw) + (1.0 - w) * self.stat_calibration.one(stat)

    def new_threshold(self, state: Sequence[float] | None = None) -> AdaptiveThreshold:
        """A per-series threshold with this model's parameters (restored from ``state`` if given)."""
        if state is not None:
            return AdaptiveThreshold.from_tuple(state, base=self.threshold_base, k=self.threshold_k,
                                                alpha=self.threshold_alpha, warmup=self.threshold_warmup)
        return AdaptiveThreshold(self.threshold_base, self.threshold_k, self.threshold_alpha, self.threshold_warmup)

    def threshold_floor(self, series: str) -> float | None:
        """The lowest threshold this version allows for ``series`` (learned from feedback), if any."""
        return self.series_floor.get(series) if self.series_floor else None

    def severity(self, score: float, threshold: float) -> str:
        """"critical" | "high" | "medium" | "low" from the excess over ``threshold`` (bands in the manifest)."""
        return severity(score, threshold, self.severity_bands)

    def explain(self, row: Sequence[float]) -> list[tuple[str, float]]:
        """Each feature's deviation from its training median in training-IQR units, largest |value| first."""
        x = np.asarray(row, dtype=np.float64).reshape(-1)
        contrib = (x - self._median) / self._iqr
        order = np.argsort(-np.abs(contrib), kind="stable")
        return [(DETECTOR_FEATURES[i], float(contrib[i])) for i in order]
