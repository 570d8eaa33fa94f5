"""The vectorised feature functions the job's rounds use equal the per-series reference methods."""

from __future__ import annotations

import numpy as np

from models.features import (
    HISTORY,
    SeriesWindow,
    detector_feature_rows,
    forecaster_rows,
    robust_rows,
)
from models.season import SeasonalContext


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


def _seasons(n: int, days: float, seed: int) -> tuple[list[SeasonalContext], list[int]]:
    """Contexts of hourly series with a daily cycle (``days`` of them), and each one's last time."""
    rng = np.random.default_rng(seed)
    out, now = [], []
    for _ in range(n):
        c, t = SeasonalContext(), 0
        for i in range(int(days * 24)):
            t = i * 3_600_000
            c.update(t, 100.0 + 10.0 * np.sin(2 * np.pi * i / 24) + rng.standard_normal())
        out.append(c)
        now.append(t)
    return out, now


def test_forecaster_rows_of_many_series_equal_one_at_a_time():
    wins, _ = _windows(60, seed=1)
    wins[3] = SeriesWindow()  # a window still filling its history takes the same path
    for t in range(25):
        wins[3].update(t * 60_000, float(t % 4))
    seasons, now = _seasons(60, 9, seed=2)
    block, med, scale = forecaster_rows(wins, seasons, now)
    assert block.shape == (60 * 5, 11) and block.dtype == np.float32
    for j, w in enumerate(wins):
        rows, m, s = forecaster_rows([w], [seasons[j]], [now[j]])
        assert (m[0], s[0]) == w.robust() == (med[j], scale[j])
        np.testing.assert_array_equal(block[j * 5:(j + 1) * 5], rows)


def test_forecaster_rows_carry_the_season_of_the_target_time():
    w = SeriesWindow()
    for t in range(HISTORY):
        w.update(t * 60_000, 100.0)
    seasons, now = _seasons(1, 8, seed=3)
    hours = np.array([1.0, 6.0, 12.0, 18.0]) * 60
    rows, med, scale = forecaster_rows([w], seasons, now, hours)
    med_, days, _, last = seasons[0].profile(np.asarray(now) + (hours * 60_000).astype(np.int64))
    assert (days == 7).all()  # eight days of data: seven whole days back from every target
    # the target's seasonal median, in the window's robust units, signed-log scaled
    expect = np.sign(med_ - med[0]) * np.log1p(np.abs(med_ - med[0]) / scale[0])
    np.testing.assert_allclose(rows[:, 6], np.clip(expect, -10, 10), rtol=1e-5)
    assert rows[1, 6] > 0 > rows[3, 6]  # the last sample was at hour 23 of the cycle: at +6 h it is up, at +18 h down
    # no context: the season features say so (0 days) and carry no value
    rows, _, _ = forecaster_rows([w], [SeasonalContext()], now, hours)
    assert (rows[:, 8] == 0).all() and (rows[:, 6] == 0).all() and (rows[:, 9] == -1).all()
