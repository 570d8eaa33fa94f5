# ruff: noqa: SLF001
# (the drift test restores river's PageHinkley from each series' state: its statistics are private)
"""Per-series drift statistics: river's Page-Hinkley test, its state kept as seven numbers.

The job keeps one test per signal per series (the detector's score, the forecaster's one-step
residual) in keyed state. A river detector object per series would be a pickled object graph in
state; instead one :class:`river.drift.PageHinkley` per operator does the arithmetic, and its few
fields are loaded from and saved to a tuple around each update. ``tests/models/test_drift.py``
checks that this equals one uninterrupted river detector on the same values.
"""

from __future__ import annotations

import math
import struct

from models.config import DriftConfig

# (n, mean, sum_increase, sum_decrease, min_increase, max_decrease, drift_detected)
PHState = tuple[float, float, float, float, float, float, bool]
PH_STRUCT = struct.Struct("<dddddd?")
PH_EMPTY: PHState = (0.0, 0.0, 0.0, 0.0, math.inf, -1.0, False)  # river's freshly reset values


class DriftTest:
    """Page-Hinkley on one signal, over states held elsewhere (one instance serves every series)."""

    def __init__(self, cfg: DriftConfig) -> None:
        # imported here, not at module level: river pulls in scipy's native extensions, which must not
        # be imported first from a Flink task thread (see operators.functions.preload_native)
        from river.drift import PageHinkley

        self.cfg = cfg
        self._ph = PageHinkley(min_instances=cfg.min_instances, delta=cfg.delta, threshold=cfg.threshold,
                               alpha=cfg.alpha, mode="both")

    def update(self, state: PHState | None, x: float) -> tuple[PHState, bool]:
        """Fold ``x`` into ``state`` (``None``: a new series); the new state and whether drift was detected.

        river's PageHinkley keeps its statistics in private attributes and offers no way to save or
        restore them; one instance is loaded with each series' state, updated and read back."""
        ph = self._ph
        n, mean, s_inc, s_dec, min_inc, max_dec, detected = state or PH_EMPTY
        ph._x_mean.n, ph._x_mean._mean = n, mean
        ph._sum_increase, ph._sum_decrease = s_inc, s_dec
        ph._min_increase, ph._max_decrease = min_inc, max_dec
        ph._drift_detected = detected
        ph.update(x)
        out = (float(ph._x_mean.n), ph._x_mean._mean, ph._sum_increase, ph._sum_decrease, ph._min_increase,
               ph._max_decrease, bool(ph.drift_detected))
        return out, out[6]

    def stats(self, state: PHState) -> dict[str, float]:
        """The test's figures for a drift event: samples, mean, and both one-sided statistics."""
        n, mean, s_inc, s_dec, min_inc, max_dec, _ = state
        return {"n": n, "mean": round(mean, 6), "increase": round(s_inc - min_inc, 4),
                "decrease": round(max_dec - s_dec, 4), "threshold": self.cfg.threshold, "delta": self.cfg.delta}
