"""Multi-horizon seasonal forecaster runtime with split-conformal prediction intervals and time to breach.

The ONNX graph is a gradient-boosted regressor on ``FORECASTER_FEATURES``: one row per horizon,
built by :func:`models.features.forecaster_rows` from the series' short window and its week of
seasonal context (the same time of day over the last seven days, at the target time and now),
predicting ``(x(t+h) - anchor) / scale`` where ``anchor`` is the window's robust median and
``scale`` its robust scale. It is global over series: one model learned from the fleet's scenarios
and a synthetic corpus of series of many shapes and sampling intervals (:mod:`training.corpus`).
The job asks for the horizons in ``FORECAST_HORIZONS_MIN``; the backtest for any horizon (the
horizon is a feature). Intervals are split-conformal: the manifest holds, per job horizon and
level, the quantile of ``|residual|`` (in scale units) on data held out from training, so an 80%
interval covers about 80% of futures like those it was calibrated on; between and beyond those
horizons :meth:`ForecasterModel.halfwidth_at` interpolates in log horizon. A point forecast stays on
its series' lattice (:meth:`ForecasterModel.values`): a whole number for a counter, not negative for
a series that is never negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from models.artifact import LoadedModel
from models.features import FORECAST_HORIZONS_MIN, FORECASTER_FEATURES
from models.runtime import ModelRuntime

NAME = "forecaster"
LEVELS = ("0.8", "0.95")


class ForecasterModel(ModelRuntime):
    """Point forecasts and intervals for the horizons the model was trained on."""

    name = NAME
    features = FORECASTER_FEATURES

    def __init__(self, loaded: LoadedModel) -> None:
        super().__init__(loaded)
        post = loaded.postprocessing
        self.horizons: tuple[int, ...] = tuple(int(h) for h in post["horizons_min"])
        if self.horizons != FORECAST_HORIZONS_MIN:
            raise ValueError(f"forecaster {loaded.version} was trained for horizons {self.horizons}, the features "
                             f"are built for {FORECAST_HORIZONS_MIN}")
        self.interval_halfwidth: dict[str, list[float]] = {
            lvl: [float(v) for v in post["conformal"]["abs_residual_quantile"][lvl]] for lvl in LEVELS}
        self._out = ["y"]

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Normalised predictions ``(x(t+h) - anchor) / scale`` for feature rows (n, 11); one ONNX call."""
        x = np.ascontiguousarray(rows, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(FORECASTER_FEATURES):
            raise ValueError(f"rows must have shape (n, {len(FORECASTER_FEATURES)}). Got {x.shape}.")
        return self._onnx({"X": x}, self._out)[0].reshape(-1)

    def forecast_batch(self, rows: np.ndarray, anchors: Sequence[tuple[float, float]], level: float = 0.8,
                       lattice: tuple[np.ndarray, np.ndarray] | None = None) -> list[list[dict[str, Any]]]:
        """:meth:`forecast` for several series in one ONNX call: ``rows`` stacks each series' rows
        (one per horizon), ``anchors`` holds each series' ``(anchor, scale)`` and ``lattice`` their
        :func:`models.features.value_lattice` (None: no series is kept on one)."""
        key = f"{level:g}"
        if key not in self.interval_halfwidth:
            raise ValueError(f"The 'level' parameter of ForecasterModel.forecast_batch must be one of "
                             f"{[float(v) for v in LEVELS]}. Got {level!r}.")
        nh = len(self.horizons)
        if len(rows) != nh * len(anchors):
            raise ValueError(f"rows must hold {nh} rows per series for {len(anchors)} series. Got {len(rows)} rows.")
        a = np.asarray(anchors, dtype=np.float64).reshape(len(anchors), 2)
        n = len(anchors)
        whole, nonneg = lattice if lattice is not None else (np.zeros(n, dtype=bool), np.zeros(n, dtype=bool))
        values = self.values(self.predict(rows).reshape(n, nh), a[:, 0], a[:, 1], whole, nonneg).tolist()
        hw = self.interval_halfwidth[key]
        out = []
        for j, (_, scale) in enumerate(anchors):
            one = []
            for i, h in enumerate(self.horizons):
                v = values[j][i]
                w = hw[i] * scale
                one.append({"horizon_min": h, "value": v, "lower": v - w, "upper": v + w})
            out.append(one)
        return out

    @staticmethod
    def values(pred: np.ndarray, anchor: np.ndarray, scale: np.ndarray, whole: np.ndarray, nonneg: np.ndarray
               ) -> np.ndarray:
        """Point forecasts in the series' units from normalised predictions ``pred`` (series, horizons):
        ``anchor + pred * scale``, kept on each series' lattice (:func:`models.features.value_lattice`):
        at 0 or above where ``nonneg``, rounded to a whole number where ``whole``.

        >>> ForecasterModel.values(np.array([[0.2, -3.0], [0.2, -3.0]]), np.array([0.0, 0.0]),
        ...                        np.array([1.0, 1.0]), np.array([True, False]), np.array([True, False]))
        array([[ 0. ,  0. ],
               [ 0.2, -3. ]])
        """
        v = anchor[:, None] + np.asarray(pred, dtype=np.float64) * scale[:, None]
        v = np.where(nonneg[:, None], np.maximum(v, 0.0), v)
        return np.where(whole[:, None], np.round(v), v)

    def halfwidth_at(self, horizons_min: Sequence[float] | np.ndarray, level: float = 0.8) -> np.ndarray:
        """The interval half-width (in scale units) at any horizons: the calibrated ones interpolated
        in log horizon between the trained horizons, the nearest trained one's outside them."""
        hw = self.interval_halfwidth[f"{level:g}"]
        return np.interp(np.log(np.asarray(horizons_min, dtype=np.float64)), np.log(np.asarray(self.horizons)),
                         np.asarray(hw))

    def forecast(self, rows: np.ndarray, anchor: float, scale: float, level: float = 0.8) -> list[dict[str, Any]]:
        """One dict per horizon: ``horizon_min``, ``value`` and the ``lower``/``upper`` bounds of the
        ``level`` interval (0.8 or 0.95), in the series' own units. ``rows`` is (5, 11), one per horizon.
        """
        if f"{level:g}" not in self.interval_halfwidth:
            raise ValueError(f"The 'level' parameter of ForecasterModel.forecast must be one of "
                             f"{[float(v) for v in LEVELS]}. Got {level!r}.")
        if len(rows) != len(self.horizons):
            raise ValueError(f"rows must hold one row per horizon {self.horizons}. Got {len(rows)} rows.")
        return self.forecast_batch(rows, [(anchor, scale)], level)[0]

    @staticmethod
    def time_to_breach(forecast: Sequence[dict[str, Any]], last_value: float, limit: float) -> float | None:
        """Seconds until the point forecast first reaches ``limit`` (an upper limit).

        The path runs linearly from ``(0, last_value)`` through each ``(horizon, value)``; 0 if
        ``last_value`` is already at or over the limit, ``None`` if the path stays below it up to
        the last horizon.
        """
        if last_value >= limit:
            return 0.0
        t0, v0 = 0.0, float(last_value)
        for f in forecast:
            t1, v1 = float(f["horizon_min"]) * 60.0, float(f["value"])
            if v1 >= limit:
                return t0 + (t1 - t0) * (limit - v0) / (v1 - v0)
            t0, v0 = t1, v1
        return None
