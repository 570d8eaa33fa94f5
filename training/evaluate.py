"""Evaluation metrics, plots and the run report.

Metrics are computed on data a model was not trained on; every figure the report prints is
also stored in the artifact's manifest under ``evaluation``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def roc_auc(y: np.ndarray, s: np.ndarray) -> float | None:
    """ROC AUC of scores ``s`` for binary labels ``y`` (None if only one class is present)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(bool)
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, s))


def average_precision(y: np.ndarray, s: np.ndarray) -> float | None:
    """Area under the precision-recall curve (None if there are no positives)."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(y).astype(bool)
    if not y.any():
        return None
    return float(average_precision_score(y, s))


def alert_f1(alert: np.ndarray, label: np.ndarray, incident: np.ndarray, series: np.ndarray,
             pairs_per_incident: Mapping[int, int]) -> dict[str, float]:
    """Alert precision, incident recall and their F1.

    precision = share of alerts that fall inside an incident window on an affected series;
    recall = mean over incidents of the share of their affected series that alerted at least
    once inside the window (an incident on 32 series found on 8 of them counts 0.25).
    """
    n_alerts = int(alert.sum())
    precision = float(label[alert].mean()) if n_alerts else 0.0
    hit = alert & (incident >= 0)
    n_series = int(series.max()) + 1 if series.size else 1
    pairs = np.unique(incident[hit].astype(np.int64) * n_series + series[hit])
    found: dict[int, int] = {}
    for p in (pairs // n_series).tolist():
        found[p] = found.get(p, 0) + 1
    recalls = [found.get(i, 0) / n for i, n in pairs_per_incident.items() if n > 0]
    recall = float(np.mean(recalls)) if recalls else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "alerts": n_alerts}


def conformal_quantile(abs_residuals: np.ndarray, level: float) -> float:
    """Split-conformal half-width: the ceil((n+1)*level)/n empirical quantile of |residual|."""
    r = np.sort(np.asarray(abs_residuals, dtype=np.float64))
    n = r.size
    if n == 0:
        raise ValueError("conformal calibration needs at least one residual")
    k = min(math.ceil((n + 1) * level), n)
    return float(r[k - 1])


def classification_metrics(y_true: Sequence[str] | np.ndarray, y_pred: Sequence[str] | np.ndarray,
                           train_labels: Sequence[str] | np.ndarray) -> dict[str, Any]:
    """Accuracy and macro-F1 of a head, next to the majority-class baseline (majority of *training* labels)."""
    from sklearn.metrics import accuracy_score, f1_score

    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    vals, counts = np.unique(np.asarray(train_labels), return_counts=True)
    majority = str(vals[int(np.argmax(counts))])
    base = np.full(yt.shape, majority)
    return {
        "accuracy": float(accuracy_score(yt, yp)),
        "macro_f1": float(f1_score(yt, yp, average="macro", zero_division=0)),
        "majority_label": majority,
        "majority_accuracy": float(accuracy_score(yt, base)),
        "majority_macro_f1": float(f1_score(yt, base, average="macro", zero_division=0)),
        # the most frequent label *of the test set* (not knowable in advance): a harder bar
        "test_majority_accuracy": float(np.unique(yt, return_counts=True)[1].max() / max(yt.size, 1)),
        "n": int(yt.size),
    }


# --------------------------------------------------------------------------------------------
# Plots and report
# --------------------------------------------------------------------------------------------


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_detector(path: Path, score: np.ndarray, label: np.ndarray, kind: np.ndarray, threshold_base: float) -> None:
    """Score distributions (normal vs each incident kind) and the precision-recall curve."""
    from sklearn.metrics import precision_recall_curve

    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    bins = np.linspace(0, 1, 51)
    a.hist(score[~label], bins=bins, density=True, alpha=0.5, label=f"normal (n={int((~label).sum())})")
    for k in sorted(set(kind[label].tolist())):
        m = label & (kind == k)
        a.hist(score[m], bins=bins, density=True, histtype="step", lw=1.5, label=f"{k} (n={int(m.sum())})")
    a.axvline(threshold_base, color="k", ls="--", lw=1, label="threshold base")
    a.set_yscale("log")
    a.set_xlabel("detector score")
    a.set_title("Score distributions (held-out scenario)")
    a.legend(fontsize=8)
    if label.any():
        p, r, _ = precision_recall_curve(label, score)
        b.plot(r, p)
    b.set_xlabel("recall (points)")
    b.set_ylabel("precision")
    b.set_title("Detector precision-recall (held-out)")
    b.grid(alpha=0.3)
    _save(plt, fig, path)


def plot_forecast(path: Path, panels: Sequence[dict[str, Any]]) -> None:
    """Rolling forecasts vs actuals with the 80% and 95% intervals, one panel per horizon."""
    plt = _plt()
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 3.2 * len(panels)), squeeze=False)
    for ax, p in zip(axes[:, 0], panels, strict=True):
        t = p["t_hours"]
        ax.fill_between(t, p["lo95"], p["hi95"], alpha=0.15, color="C0", label="95% interval")
        ax.fill_between(t, p["lo80"], p["hi80"], alpha=0.3, color="C0", label="80% interval")
        ax.plot(t, p["pred"], color="C0", lw=1.2, label="forecast")
        ax.plot(t, p["actual"], color="k", lw=0.8, label="actual")
        ax.plot(t, p["naive"], color="C3", lw=0.8, ls=":", label="naive (last value)")
        ax.set_title(p["title"], fontsize=10)
        ax.set_xlabel("target time (hours into scenario)")
        ax.legend(fontsize=7, loc="upper left")
    _save(plt, fig, path)


def plot_clusters(path: Path, sizes: Sequence[int], services: Sequence[str], drift_scores: np.ndarray,
                  normal_scores: np.ndarray) -> None:
    """Cluster sizes (with the service each cluster mostly holds) and outlier-score distributions."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    a.bar(range(len(sizes)), sizes)
    a.set_xticks(range(len(sizes)), [f"{i}\n{s}" for i, s in enumerate(services)], fontsize=7)
    a.set_title("Cluster sizes (training entity vectors)")
    bins = np.linspace(0, 1, 41)
    b.hist(normal_scores, bins=bins, density=True, alpha=0.5, label="normal entities")
    if drift_scores.size:
        b.hist(drift_scores, bins=bins, density=True, alpha=0.5, label="peer-drift entities")
    b.set_yscale("log")
    b.set_xlabel("outlier score")
    b.set_title("Outlier scores (held-out scenario)")
    b.legend(fontsize=8)
    _save(plt, fig, path)


def plot_classifier(path: Path, fp_true: np.ndarray, fp_prob: np.ndarray) -> None:
    """False-positive probability by true class."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 26)
    ax.hist(fp_prob[fp_true == 1], bins=bins, alpha=0.5, label="false positives")
    ax.hist(fp_prob[fp_true == 0], bins=bins, alpha=0.5, label="true incidents")
    ax.set_xlabel("predicted false-positive probability")
    ax.set_title("Classifier fp head (held-out)")
    ax.legend()
    _save(plt, fig, path)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(rows: Mapping[str, Any], indent: str = "") -> list[str]:
    out = []
    for k, v in rows.items():
        if isinstance(v, Mapping):
            out.append(f"{indent}- **{k}**")
            out.extend(_table(v, indent + "  "))
        elif isinstance(v, list) and len(v) > 8:
            out.append(f"{indent}- {k}: [{', '.join(_fmt(x) for x in v[:8])}, ...] ({len(v)} values)")
        elif isinstance(v, list):
            out.append(f"{indent}- {k}: [{', '.join(_fmt(x) for x in v)}]")
        else:
            out.append(f"{indent}- {k}: {_fmt(v)}")
    return out


def write_report(run_dir: Path, header: Mapping[str, Any], sections: Mapping[str, Mapping[str, Any]],
                 plots: Mapping[str, str]) -> Path:
    """Write ``report.md`` (header facts, one section of figures per model, the plots)."""
    lines = ["# Vigil training run", ""]
    lines += _table(header)
    for name, figures in sections.items():
        lines += ["", f"## {name}", ""]
        lines += _table(figures)
        if name in plots:
            lines += ["", f"![{name}]({plots[name]})"]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
