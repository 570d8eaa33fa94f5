"""Per-call latency of the four published models (a benchmark: it reports, it never fails):
``python -m bench.models [--store artifacts] [-n 5000]`` prints them as JSON.

Measured the way the job calls them: one onnxruntime session per model, one thread, batch of
one (the forecaster's natural batch is its five horizon rows), after a warm-up. Beside them, the
cost per series of a forecast in a round of 256 series with a week of 5-minute context each: the
rows (:func:`models.features.forecaster_rows`, the seasonal profile included) and the rows plus
the ONNX call and intervals (the job forecasts a series every ``scoring.forecast_every`` samples).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.kit import add_store, parser
from models.artifact import ArtifactStore
from models.classifier import ClassifierModel
from models.clusterer import ClustererModel
from models.detector import DetectorModel
from models.features import (
    CLASSIFIER_FEATURES,
    DETECTOR_FEATURES,
    FORECASTER_FEATURES,
    SeriesWindow,
    forecaster_rows,
    value_lattice,
)
from models.forecaster import ForecasterModel
from models.season import SeasonalContext

ROUND_SERIES = 256


def _per_call_us(fn: Callable[[], Any], n: int, repeats: int = 5) -> float:
    for _ in range(min(n, 200)):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n * 1e6)
    return best


def _round_of_series(rng: np.random.Generator, n: int = ROUND_SERIES
                     ) -> tuple[list[SeriesWindow], list[SeasonalContext], list[int]]:
    """``n`` series, each with a week and a day of 5-minute samples with a daily cycle."""
    wins, seasons, now = [], [], []
    step = 300_000
    for _ in range(n):
        w, c = SeriesWindow(), SeasonalContext()
        level = rng.uniform(10, 1000)
        for i in range(8 * 288):
            x = level * (1 + 0.3 * np.sin(2 * np.pi * i / 288)) + rng.normal() * 0.05 * level
            w.update(i * step, float(x))
            c.update(i * step, float(x))
        wins.append(w)
        seasons.append(c)
        now.append((8 * 288 - 1) * step)
    return wins, seasons, now


def measure_latencies(store_root: str | Path, n: int = 5000) -> dict[str, dict[str, float]]:
    """Microseconds per call (best of 5 runs of ``n`` calls) for the raw ONNX call and the model API."""
    store = ArtifactStore(store_root)
    det = DetectorModel.from_store(store)
    fc = ForecasterModel.from_store(store)
    cl = ClustererModel.from_store(store)
    clf = ClassifierModel.from_store(store)
    rng = np.random.default_rng(0)
    x_det = rng.normal(size=(1, len(DETECTOR_FEATURES))).astype(np.float32)
    x_det64 = rng.normal(size=(64, len(DETECTOR_FEATURES))).astype(np.float32)
    row_det = x_det[0].tolist()
    x_fc1 = rng.normal(size=(1, len(FORECASTER_FEATURES))).astype(np.float32)
    x_fc5 = rng.normal(size=(5, len(FORECASTER_FEATURES))).astype(np.float32)
    c = cl.centroids
    x_cl = c[:1] + np.float32(0.01)
    vec = x_cl[0].tolist()
    x_clf = np.zeros((1, len(CLASSIFIER_FEATURES)), dtype=np.float32)
    x_clf[0, :13] = rng.normal(size=13)
    det_run, fc_run, cl_run, clf_run = (m.loaded.run for m in (det, fc, cl, clf))
    wins, seasons, now = _round_of_series(rng)

    def forecast_round() -> None:
        rows, med, scale = forecaster_rows(wins, seasons, now)  # as models.pipeline.SeriesLogic.on_round
        fc.forecast_batch(rows, list(zip(med.tolist(), scale.tolist(), strict=True)), lattice=value_lattice(wins))

    out = {
        "detector": {
            "onnx_batch1_us": _per_call_us(lambda: det_run({"X": x_det}), n),
            "score_one_us": _per_call_us(lambda: det.score_one(row_det), n),
            "score_batch64_per_row_us": _per_call_us(lambda: det.score(x_det64), n // 10) / 64,
        },
        "forecaster": {
            "onnx_batch1_us": _per_call_us(lambda: fc_run({"X": x_fc1}), n),
            "onnx_batch5_us": _per_call_us(lambda: fc_run({"X": x_fc5}), n),
            "forecast_us": _per_call_us(lambda: fc.forecast(x_fc5, 50.0, 2.0), n),
            "rows_round256_per_series_us": _per_call_us(lambda: forecaster_rows(wins, seasons, now),
                                                         max(n // 200, 5)) / ROUND_SERIES,
            "forecast_round256_per_series_us": _per_call_us(forecast_round, max(n // 200, 5)) / ROUND_SERIES,
        },
        "clusterer": {
            "onnx_batch1_us": _per_call_us(lambda: cl_run({"X": x_cl, "C": c}), n),
            "assign_us": _per_call_us(lambda: cl.assign(vec, c), n),
        },
        "classifier": {
            "onnx_batch1_us": _per_call_us(lambda: clf_run({"X": x_clf}), n),
            "predict_proba_us": _per_call_us(lambda: clf.predict_proba(x_clf[0]), n),
        },
    }
    return out


def main(argv: list[str] | None = None) -> int:
    import json

    p = parser("bench.models", __doc__)
    add_store(p)
    p.add_argument("-n", type=int, default=5000, help="calls per measurement (default: %(default)s)")
    args = p.parse_args(argv)
    print(json.dumps(measure_latencies(args.store, n=args.n), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
