"""training.backtest: the forecaster's rolling-origin backtest, its figures, inputs and command."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from training import backtest as bt
from training.__main__ import main

HOUR = 3_600_000


def _daily(n_days: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(24 * n_days)
    return 100 + 30 * np.sin(2 * math.pi * t / 24) + noise * rng.standard_normal(len(t))


def _series(sid: str, v: np.ndarray) -> bt.Series:
    return bt.Series(sid, bt.EPOCH_MONDAY_MS + HOUR * np.arange(len(v), dtype=np.int64), v)


@pytest.fixture(scope="module")
def forecaster(trained_store):
    return bt.load_forecaster(trained_store)


def test_freq_parses_and_refuses_what_is_no_interval():
    assert [bt.parse_freq(f) for f in ("1h", "5min", "30s", "1d", "0.5h")] == \
        [HOUR, 300_000, 30_000, 86_400_000, HOUR // 2]
    for bad in ("h", "5 parsecs", "0h", "-1h"):
        with pytest.raises(ValueError, match="--freq"):
            bt.parse_freq(bad)


def test_wide_and_long_csvs_read_the_same_series(tmp_path):
    v = _daily(3)
    wide, long = tmp_path / "w.csv", tmp_path / "l.csv"
    with open(wide, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id"] + [f"v{i}" for i in range(len(v))])
        w.writerow(["a"] + list(v))
    with open(long, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "timestamp", "value"])
        order = np.random.default_rng(1).permutation(len(v))  # any order: sorted by time per series
        for i in order:
            w.writerow(["a", bt.iso(bt.EPOCH_MONDAY_MS + i * HOUR), v[i]])
    a, b = bt.read_csv(wide, HOUR), bt.read_csv(long, HOUR)
    assert [s.id for s in a] == [s.id for s in b] == ["a"]
    assert np.array_equal(a[0].ts_ms, b[0].ts_ms) and np.allclose(a[0].values, b[0].values)


def test_a_malformed_row_is_refused_with_its_number(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("id,timestamp,value\na,2026-01-05T00:00:00Z,1\na,2026-01-05T01:00:00Z,abc\n")
    with pytest.raises(ValueError, match=r"row 3: 'abc' is not a finite number"):
        bt.read_csv(p, HOUR)
    p.write_text("a,1,2,x\n")
    with pytest.raises(ValueError, match=r"row 1: a wide CSV row is an id then numbers; 'x'"):
        bt.read_csv(p, HOUR, "wide")
    p.write_text("id,time,value\na,yesterday,2\n")
    with pytest.raises(ValueError, match=r"row 2: .yesterday. is not a timestamp"):
        bt.read_csv(p, HOUR, "long")


def test_seasonal_naive_is_exact_on_a_series_that_repeats_every_day(forecaster):
    fig, latest = bt.run([_series("a", _daily(10))], forecaster, HOUR, 48, progress=None)
    sn, nv = fig["methods"]["seasonal_naive"], fig["methods"]["naive"]
    assert fig["season_steps"] == 24 and fig["min_history"] == 48
    assert sn["mean_smape"] == 0.0 and sn["mean_mase"] is None  # an exact repeat has no MASE scale
    assert nv["smape"][0] > 0 and nv["smape"][11] > nv["smape"][0]  # half a day away is the farthest
    # origins every 7 samples from sample 48 on, and only those whose target lies in the series
    assert fig["forecasts_scored"][0] == len(range(47, 239, 7))
    assert fig["forecasts_scored"][47] == len(range(47, 240 - 48, 7))
    assert latest[0]["actual"].size == 48 and not np.isnan(latest[0]["actual"]).any()


def test_seasonal_naive_mase_is_about_one_on_a_season_plus_independent_noise(forecaster):
    # its errors are the difference of two noise samples, as are the in-sample seasonal differences
    series = [_series(f"s{k}", _daily(30, noise=3.0, seed=k)) for k in range(5)]
    fig, _ = bt.run(series, forecaster, HOUR, 24, min_history=24 * 7, progress=None)
    assert fig["methods"]["seasonal_naive"]["mean_mase"] == pytest.approx(1.0, abs=0.15)
    assert fig["methods"]["naive"]["mean_mase"] > 3


def test_a_counter_is_forecast_in_whole_numbers_and_never_below_zero(forecaster, tmp_path):
    # a count that is mostly 0: the model's median off the lattice (0.3 events) would miss every 0
    rng = np.random.default_rng(4)
    counts = rng.poisson(0.4 + 0.3 * (1 + np.sin(2 * math.pi * np.arange(24 * 6) / 24))).astype(float)
    p = tmp_path / "f.csv"
    with open(p, "w", newline="") as f:
        fig, _ = bt.run([_series("c", counts)], forecaster, HOUR, 12, forecasts_out=f, progress=None)
    values = [float(r["value"]) for r in csv.DictReader(open(p))]
    assert len(values) == 12 * fig["series_with_origins"] * len(range(47, 24 * 6 - 1, 7))
    assert all(v == round(v) and v >= 0 for v in values)
    assert 0.0 in values  # the zeros are forecast as zeros


def test_an_origin_uses_only_the_past(forecaster, tmp_path):
    v = _daily(6, noise=2.0)
    changed = v.copy()
    changed[100:] += 500.0  # the future of origins before sample 100
    out = []
    for vals in (v, changed):
        p = tmp_path / "f.csv"
        with open(p, "w", newline="") as f:
            bt.run([_series("a", vals)], forecaster, HOUR, 12, forecasts_out=f, progress=None)
        out.append([r for r in csv.DictReader(open(p)) if r["origin"] < bt.iso(bt.EPOCH_MONDAY_MS + 99 * HOUR)])
    assert out[0] and out[0] == out[1]


def test_the_command_prints_the_table_and_writes_forecasts_figures_and_plot(trained_store, tmp_path, capsys):
    src = tmp_path / "series.csv"
    with open(src, "w", newline="") as f:
        w = csv.writer(f)
        for k in range(3):
            w.writerow([f"s{k}"] + [round(x, 3) for x in _daily(5, noise=1.0, seed=k)])
    paths = {k: tmp_path / f"out.{k}" for k in ("json", "csv", "png")}
    rc = main(["backtest", "--store", str(trained_store), "--csv", str(src), "--freq", "1h", "--horizon", "24",
               "--forecasts", str(paths["csv"]), "--json", str(paths["json"]), "--plot", str(paths["png"]),
               "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| mean 1-24 |" in text and "seasonal naive by" in text
    fig = json.loads(paths["json"].read_text())
    assert fig["series"] == 3 and len(fig["methods"]["forecaster"]["smape"]) == 24
    cov = fig["methods"]["forecaster"]["mean_coverage_80"]
    assert 0.0 <= cov <= 1.0
    rows = list(csv.DictReader(open(paths["csv"])))
    assert set(rows[0]) == {"id", "origin", "step", "value", "lower", "upper"}
    assert len(rows) == 3 * len(range(47, 120 - 1, 7)) * 24
    assert all(float(r["lower"]) <= float(r["value"]) <= float(r["upper"]) for r in rows)
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_the_command_refuses_a_bad_file_with_the_reason(trained_store, tmp_path, capsys):
    p = tmp_path / "bad.csv"
    p.write_text("a,1,2,oops\n")
    rc = main(["backtest", "--store", str(trained_store), "--csv", str(p), "--freq", "1h", "--horizon", "4"])
    assert rc == 2 and "'oops' is not a finite number" in capsys.readouterr().err
