"""Rolling-origin backtest of the job's forecaster: ``python -m training backtest --csv FILE ...``.

What a capacity planner runs to see how far ahead the forecasts can be trusted. Each series' history
is fed, oldest first, through the runtime the job uses (a :class:`models.pipeline.SeriesState`: the
short window and the seasonal context, and the production :class:`models.forecaster.ForecasterModel`
of the artifact store). From ``--min-history`` samples on, every ``--every`` samples (7) is a forecast
origin: the forecaster predicts steps 1 to ``--horizon`` ahead at the series' frequency (``--freq``)
with its 80% interval, from the state as the job would hold it then. Strictly causal: an origin's
forecast uses only the samples up to it.

Beside it, the same origins get the two forecasts any forecaster must beat: *naive* (the last value)
and *seasonal naive* (the value one season before the target, ``--season`` steps, by default a day of
steps; off with ``--season 0``). Per horizon step the figures are

* sMAPE, in percent: the mean of ``200 |F - A| / (|F| + |A|)`` (0 where both are 0);
* MASE: the mean of ``|F - A|`` over the series' in-sample scale, the mean absolute seasonal
  difference of its first ``--min-history`` samples (the naive difference with no season), averaged
  over series (a series whose scale is 0 is left out of MASE);
* the coverage of the 80% interval (the forecaster's only).

Input: a *wide* CSV (one series a row: id, then its values, oldest first, at ``--freq``, with no
timestamps: the series are laid on a clock from a Monday 00:00 UTC) or a *long* CSV (id, timestamp,
value; any order: rows are sorted by time per series). A header row is skipped. A target step whose
timestamp is not in the series (a gap) is not scored. ``--format`` picks, else the second field of the
first data row decides: a number means wide.

``--forecasts PATH`` writes every forecast (id, origin, step, value, lower, upper), ``--json PATH`` the
figures and ``--plot PATH`` a figure (sMAPE and MASE by horizon for the three methods, and the latest
origin of a few series).
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from models.artifact import ArtifactStore
from models.features import HISTORY, forecaster_rows, value_lattice
from models.forecaster import ForecasterModel
from models.pipeline import SeriesState

EPOCH_MONDAY_MS = 1_767_571_200_000  # 2026-01-05T00:00:00Z, where a wide CSV's series start
REPORT_STEPS = (1, 2, 3, 6, 12, 24, 36, 48)  # the steps the printed table shows (every step is in --json)
METHODS = ("forecaster", "seasonal_naive", "naive")
# samples between origins: 7 divides no day's count of steps at any usual frequency (2^a 3^b 5^c of
# them), so the origins fall at every time of day, not always at the same one
DEFAULT_EVERY = 7
_UNITS_MS = {"s": 1_000, "min": 60_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_freq(text: str) -> int:
    """``"1h"``, ``"5min"``, ``"30s"``, ``"1d"`` -> milliseconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|min|m|h|d)\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"--freq must be a positive number and a unit (s, min, h or d), e.g. 1h or 5min. "
                         f"Got {text!r}.")
    return int(round(float(m.group(1)) * _UNITS_MS[m.group(2)]))


@dataclass
class Series:
    id: str
    ts_ms: np.ndarray  # int64, increasing
    values: np.ndarray  # float64


def _num(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _timestamp_ms(text: str) -> int:
    v = _num(text)
    if v is not None:  # epoch seconds or milliseconds
        return int(v if v > 1e11 else v * 1000)
    t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1000)


def read_csv(path: str | Path, freq_ms: int, fmt: str = "auto") -> list[Series]:
    """The series of a wide or long CSV (see the module's doc). Refuses a file with a malformed row,
    naming the row."""
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"{path}: no rows")
    first_data = 1 if len(rows[0]) > 1 and _num(rows[0][1]) is None and _is_header(rows, fmt) else 0
    rows = rows[first_data:]
    if not rows:
        raise ValueError(f"{path}: a header and no data")
    if fmt == "auto":
        fmt = "wide" if _num(rows[0][1]) is not None else "long"
    if fmt == "wide":
        out = []
        for n, r in enumerate(rows, first_data + 1):
            vals = [_num(c) for c in r[1:] if c.strip()]
            if any(v is None for v in vals):
                raise ValueError(f"{path}, row {n}: a wide CSV row is an id then numbers; "
                                 f"{r[1 + [v is None for v in vals].index(True)]!r} is not a finite number")
            out.append(Series(r[0], EPOCH_MONDAY_MS + freq_ms * np.arange(len(vals), dtype=np.int64),
                              np.asarray(vals, dtype=np.float64)))
        return out
    if fmt != "long":
        raise ValueError(f"--format must be auto, wide or long. Got {fmt!r}.")
    by_id: dict[str, list[tuple[int, float]]] = {}
    for n, r in enumerate(rows, first_data + 1):
        if len(r) != 3:
            raise ValueError(f"{path}, row {n}: a long CSV row is id, timestamp, value; got {len(r)} fields")
        try:
            ts = _timestamp_ms(r[1])
        except ValueError:
            raise ValueError(f"{path}, row {n}: {r[1]!r} is not a timestamp (ISO 8601 or epoch)") from None
        v = _num(r[2])
        if v is None:
            raise ValueError(f"{path}, row {n}: {r[2]!r} is not a finite number")
        by_id.setdefault(r[0], []).append((ts, v))
    out = []
    for sid, pts in by_id.items():
        pts.sort()
        stamps = np.fromiter((p[0] for p in pts), dtype=np.int64, count=len(pts))
        keep = np.ones(len(pts), dtype=bool)
        keep[1:] = stamps[1:] != stamps[:-1]  # a repeated timestamp: the first row of it
        out.append(Series(sid, stamps[keep], np.fromiter((p[1] for p in pts), dtype=np.float64, count=len(pts))[keep]))
    return out


def _is_header(rows: list[list[str]], fmt: str) -> bool:
    """The first row is a header when its second field is no number and, for a long CSV, no timestamp."""
    second = rows[0][1]
    if fmt == "wide":
        return True
    try:
        _timestamp_ms(second)
        return False
    except ValueError:
        return True


@dataclass
class Totals:
    """Sums per method and horizon step, for the means."""

    steps: int
    abs_pct: dict[str, np.ndarray] = field(default_factory=dict)  # sMAPE terms
    scaled: dict[str, np.ndarray] = field(default_factory=dict)  # |F - A| / scale
    n: np.ndarray = field(init=False)
    n_scaled: np.ndarray = field(init=False)
    covered: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        z = lambda: np.zeros(self.steps)  # noqa: E731
        self.abs_pct = {m: z() for m in METHODS}
        self.scaled = {m: z() for m in METHODS}
        self.n, self.n_scaled, self.covered = z(), z(), z()


def _smape_terms(f: np.ndarray, a: np.ndarray) -> np.ndarray:
    den = np.abs(f) + np.abs(a)
    return np.where(den > 0, 200.0 * np.abs(f - a) / np.where(den > 0, den, 1.0), 0.0)


def backtest_series(s: Series, model: ForecasterModel, freq_ms: int, horizon: int, season: int,
                    min_history: int, every: int, totals: Totals,
                    on_forecast: Callable[[str, int, int, float, float, float], None] | None = None
                    ) -> dict[str, Any] | None:
    """Feed one series through a fresh series state, forecast at every origin and add the errors to
    ``totals``. Returns the latest origin's forecast whose targets are all in the series (for the
    plot; else the first origin's), or None if it had no origin."""
    n = len(s.values)
    if n <= min_history:
        return None
    index = {int(t): i for i, t in enumerate(s.ts_ms.tolist())}
    m = season if season > 0 else 1
    head = s.values[:min_history]
    diffs = np.abs(head[m:] - head[:-m]) if len(head) > m else np.zeros(0)
    mase_scale = float(diffs.mean()) if len(diffs) else 0.0
    if mase_scale <= 1e-9 * float(np.abs(head).mean()):
        mase_scale = 0.0  # rounding noise of a series that repeats exactly: no scale to measure against
    steps = np.arange(1, horizon + 1)
    horizons_min = steps * (freq_ms / 60_000.0)
    hw = model.halfwidth_at(horizons_min)
    st = SeriesState()
    origins: list[int] = []
    blocks: list[np.ndarray] = []
    anchors: list[float] = []
    scales: list[float] = []
    lattice: list[tuple[bool, bool]] = []
    vals, tss = s.values.tolist(), s.ts_ms.tolist()
    for i in range(n):
        st.window.update(tss[i], vals[i])
        st.season.update(tss[i], vals[i])
        if i + 1 >= min_history and (i + 1 - min_history) % every == 0 and i + 1 < n \
                and len(st.window.ring) == HISTORY:
            # the rows the job builds (models.pipeline.SeriesLogic.on_round), at the backtest's horizons
            rows, med, sc = forecaster_rows([st.window], [st.season], [tss[i]], horizons_min)
            whole, nonneg = value_lattice([st.window])
            origins.append(i)
            blocks.append(rows)
            anchors.append(float(med[0]))
            scales.append(float(sc[0]))
            lattice.append((bool(whole[0]), bool(nonneg[0])))
    if not origins:
        return None
    lat = np.asarray(lattice, dtype=bool).reshape(len(origins), 2)
    points = model.values(model.predict(np.concatenate(blocks)).reshape(len(origins), horizon), np.asarray(anchors),
                          np.asarray(scales), lat[:, 0], lat[:, 1])
    last = None
    for k, i in enumerate(origins):
        point, half = points[k], hw * scales[k]
        target_ts = tss[i] + steps * freq_ms
        where = np.array([index.get(int(t), -1) for t in target_ts])
        ok = where >= 0
        actual = np.where(ok, s.values[np.maximum(where, 0)], np.nan)
        # seasonal naive: the value ceil(h / m) seasons before the target, if the series holds it
        back = target_ts - m * np.ceil(steps / m).astype(np.int64) * freq_ms if season > 0 else \
            np.full(horizon, tss[i])
        bw = np.array([index.get(int(t), -1) for t in back])
        sn = np.where(bw >= 0, s.values[np.maximum(bw, 0)], np.nan)
        ok &= ~np.isnan(sn)
        forecasts = {"forecaster": point, "seasonal_naive": sn, "naive": np.full(horizon, vals[i])}
        for meth, f in forecasts.items():
            totals.abs_pct[meth][ok] += _smape_terms(f[ok], actual[ok])
            if mase_scale > 0:
                totals.scaled[meth][ok] += np.abs(f[ok] - actual[ok]) / mase_scale
        totals.n[ok] += 1
        if mase_scale > 0:
            totals.n_scaled[ok] += 1
        totals.covered[ok] += (actual[ok] >= point[ok] - half[ok]) & (actual[ok] <= point[ok] + half[ok])
        if on_forecast is not None:
            for j in range(horizon):
                on_forecast(s.id, tss[i], j + 1, float(point[j]), float(point[j] - half[j]), float(point[j] + half[j]))
        if ok.all() or last is None:  # the plot shows the latest origin whose targets are all in the series
            last = {"id": s.id, "origin": i, "history_ts": s.ts_ms[max(0, i - 3 * horizon):i + 1],
                    "history": s.values[max(0, i - 3 * horizon):i + 1], "target_ts": target_ts, "actual": actual,
                    "forecast": point, "lower": point - half, "upper": point + half, "seasonal_naive": sn}
    return last


def figures(t: Totals, meta: dict[str, Any]) -> dict[str, Any]:
    """The means of ``t`` per horizon step and over all steps, per method."""
    with np.errstate(invalid="ignore", divide="ignore"):
        per: dict[str, Any] = {}
        for meth in METHODS:
            smape = t.abs_pct[meth] / t.n
            mase = t.scaled[meth] / t.n_scaled
            per[meth] = {"smape": _list(smape), "mase": _list(mase),
                         "mean_smape": _mean(smape), "mean_mase": _mean(mase)}
        cov = t.covered / t.n
    per["forecaster"]["coverage_80"] = _list(cov)
    per["forecaster"]["mean_coverage_80"] = float(t.covered.sum() / t.n.sum()) if t.n.sum() else None
    f, sn = per["forecaster"]["mean_smape"], per["seasonal_naive"]["mean_smape"]
    out = {**meta, "forecasts_scored": _list(t.n), "methods": per,
           "smape_vs_seasonal_naive": None if not (f and sn) else round(f / sn - 1.0, 4)}
    return out


def _list(v: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(x) else round(float(x), 4) for x in v]


def _mean(v: np.ndarray) -> float | None:
    ok = np.isfinite(v)
    return round(float(v[ok].mean()), 4) if ok.any() else None


def run(series: Sequence[Series], model: ForecasterModel, freq_ms: int, horizon: int, season: int | None = None,
        min_history: int | None = None, every: int | None = None, forecasts_out: TextIO | None = None,
        progress: TextIO | None = sys.stderr, label: str = "") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Backtest ``series``; returns the figures and the latest origin of each series (for a plot)."""
    if horizon < 1:
        raise ValueError(f"--horizon must be at least 1. Got {horizon}.")
    if season is None:
        season = int(86_400_000 // freq_ms) if 86_400_000 % freq_ms == 0 and 86_400_000 // freq_ms >= 2 else 0
    min_history = min_history if min_history is not None else max(HISTORY, 2 * season, horizon)
    every = every if every is not None else DEFAULT_EVERY
    if min_history < HISTORY:
        raise ValueError(f"--min-history must be at least {HISTORY} (the short window). Got {min_history}.")
    totals = Totals(horizon)
    writer = csv.writer(forecasts_out) if forecasts_out is not None else None
    if writer is not None:
        writer.writerow(["id", "origin", "step", "value", "lower", "upper"])
    emit = None if writer is None else (
        lambda sid, o, step, v, lo, hi: writer.writerow([sid, iso(o), step, f"{v:.6g}", f"{lo:.6g}", f"{hi:.6g}"]))
    t0 = time.perf_counter()
    latest = []
    points = 0
    for k, s in enumerate(series, 1):
        last = backtest_series(s, model, freq_ms, horizon, season, min_history, every, totals, emit)
        points += len(s.values)
        if last is not None:
            latest.append(last)
        if progress is not None and (k % 200 == 0 or k == len(series)):
            print(f"backtest{label}: {k}/{len(series)} series, {points:,} points, {time.perf_counter() - t0:.1f} s",
                  file=progress, flush=True)
    meta = {"freq_ms": freq_ms, "horizon_steps": horizon, "season_steps": season, "min_history": min_history,
            "every": every, "series": len(series), "series_with_origins": len(latest), "points": points,
            "forecaster_version": model.version, "interval": 0.8, "seconds": round(time.perf_counter() - t0, 2)}
    return figures(totals, meta), latest


def iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def table(fig: dict[str, Any]) -> str:
    """The figures as a Markdown table: sMAPE, MASE per method and the interval coverage, by step."""
    per = fig["methods"]
    steps = [s for s in REPORT_STEPS if s <= fig["horizon_steps"]]
    if fig["horizon_steps"] not in steps:
        steps.append(fig["horizon_steps"])
    head = ("| step | sMAPE forecaster | sMAPE seasonal naive | sMAPE naive | MASE forecaster | "
            "MASE seasonal naive | MASE naive | 80% coverage | forecasts |")
    lines = [head, "|" + "---:|" * 9]

    def f(v: float | None, pct: bool = False) -> str:
        return "-" if v is None else (f"{100 * v:.1f}%" if pct else f"{v:.3f}")

    for s in steps:
        i = s - 1
        lines.append(f"| {s} | " + " | ".join([
            f(per["forecaster"]["smape"][i]), f(per["seasonal_naive"]["smape"][i]), f(per["naive"]["smape"][i]),
            f(per["forecaster"]["mase"][i]), f(per["seasonal_naive"]["mase"][i]), f(per["naive"]["mase"][i]),
            f(per["forecaster"]["coverage_80"][i], True), f"{int(fig['forecasts_scored'][i] or 0):,}"]) + " |")
    lines.append(f"| mean 1-{fig['horizon_steps']} | " + " | ".join([
        f(per["forecaster"]["mean_smape"]), f(per["seasonal_naive"]["mean_smape"]), f(per["naive"]["mean_smape"]),
        f(per["forecaster"]["mean_mase"]), f(per["seasonal_naive"]["mean_mase"]), f(per["naive"]["mean_mase"]),
        f(per["forecaster"]["mean_coverage_80"], True), ""]) + " |")
    return "\n".join(lines)


def plot(path: str | Path, fig: dict[str, Any], latest: Sequence[dict[str, Any]], title: str = "") -> None:
    """sMAPE and MASE by step for the three methods, and the latest origin of up to four series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(latest)[:4]
    fig_, axes = plt.subplots(1 + (len(shown) + 1) // 2, 2, figsize=(12, 3.2 * (1 + (len(shown) + 1) // 2)),
                              squeeze=False)
    steps = np.arange(1, fig["horizon_steps"] + 1)
    for ax, metric in zip(axes[0], ("smape", "mase"), strict=True):
        for meth in METHODS:
            ax.plot(steps, [np.nan if v is None else v for v in fig["methods"][meth][metric]], label=meth)
        ax.set_xlabel("steps ahead")
        ax.set_title(f"{metric.upper()} by horizon")
        ax.legend()
    for ax, s in zip(axes[1:].ravel(), shown, strict=False):
        hx = (s["history_ts"] - s["target_ts"][0]) / 3_600_000
        tx = (s["target_ts"] - s["target_ts"][0]) / 3_600_000
        ax.plot(hx, s["history"], color="black", lw=0.8, label="history")
        ax.plot(tx, s["actual"], color="black", lw=0.8, ls=":", label="actual")
        ax.plot(tx, s["forecast"], color="C0", label="forecaster")
        ax.fill_between(tx, s["lower"], s["upper"], color="C0", alpha=0.2, label="80% interval")
        ax.plot(tx, s["seasonal_naive"], color="C1", lw=0.8, label="seasonal naive")
        ax.set_title(str(s["id"])[:60])
        ax.set_xlabel("hours from the first target")
    for ax in axes[1:].ravel()[len(shown):]:
        ax.axis("off")
    if shown:
        axes[1][0].legend(fontsize=7)
    fig_.suptitle(title or f"backtest: forecaster {fig['forecaster_version']}")
    fig_.tight_layout()
    fig_.savefig(path, dpi=90)
    plt.close(fig_)


def load_forecaster(store: str | Path, version: str | None = None) -> ForecasterModel:
    return ForecasterModel.from_store(ArtifactStore(store), version)


def main(args: Any) -> int:
    """The ``backtest`` command (arguments from :mod:`training.__main__`)."""
    freq_ms = parse_freq(args.freq)
    series = read_csv(args.csv, freq_ms, args.format)
    if args.limit_series:
        series = series[:args.limit_series]
    model = load_forecaster(args.store, args.version)
    out = open(args.forecasts, "w", newline="") if args.forecasts else None
    try:
        fig, latest = run(series, model, freq_ms, args.horizon, args.season, args.min_history, args.every, out,
                          None if args.no_progress else sys.stderr)
    finally:
        if out is not None:
            out.close()
    fig["csv"] = str(args.csv)
    print(table(fig))
    ratio = fig["smape_vs_seasonal_naive"]
    if ratio is not None:
        print(f"\nforecaster sMAPE {'above' if ratio > 0 else 'below'} seasonal naive by {abs(ratio) * 100:.1f}% "
              f"(mean over steps 1-{args.horizon}); {fig['series_with_origins']:,} of {fig['series']:,} series had "
              f"an origin; {fig['seconds']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2) + "\n")
    plot_path = args.plot or str(Path(args.runs_dir) / f"backtest-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.png")
    Path(plot_path).parent.mkdir(parents=True, exist_ok=True)
    plot(plot_path, fig, latest)
    print(f"plot: {plot_path}")
    return 0


def add_arguments(p: Any) -> None:
    p.add_argument("--csv", required=True, help="wide (id, values...) or long (id, timestamp, value) CSV")
    p.add_argument("--freq", required=True, help="the series' sampling interval, e.g. 1h, 5min, 30s")
    p.add_argument("--horizon", type=int, required=True, help="steps ahead to forecast (1 to this)")
    p.add_argument("--season", type=int, default=None,
                   help="season in steps for seasonal naive and MASE (default: a day of steps; 0: none)")
    p.add_argument("--format", choices=("auto", "wide", "long"), default="auto", help="CSV layout (default: auto)")
    p.add_argument("--min-history", type=int, default=None,
                   help="samples before the first origin (default: the largest of 32, two seasons, the horizon)")
    p.add_argument("--every", type=int, default=None,
                   help=f"samples between origins (default: {DEFAULT_EVERY}, so that origins fall at every time "
                        "of day)")
    p.add_argument("--forecasts", default=None, metavar="PATH", help="write every forecast here as CSV")
    p.add_argument("--json", default=None, metavar="PATH", help="write the figures here as JSON")
    p.add_argument("--plot", default=None, metavar="PATH", help="the figure (default: runs/backtest-<UTC>.png)")
    p.add_argument("--runs-dir", default="runs", help="where the default plot goes (default: %(default)s)")
    p.add_argument("--version", default=None, help="forecaster version (default: production)")
    p.add_argument("--limit-series", type=int, default=None, metavar="N", help="only the first N series")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")


__all__ = ("Series", "read_csv", "run", "table", "plot", "parse_freq", "main", "add_arguments")
