"""The records Vigil exchanges with its users, one class per kind, each with its schema id.

Every record the job (or its offline side) writes to a topic or a file is built from one of these
classes, and every reader checks the ``schema`` field against the class's ``SCHEMA``: the wire
formats and their ids live here and nowhere else. Each class's fields are the record's keys in the
order they are written (``schema`` first), and ``schemas/<name>.json`` (the class's ``NAME``)
publishes the same fields; ``tests/udfs/test_records.py`` holds the two together.

A record holds its values as they go on the wire: producers round and format (ISO-8601 times,
decimals), the record only lays them out. Nested parts (an alert's ``series`` or ``impact``, a
forecast's ``horizons``) stay plain dicts and lists, written as they are.

>>> ScoreRecord("api|cpu_util|", 1000, 0.5, 0.1, 0.6, "", 0.0).to_json()
'{"schema":"vigil.score/v1","series":"api|cpu_util|","ts_ms":1000,"value":0.5,"score":0.1,"threshold":0.6,\
"trigger":"","evidence":0.0}'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar

_COMPACT = (",", ":")


@dataclass(frozen=True)
class Record:
    """What every record has: a schema id (``SCHEMA``), the name of its JSON Schema file (``NAME``)
    and its JSON, compact, keys in field order after ``schema``."""

    SCHEMA: ClassVar[str]
    NAME: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """The record as the JSON object it is written as (nested parts are not copied)."""
        return {"schema": self.SCHEMA, **{f.name: getattr(self, f.name) for f in fields(self)}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=_COMPACT)


# --- what the job writes -------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertRecord(Record):
    """An alert revision of the alerts topic: one per incident (a service and category), re-sent on
    escalation and when it resolves."""

    SCHEMA: ClassVar[str] = "vigil.alert/v1"
    NAME: ClassVar[str] = "alert"

    alert_id: str
    fingerprint: str
    revision: int
    status: str  # open, escalated, suppressed, resolved
    trigger: str  # detector, forecast, cluster
    series: dict[str, Any]  # key, service, metric, tags, entity
    window: dict[str, Any]  # start, end, candidates
    startsAt: str  # Alertmanager's spelling, which the alert keeps
    endsAt: str | None  # null until the "resolved" revision
    event_time: str
    emitted_at: str
    value: float
    expected_value: float
    anomaly: dict[str, float]  # score, threshold, detector_score
    severity: str
    priority: str
    category: str
    team: str
    false_positive_probability: float
    classifier: dict[str, Any]
    feedback: dict[str, Any] | None
    impact: dict[str, Any]
    forecast: dict[str, Any]
    cluster: dict[str, Any] | None
    explanation: dict[str, Any]
    suppressed_by: list[str]
    deploying: bool
    recommended_actions: list[str]
    related_series: list[str]
    models: dict[str, str]

    @classmethod
    def revised_json(cls, last: Mapping[str, Any], **changes: Any) -> str:
        """A later revision of an alert already written, from ``last`` (its :meth:`to_dict`, as kept
        in state) with ``changes``: every other key as it was, in its place. ``last`` may come from an
        older layout and lack a field; ``changes`` must name fields of the record."""
        unknown = set(changes) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"not fields of {cls.SCHEMA}: {sorted(unknown)}")
        return json.dumps({**last, **changes}, separators=_COMPACT)


@dataclass(frozen=True)
class ForecastRecord(Record):
    """A series' forecast at five horizons, with its interval and time to breach (forecasts topic)."""

    SCHEMA: ClassVar[str] = "vigil.forecast/v1"
    NAME: ClassVar[str] = "forecast"

    series: str
    service: str
    metric: str
    tags: dict[str, str]
    event_time: str
    value: float
    horizons: list[dict[str, float]]  # horizon_min, value, lower, upper
    interval: float
    time_to_breach_s: float | None
    limit: float | None
    model_version: str


@dataclass(frozen=True)
class DriftRecord(Record):
    """A drift test that fired on a series' detector scores or forecast residuals (drift topic);
    retraining reads it (``training.drift``)."""

    SCHEMA: ClassVar[str] = "vigil.drift/v1"
    NAME: ClassVar[str] = "drift"

    series: str
    service: str
    metric: str
    tags: dict[str, str]
    signal: str  # detector_score, forecast_residual
    model: str  # detector, forecaster
    model_version: str
    detector: str  # page_hinkley
    event_time: str
    detected_at: str
    stats: dict[str, Any]


@dataclass(frozen=True)
class ShadowRecord(Record):
    """What the production and the shadow version of a model said of one input (shadow topic)."""

    SCHEMA: ClassVar[str] = "vigil.shadow/v1"
    NAME: ClassVar[str] = "shadow"

    model: str
    series: str
    service: str
    event_time: str
    production: dict[str, Any]  # version, then what it said
    shadow: dict[str, Any]


@dataclass(frozen=True)
class ScoreRecord(Record):
    """The detector's verdict on one sample (scores topic, when configured)."""

    SCHEMA: ClassVar[str] = "vigil.score/v1"
    NAME: ClassVar[str] = "score"

    series: str
    ts_ms: int
    value: float
    score: float
    threshold: float
    trigger: str
    evidence: float


@dataclass(frozen=True)
class DeadLetterRecord(Record):
    """A refused record, why, and where it came from, with its raw payload (dead-letter topic)."""

    SCHEMA: ClassVar[str] = "vigil.deadletter/v1"
    NAME: ClassVar[str] = "dead-letter"

    reason: str
    detail: str
    payload: str
    payload_encoding: str  # utf8, base64
    source: dict[str, Any]  # topic, partition, offset
    received_at: str


@dataclass(frozen=True)
class ModelEventRecord(Record):
    """What an operator did with a model update: serving, stopped or refused (model-events topic)."""

    SCHEMA: ClassVar[str] = "vigil.model-event/v1"
    NAME: ClassVar[str] = "model-event"

    operator: str
    model: str | None
    version: str | None
    alias: str
    status: str
    detail: str
    at_ms: int


# --- what the job reads --------------------------------------------------------------------------
# Fields with a default are optional on the wire: the readers (udfs.parse) fill them in.


@dataclass(frozen=True)
class FeedbackRecord(Record):
    """A person's verdict on an alert (alert-feedback topic): ``series`` and ``category`` echo the
    alert's, so that the job can route it; ``at`` is ISO-8601 with a zone."""

    SCHEMA: ClassVar[str] = "vigil.feedback/v1"
    NAME: ClassVar[str] = "feedback"

    alert_id: str
    series: str
    category: str
    verdict: str  # ack, resolved, false_positive
    by: str
    at: str
    reason: str = ""


@dataclass(frozen=True)
class ModelUpdateRecord(Record):
    """Serve ``version`` of ``model`` as ``alias`` (None: stop shadowing), on the compacted
    model-updates topic; the registry writes it, ``at`` defaulting to now."""

    SCHEMA: ClassVar[str] = "vigil.model-update/v1"
    NAME: ClassVar[str] = "model-update"

    model: str
    version: str | None
    alias: str = "production"
    previous: str | None = None
    action: str = ""
    by: str = ""
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


@dataclass(frozen=True)
class OpsEventRecord(Record):
    """A deployment or maintenance window of a service (events topic): opens at ``at`` (epoch or
    ISO-8601 with a zone) for ``duration_s`` (0 closes the open one)."""

    SCHEMA: ClassVar[str] = "vigil.ops-event/v1"
    NAME: ClassVar[str] = "ops-event"

    kind: str  # deploy, maintenance
    service: str
    at: str | int | float
    duration_s: float
    reason: str = ""
    by: str = ""


# --- what the benchmarks write -------------------------------------------------------------------


@dataclass(frozen=True)
class BaselineAlertRecord(Record):
    """An alert of the benchmark's baseline job (``bench.baseline``: one river model per series)."""

    SCHEMA: ClassVar[str] = "vigil.bench-baseline-alert/v1"
    NAME: ClassVar[str] = "bench-baseline-alert"

    series: dict[str, Any]  # key, service, metric, tags
    event_time: str
    emitted_at: str
    value: float
    score: float


RECORDS: tuple[type[Record], ...] = (AlertRecord, ForecastRecord, DriftRecord, ShadowRecord, ScoreRecord,
                                     DeadLetterRecord, ModelEventRecord, FeedbackRecord, ModelUpdateRecord,
                                     OpsEventRecord, BaselineAlertRecord)
