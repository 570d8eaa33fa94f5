"""The forecaster: gradient boosting on normalised future values, with split-conformal intervals.

:func:`fit` fits one HistGradientBoostingRegressor (absolute error) over the forecaster's
scenarios and the synthetic corpus (:mod:`training.corpus`), exports it (one
TreeEnsembleRegressor), calibrates the intervals per horizon on held-out rows, and reports MAE
against the naive forecast and interval coverage on the test scenario and the corpus' test part.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from models.features import FORECAST_HORIZONS_MIN, FORECASTER_FEATURES
from models.forecaster import LEVELS, ForecasterModel
from training import evaluate as ev
from training.base import PARITY_ROWS, Datasets, FitContext, TrainConfig, Trained, data_sources, drift_weights, runtime
from training.data import Extract, ForecastData, fingerprint
from training.export import assert_parity, hist_gradient_boosting_regressor_to_onnx, run_onnx
from training.sources import metric_kind_weights

FORECASTER_TREES = 60


def fit(cfg: TrainConfig, data: Datasets, ctx: FitContext | None = None) -> Trained:
    """Gradient boosting on normalised future values, over the scenarios' series and the synthetic
    corpus; split-conformal intervals per horizon."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    t0 = time.perf_counter()
    corpus_fit, corpus_cal, corpus_test = (e.forecast for e in data.fc_corpus) if data.fc_corpus else (None,) * 3
    tr = [e.forecast for e in data.fc_train]
    X = np.concatenate([f.X for f in tr] + ([corpus_fit.X] if corpus_fit is not None else []))  # type: ignore[union-attr]
    y = np.concatenate([f.y for f in tr] + ([corpus_fit.y] if corpus_fit is not None else []))  # type: ignore[union-attr]
    selection: list[dict] = []
    kinds, dw = drift_weights(data, "forecaster")
    # drift on the generator: rows of the drifted metric kinds weigh more in the fit
    weight = np.concatenate([metric_kind_weights(f.keys, f.series, kinds, dw) if kinds else  # type: ignore[union-attr]
                             np.ones(len(f.y)) for f in tr])  # type: ignore[union-attr]
    if corpus_fit is not None:
        # the corpus weighs as much in total as the scenarios' series: the job's own fleet (its
        # incidents, recoveries and limits) is not outvoted by the synthetic shapes
        weight = np.concatenate([weight, np.full(len(corpus_fit.y), weight.sum() / max(len(corpus_fit.y), 1))])
    if kinds:
        selection = [{"role": "selection", "drift_metric_kinds": kinds, "weight": dw}]
    # 60 trees of 31 leaves: within 3% of the MAE of 200 trees at a third of the per-row cost
    reg = HistGradientBoostingRegressor(
        loss="absolute_error", max_iter=FORECASTER_TREES, learning_rate=0.2, max_leaf_nodes=31,
        min_samples_leaf=40, l2_regularization=1.0, early_stopping=False, random_state=cfg.seed)
    with threadpool_limits(1):
        reg.fit(X, y, sample_weight=weight)
    onnx_bytes = hist_gradient_boosting_regressor_to_onnx(reg, len(FORECASTER_FEATURES))
    cal, test = data.fc_cal.forecast, data.fc_eval.forecast
    assert cal is not None and test is not None
    Xp = test.X[:PARITY_ROWS]
    parity = assert_parity("forecaster", run_onnx(onnx_bytes, {"X": Xp})[0].ravel(), reg.predict(Xp),
                           atol=1e-4, rtol=1e-5)

    post: dict[str, Any] = {
        "target": "(x(t+h) - anchor) / scale with (rows, anchor, scale) = models.features.forecaster_rows()",
        "horizons_min": list(FORECAST_HORIZONS_MIN),
        "conformal": {"abs_residual_quantile": {lvl: [1.0] * len(FORECAST_HORIZONS_MIN) for lvl in LEVELS}},
    }
    model = runtime(ForecasterModel, "forecaster", onnx_bytes, FORECASTER_FEATURES, post)
    cals = [cal] if corpus_cal is None else [cal, corpus_cal]
    cal_h = np.concatenate([c.horizon for c in cals])
    res_cal = np.concatenate([np.abs(model.predict(c.X).astype(np.float64) - c.y) for c in cals])
    hw = {lvl: [ev.conformal_quantile(res_cal[cal_h == h], float(lvl)) for h in FORECAST_HORIZONS_MIN]
          for lvl in LEVELS}
    post["conformal"] = {"abs_residual_quantile": hw, "unit": "scale", "method": "split conformal, per horizon",
                         "calibration_rows": len(res_cal)}
    model = runtime(ForecasterModel, "forecaster", onnx_bytes, FORECASTER_FEATURES, post)

    pred = model.predict(test.X).astype(np.float64)
    err, naive = np.abs(pred - test.y), np.abs(test.y - _naive(test))
    per_h: dict[str, Any] = {}
    for i, h in enumerate(FORECAST_HORIZONS_MIN):
        m = test.horizon == h
        leak = m & (test.kind == "memory_leak")
        per_h[str(h)] = {
            "mae": float(err[m].mean()), "naive_mae": float(naive[m].mean()),
            "coverage_80": float((err[m] <= hw["0.8"][i]).mean()),
            "coverage_95": float((err[m] <= hw["0.95"][i]).mean()),
            "leak_mae": float(err[leak].mean()) if leak.any() else None,
            "leak_naive_mae": float(naive[leak].mean()) if leak.any() else None,
        }
    hw_rows = np.asarray([hw["0.8"][FORECAST_HORIZONS_MIN.index(int(h))] for h in test.horizon])
    leak = test.kind == "memory_leak"
    evaluation = {
        "test_scenario": data.fc_eval.spec.source(), "rows": len(test.y), "unit": "series scale (robust sd)",
        "mae": float(err.mean()), "naive_mae": float(naive.mean()),
        "mae_ratio_vs_naive": float(err.mean() / max(naive.mean(), 1e-12)),
        "leak_mae": float(err[leak].mean()) if leak.any() else None,
        "leak_naive_mae": float(naive[leak].mean()) if leak.any() else None,
        "coverage_80": float((err <= hw_rows).mean()),
        "per_horizon": per_h,
        "parity_max_abs_error": parity, "parity_tolerance": "1e-4 + 1e-5 * |y|",
    }
    dropped = {name: e.forecast.dropped for name, e in (("fit", data.fc_train[0]), ("calibration", data.fc_cal),
                                                         ("test", data.fc_eval)) if e.forecast is not None}
    if any(dropped.values()):
        evaluation["rows_left_out_target_beyond_limit"] = dropped
    gen = data.generator_fc_eval
    if gen is not None and gen.forecast is not None:
        # the same headline figures on the generator's held-out fleet scenario: comparable across sources
        evaluation["generator_test"] = _held_out_figures(model, gen, hw["0.8"])
    if corpus_test is not None:
        evaluation["corpus_test"] = _held_out_figures(model, data.fc_corpus[2], hw["0.8"])
    fields = {
        "description": "HistGradientBoostingRegressor (absolute error) on normalised future values, "
                       "one TreeEnsembleRegressor",
        "feature_schema": FORECASTER_FEATURES,
        "inputs": [{"name": "X", "shape": [None, len(FORECASTER_FEATURES)], "dtype": "float32",
                    "meaning": "models.features.forecaster_rows() rows, one per horizon in horizons_min"}],
        "outputs": [{"name": "y", "shape": [None, 1], "dtype": "float32",
                     "meaning": "(x(t+h) - anchor) / scale; value = anchor + y * scale"}],
        "training_data": {"fingerprint": fingerprint(X, y, sources=data_sources(data.fc_train + data.fc_corpus[:1],
                                                                                "train") + selection),
                          "sources": data_sources(data.fc_train + data.fc_corpus[:1], "fit")
                          + data_sources([data.fc_cal] + data.fc_corpus[1:2], "conformal") + selection,
                          "rows": len(y)},
        "postprocessing": post,
        "evaluation": evaluation,
    }

    def plot(path: Path) -> None:
        ev.plot_forecast(path, _forecast_panels(test, pred, hw))

    return Trained("forecaster", onnx_bytes, fields, model, evaluation, plot, time.perf_counter() - t0,
                   {"regressor": reg, "parity_X": Xp})


def _held_out_figures(model: ForecasterModel, ext: Extract, hw80: list[float]) -> dict[str, Any]:
    """MAE against naive and 80% coverage on a held-out extract's rows at the job's horizons (rows at
    other horizons, which the corpus also has, are left out)."""
    f = ext.forecast
    assert f is not None
    m = np.isin(f.horizon, FORECAST_HORIZONS_MIN)
    err = np.abs(model.predict(f.X[m]).astype(np.float64) - f.y[m])
    naive = np.abs(f.y[m] - _naive(f)[m])
    hw = np.asarray([hw80[FORECAST_HORIZONS_MIN.index(int(h))] for h in f.horizon[m]])
    return {"test_scenario": ext.spec.source(), "rows": int(m.sum()), "mae": float(err.mean()),
            "naive_mae": float(naive.mean()), "mae_ratio_vs_naive": float(err.mean() / max(float(naive.mean()), 1e-12)),
            "coverage_80": float((err <= hw).mean())}


def _naive(f: ForecastData) -> np.ndarray:
    """The naive forecast (the last value at the origin) in each row's target units."""
    return (f.last - f.anchor) / f.scale


def _forecast_panels(test: Any, pred: np.ndarray, hw: dict[str, list[float]], step_min: float = 1.0
                     ) -> list[dict[str, Any]]:
    """Rolling forecasts of the held-out series with the most memory-leak rows, at 60 and 360 min."""
    leak = test.kind == "memory_leak"
    si = int(np.bincount(test.series[leak]).argmax()) if leak.any() else int(test.series[0])
    panels = []
    for h in (60, 360):
        i = FORECAST_HORIZONS_MIN.index(h)
        m = (test.series == si) & (test.horizon == h)
        o = np.argsort(test.step[m], kind="stable")
        v = test.anchor[m][o] + pred[m][o] * test.scale[m][o]
        sc = test.scale[m][o]
        t_h = (test.step[m][o] * step_min + h) / 60.0
        panels.append({"title": f"{test.keys[si]} - horizon {h} min", "t_hours": t_h, "pred": v,
                       "actual": test.actual[m][o], "naive": test.last[m][o],
                       "lo80": v - hw["0.8"][i] * sc, "hi80": v + hw["0.8"][i] * sc,
                       "lo95": v - hw["0.95"][i] * sc, "hi95": v + hw["0.95"][i] * sc})
    return panels

