"""``make bench-forecast``: the forecaster's backtest on real series the repository can reach.

The series are NAB v1.1's real ones (``../shared/datasets/nab``: AWS CloudWatch, tweets, traffic,
ad exchange, the known-cause files; not the artificial ones), which no model of Vigil was trained on.
Each file is one series, laid on a regular grid (the mean of the samples in each step: the traffic
files are irregular) and backtested (:mod:`training.backtest`) in two settings:

* ``5min``: the files sampled every 5 minutes, 48 steps ahead (4 hours), season 288 (a day);
* ``1h``: every file as hourly means, 48 steps ahead (2 days), season 24.

Each setting's series are also written as a long CSV under ``runs/bench-forecast/`` with the
``python -m training backtest`` command that reproduces its figures. The report is
``reports/forecast.json`` and ``reports/forecast.md``, with the targets of the quality issue
beside the figures: sMAPE at least 10% below seasonal naive averaged over the steps, and the 80%
interval covering 75% to 85%. A benchmark: it reports what it measured and never fails on a figure.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.kit import add_store, parser, short_commit
from training import backtest as bt
from training.nab import nab_root

CATEGORIES = ("realAWSCloudwatch", "realTweets", "realTraffic", "realAdExchange", "realKnownCause")
SETTINGS: dict[str, dict[str, Any]] = {"5min": {"freq": "5min", "horizon": 48, "season": 288},
            "1h": {"freq": "1h", "horizon": 48, "season": 24}}
TARGET_SMAPE_VS_SN = -0.10
TARGET_COVERAGE = (0.75, 0.85)


def nab_series(root: Path, freq_ms: int, native_ms: int | None = None) -> list[bt.Series]:
    """Every real NAB file as one series on a grid of ``freq_ms`` (bucket means); with
    ``native_ms``, only the files whose median spacing is at most that."""
    out = []
    for cat in CATEGORIES:
        for path in sorted((root / "data" / cat).glob("*.csv")):
            with open(path, newline="") as f:
                rows = list(csv.reader(f))[1:]
            ts = np.array([int(datetime.fromisoformat(r[0]).replace(tzinfo=UTC).timestamp() * 1000) for r in rows])
            v = np.array([float(r[1]) for r in rows])
            if native_ms is not None and np.median(np.diff(ts)) > native_ms:
                continue
            grid = ts // freq_ms
            sums: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
            for g, x in zip(grid.tolist(), v.tolist(), strict=True):
                sums[g][0] += x
                sums[g][1] += 1
            keys = sorted(sums)
            out.append(bt.Series(f"{cat}/{path.stem}", np.asarray(keys, dtype=np.int64) * freq_ms,
                                 np.asarray([sums[k][0] / sums[k][1] for k in keys])))
    return out


def write_long(series: list[bt.Series], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "timestamp", "value"])
        for s in series:
            for t, x in zip(s.ts_ms.tolist(), s.values.tolist(), strict=True):
                w.writerow([s.id, bt.iso(t), repr(x)])


def run(store: str, out_dir: Path, runs_dir: Path, nab: str | None = None) -> dict[str, Any]:
    root = nab_root(nab)
    model = bt.load_forecaster(store)
    runs_dir.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"commit": short_commit(), "forecaster_version": model.version,
                              "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "settings": {}}
    for name, st in SETTINGS.items():
        freq_ms = bt.parse_freq(st["freq"])
        series = nab_series(root, freq_ms, native_ms=freq_ms if name == "5min" else None)
        if not series:
            raise SystemExit(f"bench-forecast: no NAB series under {root / 'data'} (categories "
                             f"{', '.join(CATEGORIES)}); pass --nab-root or set VIGIL_NAB_ROOT")
        csv_path = runs_dir / f"nab-{name}.csv"
        write_long(series, csv_path)
        fig, latest = bt.run(series, model, freq_ms, st["horizon"], st["season"], label=f" {name}")
        fig["command"] = (f"python -m training backtest --store {store} --csv {csv_path} --freq {st['freq']} "
                          f"--horizon {st['horizon']} --season {st['season']}")
        report["settings"][name] = fig
        bt.plot(out_dir / f"forecast-{name}.png", fig, latest,
                title=f"NAB real series, {st['freq']} steps: forecaster {model.version}")
    (out_dir / "forecast.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "forecast.md").write_text(markdown(report))
    return report


def markdown(r: dict[str, Any]) -> str:
    lines = [f"# Forecast backtest on NAB's real series (commit `{r['commit']}`)", "",
             f"Forecaster `{r['forecaster_version']}`, measured {r['measured_at']} by `make bench-forecast` "
             "(`bench/forecast.py`). Rolling origins every 7 samples, strictly causal; the series "
             "were never used in training. Targets: sMAPE at least 10% below seasonal naive (mean over "
             "steps), 80% interval covering 75% to 85%.", ""]
    for name, fig in r["settings"].items():
        f = fig["methods"]["forecaster"]
        ratio = fig["smape_vs_seasonal_naive"]
        cov = f["mean_coverage_80"]
        lines += [f"## {name}: {fig['series']} series, {fig['points']:,} points, {fig['horizon_steps']} steps "
                  f"ahead, season {fig['season_steps']}", "",
                  bt.table(fig), "",
                  f"- sMAPE vs seasonal naive: **{ratio * 100:+.1f}%** (target {TARGET_SMAPE_VS_SN * 100:+.0f}% "
                  f"or lower): {'met' if ratio is not None and ratio <= TARGET_SMAPE_VS_SN else 'missed'}",
                  f"- 80% interval coverage: **{cov * 100:.1f}%** (target 75-85%): "
                  f"{'met' if cov is not None and TARGET_COVERAGE[0] <= cov <= TARGET_COVERAGE[1] else 'missed'}",
                  f"- reproduce: `{fig['command']}`", f"- plot: [forecast-{name}.png](forecast-{name}.png)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = parser("bench.forecast", __doc__)
    add_store(p)
    p.add_argument("--out", default="reports", help="where forecast.json, forecast.md and plots go")
    p.add_argument("--runs-dir", default="runs/bench-forecast", help="where the series CSVs go")
    p.add_argument("--nab-root", default=None)
    a = p.parse_args(argv)
    r = run(a.store, Path(a.out), Path(a.runs_dir), a.nab_root)
    for name, fig in r["settings"].items():
        f = fig["methods"]
        print(f"{name}: sMAPE forecaster {f['forecaster']['mean_smape']}, seasonal naive "
              f"{f['seasonal_naive']['mean_smape']}, naive {f['naive']['mean_smape']}; "
              f"coverage {f['forecaster']['mean_coverage_80']}")
    print(f"report: {Path(a.out) / 'forecast.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
