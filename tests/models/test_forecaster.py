"""Forecaster runtime: intervals, time to breach, and beating the naive forecast on a leak."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.artifact import ArtifactStore
from models.features import FORECAST_HORIZONS_MIN, SeriesWindow, forecaster_rows, value_lattice
from models.forecaster import ForecasterModel
from models.season import SeasonalContext
from training.data import iter_steps
from training.simulate import MINUTE_MS, Incident, generate


@pytest.fixture(scope="module")
def forecaster(trained_store: Path) -> ForecasterModel:
    return ForecasterModel.from_store(ArtifactStore(trained_store))


def _linear(last: float, slope_per_min: float) -> list[dict]:
    return [{"horizon_min": h, "value": last + slope_per_min * h, "lower": 0.0, "upper": 0.0}
            for h in FORECAST_HORIZONS_MIN]


@pytest.mark.parametrize(("last", "slope", "limit", "expected_s"), [
    (50.0, 0.1, 56.0, 60 * 60.0),  # crosses exactly at the 60 min horizon
    (50.0, 0.1, 53.0, 30 * 60.0),
    (50.0, 0.1, 51.0, 10 * 60.0),  # between 5 and 30 min
    (50.0, 0.01, 60.0, 1000 * 60.0),  # between 360 and 1440 min
    (50.0, 0.01, 70.0, None),  # not within 1440 min
    (50.0, -0.1, 60.0, None),  # moving away
    (60.0, 0.0, 60.0, 0.0),  # already at the limit
    (75.0, -1.0, 60.0, 0.0),  # already over it
])
def test_time_to_breach_on_a_linear_forecast(last: float, slope: float, limit: float, expected_s: float | None) -> None:
    got = ForecasterModel.time_to_breach(_linear(last, slope), last, limit)
    if expected_s is None:
        assert got is None
    else:
        assert got == pytest.approx(expected_s, rel=1e-9)


def test_time_to_breach_interpolates_between_horizons() -> None:
    fc = [{"horizon_min": 5, "value": 10.0}, {"horizon_min": 30, "value": 20.0}, {"horizon_min": 60, "value": 90.0},
          {"horizon_min": 360, "value": 95.0}, {"horizon_min": 1440, "value": 99.0}]
    # 20 -> 90 between 30 and 60 min: reaches 55 halfway, at 45 min
    assert ForecasterModel.time_to_breach(fc, 10.0, 55.0) == pytest.approx(45 * 60)


def test_forecast_gives_one_interval_per_horizon(forecaster: ForecasterModel) -> None:
    w, season = SeriesWindow(), SeasonalContext()
    for i in range(40):
        t, x = 1_780_000_000_000 + i * 60_000, 50.0 + 0.2 * i + (i % 3) * 0.1
        w.update(t, x)
        season.update(t, x)
    rows, anchors, scales = forecaster_rows([w], [season], [t])
    anchor, scale = float(anchors[0]), float(scales[0])
    f80 = forecaster.forecast(rows, anchor, scale)
    f95 = forecaster.forecast(rows, anchor, scale, level=0.95)
    assert [f["horizon_min"] for f in f80] == list(FORECAST_HORIZONS_MIN)
    for a, b in zip(f80, f95, strict=True):
        assert a["value"] == b["value"]
        assert b["lower"] < a["lower"] <= a["value"] <= a["upper"] < b["upper"]
    with pytest.raises(ValueError, match=r"The 'level' parameter of ForecasterModel.forecast must be one of "
                                         r"\[0.8, 0.95\]. Got 0.9."):
        forecaster.forecast(rows, anchor, scale, level=0.9)
    with pytest.raises(ValueError, match="one row per horizon"):
        forecaster.forecast(rows[:3], anchor, scale)


def test_forecasts_stay_on_the_series_lattice(forecaster: ForecasterModel) -> None:
    rng = np.random.default_rng(3)
    counter, gauge, gauge_season = SeriesWindow(), SeriesWindow(), SeasonalContext()
    counter_season = SeasonalContext()
    for i in range(40):
        t = 1_780_000_000_000 + i * 60_000
        c, g = float(rng.poisson(0.5)), 0.2 + 0.1 * float(rng.standard_normal())
        counter.update(t, c)
        counter_season.update(t, c)
        gauge.update(t, g)
        gauge_season.update(t, g)
    wins = [counter, gauge]
    rows, anchors, scales = forecaster_rows(wins, [counter_season, gauge_season], [t, t])
    whole, nonneg = value_lattice(wins)
    assert whole.tolist() == [True, False] and nonneg[0]
    pairs = list(zip(anchors.tolist(), scales.tolist(), strict=True))
    kept = forecaster.forecast_batch(rows, pairs, lattice=(whole, nonneg))
    free = forecaster.forecast_batch(rows, pairs)
    for f, p in zip(kept[0], free[0], strict=True):  # the counter: whole numbers, never below 0
        assert f["value"] == float(np.round(max(p["value"], 0.0)))
        assert f["upper"] - f["lower"] == pytest.approx(p["upper"] - p["lower"])
    for f, p in zip(kept[1], free[1], strict=True):  # the gauge: not rounded, at 0 or above if never negative
        assert f["value"] == (max(p["value"], 0.0) if nonneg[1] else p["value"])


def test_beats_the_naive_forecast_on_a_memory_leak(forecaster: ForecasterModel) -> None:
    start = 1_780_000_000_000 - (1_780_000_000_000 % 3_600_000)
    hours = 30
    leak = Incident("leak", "memory_leak", "playback", "i-0", ("memory_util",), start + 2 * 3_600_000,
                    start + hours * 3_600_000, "saturation")
    sc = generate(seed=77, hours=hours, start_ms=start, instances=1, incidents=[leak], business_metric=False)
    values, origins = {}, []
    w, season = SeriesWindow(), SeasonalContext()
    for ts, samples in iter_steps(sc.events):
        for s in samples:
            if s.service == "playback" and s.metric == "memory_util":
                w.update(ts, s.value)
                season.update(ts, s.value)
                step = (ts - start) // MINUTE_MS
                values[step] = s.value
                if ts >= leak.start_ms + 30 * MINUTE_MS and step % 20 == 0:
                    rows, anchors, scales = forecaster_rows([w], [season], [ts])
                    origins.append((step, rows, float(anchors[0]), float(scales[0])))
    errs: dict[int, list[tuple[float, float]]] = {h: [] for h in (30, 60, 360)}
    for step, rows, anchor, scale in origins:
        fc = forecaster.forecast(rows, anchor, scale)
        for f in fc:
            h = f["horizon_min"]
            if h in errs and step + h in values:
                actual = values[step + h]
                errs[h].append((abs(f["value"] - actual), abs(values[step] - actual)))
    # the trend is what matters: well ahead of the last value at 30 and 60 min, still ahead at 6 h
    # (the quick test model saw one short leak; the full model does better, see the run report)
    for h, ratio in ((30, 0.6), (60, 0.6), (360, 1.0)):
        model_mae, naive_mae = np.mean(errs[h], axis=0)
        assert len(errs[h]) > 20
        assert model_mae < ratio * naive_mae, (h, model_mae, naive_mae)
