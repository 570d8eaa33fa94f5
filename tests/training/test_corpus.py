"""training.corpus: the forecaster's synthetic series, and the rows the training takes from them."""

from __future__ import annotations

import numpy as np
import pytest

from models.features import FORECAST_HORIZONS_MIN, FORECASTER_FEATURES
from training import corpus
from training.sources import SeriesSpec, extract_series


def test_the_corpus_is_seeded_and_spans_the_sampling_intervals() -> None:
    a, b = corpus.generate(5, 60), corpus.generate(5, 60)
    assert [s.key for s in a] == [s.key for s in b]
    assert all(np.array_equal(x.values, y.values) and np.array_equal(x.ts, y.ts) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].values, corpus.generate(6, 1)[0].values)
    gaps = {int(np.diff(s.ts)[0]) // 60_000 for s in a}
    assert gaps == set(corpus.INTERVALS_MIN)
    for s in a:
        assert (np.diff(s.ts) > 0).all() and np.isfinite(s.values).all() and len(s.values) <= corpus.MAX_POINTS
        days = (s.ts[-1] - s.ts[0]) / corpus.DAY_MS
        assert days >= 4 if np.diff(s.ts)[0] == 60_000 else days >= 9  # a week of context and more
    with pytest.raises(ValueError, match="'n' parameter of corpus.generate must be a positive integer. Got 0"):
        corpus.generate(1, 0)


def test_corpus_rows_are_taken_at_the_job_horizons_and_at_steps_of_each_series() -> None:
    series = corpus.generate(7, 12)
    f = extract_series(series, SeriesSpec("corpus", "t"), detector=False, forecast_every=37,
                       forecast_steps=corpus.FORECAST_STEPS).forecast
    assert f is not None and f.X.shape == (len(f.y), len(FORECASTER_FEATURES))
    for si, s in enumerate(series):
        gap_min = int(np.diff(s.ts)[0]) // 60_000
        hz = set(f.horizon[f.series == si].tolist())
        want = {h for h in FORECAST_HORIZONS_MIN if h % gap_min == 0} | {k * gap_min for k in corpus.FORECAST_STEPS}
        assert hz == want, (gap_min, sorted(hz))
    # targets are the exact future values, anchored at the window's robust median
    np.testing.assert_allclose(f.anchor + f.y * f.scale, f.actual, rtol=1e-9, atol=1e-9)
    # rows from a week of context on carry the season: up to seven days found
    assert f.X[:, FORECASTER_FEATURES.index("season_days")].max() == 7
