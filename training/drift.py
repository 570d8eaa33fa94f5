"""Drift events (``vigil.drift/v1``) as a reason to retrain and a data selection.

The running job keeps per-series drift statistics on the detector's scores and the forecaster's
residuals and writes an event to the drift topic when one fires::

    {"schema": "vigil.drift/v1", "series": "<series key>", "service": "...", "metric": "...",
     "tags": {...}, "signal": "detector_score" | "forecast_residual", "model": "detector" | "forecaster",
     "model_version": "...", "detector": "page_hinkley", "event_time": "<ISO-8601 UTC>",
     "detected_at": "<ISO-8601 UTC>", "stats": {...}}

:func:`parse_drift` reads such records (from the topic or a JSON-lines file); bad ones are counted
and listed with a reason, never raised. A :class:`DriftReport` gives the run's reason for the
manifests (``{"drift": [series...], "events": n}``) and the selection retraining makes with it:

* ``--data replay``: only the drifted series are replayed, plus a bounded, seeded sample of the
  others as background (:func:`training.sources.select_series`);
* ``--data generator``: the generator cannot reproduce what drifted, so the rows of the drifted
  series' *metric kinds* (``cpu_util``, ``latency_p99_ms``, ...) weigh :data:`DRIFT_WEIGHT` times
  more, for the model whose signal drifted: they come first in the detector's fit and calibration
  sample (events with ``model`` "detector") and carry that sample weight in the forecaster's fit
  (events with ``model`` "forecaster");
* ``--data nab``: NAB is a fixed corpus with no relation to the fleet's series: the reason is
  recorded, nothing is selected.

The selection is part of the data fingerprint; the reason itself is not. So drift that changes
what a model learns from makes a new version carrying the reason, while a reason that changes
nothing (NAB, or a model whose signal did not drift) gives the same content-addressed version as
before, whose manifest keeps the lineage it was first written with; the run report always has it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from udfs.parse import split_series_key
from udfs.records import DriftRecord

DRIFT_MODELS = ("detector", "forecaster")
DRIFT_WEIGHT = 3.0
MAX_LISTED = 20


def parse_time_ms(v: object) -> int | None:
    """Epoch ms of an ISO-8601 time *with a zone* (``Z`` or an offset); None if it is not one.

    >>> parse_time_ms("2026-01-02T03:04:05Z"), parse_time_ms("2026-01-02T03:04:05"), parse_time_ms(5)
    (1767323045000, None, None)
    """
    if not isinstance(v, str):
        return None
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return int(dt.timestamp() * 1000)


@dataclass(frozen=True)
class DriftEvent:
    """One valid drift event."""

    series: str
    metric: str
    model: str
    signal: str
    detector: str
    model_version: str | None
    detected_at_ms: int
    where: str


@dataclass
class DriftReport:
    """Drift events read for one retraining run, and the ones refused."""

    events: list[DriftEvent] = field(default_factory=list)
    bad: list[dict[str, str]] = field(default_factory=list)
    before_since: int = 0
    origin: dict[str, Any] = field(default_factory=dict)

    @property
    def series(self) -> list[str]:
        return sorted({e.series for e in self.events})

    @property
    def metrics(self) -> list[str]:
        return sorted({e.metric for e in self.events})

    def metric_kinds(self, model: str | None = None) -> list[str]:
        """Metric kinds (``models.features.metric_kind``) of the series that drifted (for ``model`` only, if given)."""
        from models.features import metric_kind

        return sorted({metric_kind(e.metric) for e in self.events if model is None or e.model == model})

    def reason(self) -> dict[str, Any]:
        """The manifests' ``lineage.reason``: which series drifted, from how many events."""
        by_model = Counter(e.model for e in self.events)
        return {"drift": self.series, "events": len(self.events),
                "by_model": {m: by_model[m] for m in DRIFT_MODELS if by_model[m]}}

    def summary(self) -> dict[str, Any]:
        """For the run report: the reason, and what was refused and why."""
        return {**self.reason(), "read": self.origin, "older_than_since": self.before_since,
                "bad": len(self.bad), "bad_by_reason": dict(Counter(b["reason"] for b in self.bad)),
                "bad_records": self.bad[:MAX_LISTED]}


def _bad(where: str, reason: str, detail: str) -> dict[str, str]:
    return {"where": where, "reason": reason, "detail": detail[:200]}


def parse_drift(records: Iterable[tuple[str, bytes]], since_ms: int | None = None) -> DriftReport:
    """Valid drift events of ``records`` (``(where, raw)`` pairs); events detected before ``since_ms``
    are counted and left out. Never raises on a bad record: it is listed with its reason."""
    out = DriftReport()
    for where, raw in records:
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            out.bad.append(_bad(where, "not_json", str(exc)))
            continue
        if not isinstance(obj, dict):
            out.bad.append(_bad(where, "not_object", type(obj).__name__))
            continue
        if obj.get("schema") != DriftRecord.SCHEMA:
            out.bad.append(_bad(where, "wrong_schema",
                                f"schema {obj.get('schema')!r}, expected {DriftRecord.SCHEMA!r}"))
            continue
        series = obj.get("series")
        try:
            key_metric = split_series_key(series)[1] if isinstance(series, str) else None
        except ValueError:
            key_metric = None
        if key_metric is None:
            out.bad.append(_bad(where, "bad_series", f"series {series!r} is not a series key 'service|metric|tags'"))
            continue
        model = obj.get("model")
        if model not in DRIFT_MODELS:
            out.bad.append(_bad(where, "bad_model", f"model {model!r}, expected one of {list(DRIFT_MODELS)}"))
            continue
        detected = parse_time_ms(obj.get("detected_at"))
        if detected is None:
            out.bad.append(_bad(where, "bad_time",
                                f"detected_at {obj.get('detected_at')!r} is not ISO-8601 with a zone"))
            continue
        if since_ms is not None and detected < since_ms:
            out.before_since += 1
            continue
        metric = obj["metric"] if isinstance(obj.get("metric"), str) else key_metric
        version = obj.get("model_version")
        out.events.append(DriftEvent(str(series), metric, str(model), str(obj.get("signal", "")),
                                     str(obj.get("detector", "")), version if isinstance(version, str) else None,
                                     detected, where))
    return out
