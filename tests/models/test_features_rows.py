"""The vectorised feature functions the job's rounds use equal the per-series reference methods."""

from __future__ import annotations

import numpy as np

from models.features import (
    HISTORY,
    SeriesWindow,
    detector_feature_rows,
    forecaster_row_block,
    robust_rows,
)


def _windows(n: int, seed: int = 0) -> tuple[list[SeriesWindow], np.ndarray]:
    rng = np.random.default_rng(seed)
    wins = []
    for i in range(n):
        w = SeriesWindow()
        level, noise = rng.uniform(-50, 500), rng.uniform(1e-3, 20)
        for t in range(HISTORY + int(rng.integers(0, 40))):
            w.update(t * 60_000, level + noise * rng.standard_normal() + (i % 3) * t)
        wins.append(w)
    xs = np.array([w.last + rng.standard_normal() * 5 for w in wins])
    return wins, xs


def test_robust_and_detector_features_of_many_series_equal_one_at_a_time():
    wins, xs = _windows(200)
    fields = {f: np.array([getattr(w, f) for w in wins]) for f in ("var", "mean", "fast", "last", "absdelta", "trend")}
    med, scale = robust_rows(np.array([w.ring for w in wins]), fields["var"])
    rows = detector_feature_rows(xs, med, scale, fields)
    for j, (w, x) in enumerate(zip(wins, xs, strict=True)):
        m, s = w.robust()
        assert med[j] == m and scale[j] == s
        np.testing.assert_allclose(rows[j], w.detector_features(float(x)), rtol=1e-12, atol=1e-12)


def test_forecaster_rows_of_many_series_equal_one_at_a_time():
    wins, _ = _windows(100, seed=1)
    fields = {f: np.array([getattr(w, f) for w in wins]) for f in ("var", "last", "level", "trend", "trend_long")}
    med, scale = robust_rows(np.array([w.ring for w in wins]), fields["var"])
    block = forecaster_row_block(med, scale, fields)
    for j, w in enumerate(wins):
        rows, anchor, s = w.forecaster_rows()
        assert anchor == w.last and s == scale[j]
        np.testing.assert_array_equal(block[j * 5:(j + 1) * 5], rows)
