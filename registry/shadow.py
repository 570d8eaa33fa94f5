"""Production against shadow on live traffic: what the job's ``vigil.shadow/v1`` records say.

While a version is promoted to the ``shadow`` alias, every operator that runs its model also runs
the shadow on the same input and writes both answers to the shadow topic (never an alert). This
module reads that topic and sums the comparison up for ``python -m training diff --live``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def live_diff(records: Iterable[dict[str, Any]], model: str, production: str, shadow: str) -> dict[str, Any]:
    """Compare ``production`` and ``shadow`` versions of ``model`` on the shadow records that name both.

    Gives the number of inputs both scored, the agreement on alerting (both, neither, only one),
    and per model the difference of what they answered: score (detector), horizon values
    (forecaster, relative to production's), outlier score and cluster (clusterer), category,
    priority, team and false-positive probability (classifier).

    >>> recs = [{"model": "detector", "production": {"version": "a", "score": 0.2, "alert": False},
    ...          "shadow": {"version": "b", "score": 0.6, "alert": True}}]
    >>> d = live_diff(recs, "detector", "a", "b")
    >>> d["inputs"], d["only_shadow_alerts"], d["mean_abs_score_diff"]
    (1, 1, 0.4)
    """
    rows = [r for r in records if r.get("model") == model and r["production"]["version"] == production
            and r["shadow"]["version"] == shadow]
    out: dict[str, Any] = {"model": model, "production": production, "shadow": shadow, "inputs": len(rows)}
    if not rows:
        return out
    if model in ("detector", "clusterer"):
        key = "score" if model == "detector" else "outlier_score"
        pa = [r["production"]["alert"] for r in rows]
        sa = [r["shadow"]["alert"] for r in rows]
        out.update({
            "both_alert": sum(a and b for a, b in zip(pa, sa, strict=True)),
            "only_production_alerts": sum(a and not b for a, b in zip(pa, sa, strict=True)),
            "only_shadow_alerts": sum(b and not a for a, b in zip(pa, sa, strict=True)),
            "alert_agreement": round(sum(a == b for a, b in zip(pa, sa, strict=True)) / len(rows), 4),
            "mean_abs_score_diff": round(sum(abs(r["production"][key] - r["shadow"][key]) for r in rows)
                                         / len(rows), 6),
        })
        if model == "clusterer":
            out["same_cluster"] = round(sum(r["production"]["cluster"] == r["shadow"]["cluster"] for r in rows)
                                        / len(rows), 4)
    elif model == "forecaster":
        rel = []
        for r in rows:
            for p, s in zip(r["production"]["horizons"], r["shadow"]["horizons"], strict=False):
                rel.append(abs(p["value"] - s["value"]) / max(abs(p["value"]), 1e-9))
        out["mean_rel_forecast_diff"] = round(sum(rel) / len(rel), 6) if rel else None
    else:
        for k in ("category", "priority", "team"):
            out[f"same_{k}"] = round(sum(r["production"][k] == r["shadow"][k] for r in rows) / len(rows), 4)
        out["mean_abs_fp_diff"] = round(sum(abs(r["production"]["fp"] - r["shadow"]["fp"]) for r in rows)
                                        / len(rows), 6)
    return out


def read_shadow_topic(bootstrap: str, topic: str, max_records: int | None = None,
                      timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """Every committed record of the shadow topic up to its current end (the latest ``max_records``)."""
    from common.kafka_io import read_topic

    out = []
    for rec in read_topic(bootstrap, topic, max_records=max_records, timeout_s=timeout_s).records:
        try:
            out.append(json.loads(rec.value))
        except ValueError:
            continue  # the job alone writes this topic; anything else is not a shadow record
    return out
