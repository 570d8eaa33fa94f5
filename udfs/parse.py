"""Parsing and validation of metric events, with a machine-readable reason for every refusal.

Accepted shapes (one Kafka record each):

- native: ``{"metric", "value", "timestamp", "service", "tags"}`` (``tags`` optional);
- Telegraf JSON output: ``{"name", "fields": {...}, "tags": {"service", ...}, "timestamp"}``, one
  event per numeric field, named ``<name>_<field>``;
- Prometheus samples as JSON (prometheus-kafka-adapter style):
  ``{"labels": {"__name__", "job"|"service", ...}, "value": "1.5", "timestamp"}``.

Timestamps are epoch seconds, milliseconds or microseconds (told apart by magnitude) or ISO-8601
strings with a zone; all become epoch milliseconds UTC. Nothing here raises on bad input: it
returns a :class:`DeadLetter` whose ``reason`` is one of :data:`REASONS`.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

REASONS = (
    "oversized",
    "not_utf8",
    "not_json",
    "not_object",
    "unknown_shape",
    "missing_field",
    "wrong_type",
    "non_finite_value",
    "timestamp_out_of_range",
    "late_event",
    "invalid_value",
)
DEAD_LETTER_SCHEMA = "vigil.deadletter/v1"
MAX_NAME = 200


class MetricEvent(NamedTuple):
    """One validated sample of one series."""

    series: str
    service: str
    metric: str
    tags: tuple[tuple[str, str], ...]
    ts_ms: int
    value: float

    def tag(self, name: str, default: str | None = None) -> str | None:
        for k, v in self.tags:
            if k == name:
                return v
        return default


class Feedback(NamedTuple):
    """A person's verdict on an alert (``vigil.feedback/v1``), routed to the alert's series and service."""

    alert_id: str
    series: str
    service: str
    category: str
    verdict: str  # one of VERDICTS
    by: str
    reason: str
    at_ms: int


FEEDBACK_SCHEMA = "vigil.feedback/v1"
VERDICTS = ("ack", "resolved", "false_positive")


@dataclass(frozen=True)
class DeadLetter:
    """Why a record was refused, with enough to find and replay it."""

    reason: str
    detail: str

    def to_json(self, payload: bytes, topic: str, partition: int, offset: int, now_ms: int) -> str:
        try:
            text, enc = payload.decode("utf-8"), "utf8"
        except UnicodeDecodeError:
            text, enc = base64.b64encode(payload).decode("ascii"), "base64"
        return json.dumps(
            {
                "schema": DEAD_LETTER_SCHEMA,
                "reason": self.reason,
                "detail": self.detail,
                "payload": text,
                "payload_encoding": enc,
                "source": {"topic": topic, "partition": partition, "offset": offset},
                "received_at": datetime.fromtimestamp(now_ms / 1000, tz=UTC).isoformat(),
            },
            separators=(",", ":"),
        )


@dataclass(frozen=True)
class ParseLimits:
    """Validation bounds. ``None`` disables a time bound (for replays of old data)."""

    max_bytes: int = 65536
    max_past_s: int | None = 7 * 86400
    max_future_s: int | None = 3600


class _Bad(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def series_key(service: str, metric: str, tags: tuple[tuple[str, str], ...]) -> str:
    """The canonical series id: ``service|metric|k=v,...`` with tags sorted by name."""
    return f"{service}|{metric}|" + ",".join(f"{k}={v}" for k, v in tags)


def parse_record(payload: bytes, now_ms: int, limits: ParseLimits = ParseLimits()) -> list[MetricEvent] | DeadLetter:
    """Parse one Kafka record value into events, or say exactly why not.

    >>> parse_record(b'{"metric":"cpu_util","value":3,"timestamp":1700000000,"service":"s"}', 1700000000000)
    [MetricEvent(series='s|cpu_util|', service='s', metric='cpu_util', tags=(), ts_ms=1700000000000, value=3.0)]
    >>> parse_record(b'{"metric":"cpu_util","value":"x","timestamp":1,"service":"s"}', 0).reason
    'wrong_type'
    """
    try:
        obj = _json_object(payload, limits.max_bytes)
        if "fields" in obj and "name" in obj:
            events = _telegraf(obj)
        elif "labels" in obj:
            events = [_prometheus(obj)]
        elif "metric" in obj or "value" in obj:
            events = [_native(obj)]
        else:
            raise _Bad("unknown_shape", "record is neither native (metric/value), Telegraf (name/fields) "
                                        "nor Prometheus (labels/value); keys: " + ",".join(sorted(obj)[:10]))
        for ev in events:
            _check_time(ev.ts_ms, now_ms, limits)
        return events
    except _Bad as bad:
        return DeadLetter(bad.reason, bad.detail)


def _json_object(payload: bytes, max_bytes: int) -> dict:
    """The record as a JSON object, or :class:`_Bad` saying why not (size, encoding, syntax, shape)."""
    if len(payload) > max_bytes:
        raise _Bad("oversized", f"record is {len(payload)} bytes; the limit is {max_bytes}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Bad("not_utf8", f"record is not UTF-8: {e.reason} at byte {e.start}") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except _Bad:
        raise
    except ValueError as e:
        raise _Bad("not_json", f"record is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise _Bad("not_object", f"record is a JSON {type(obj).__name__}, not an object")
    return obj


def _reject_constant(name: str) -> float:
    raise _Bad("non_finite_value", f"JSON constant {name} is not a finite number")


def _str_field(obj: dict, name: str, where: str = "") -> str:
    if name not in obj or obj[name] is None:
        raise _Bad("missing_field", f"field '{where}{name}' is missing")
    v = obj[name]
    if not isinstance(v, str):
        raise _Bad("wrong_type", f"field '{where}{name}' must be a string; got {type(v).__name__}")
    if not v or len(v) > MAX_NAME:
        raise _Bad("wrong_type", f"field '{where}{name}' must be 1 to {MAX_NAME} characters; got {len(v)}")
    return v


def _number(v: object, name: str, allow_str: bool) -> float:
    if isinstance(v, bool) or v is None:
        raise _Bad("wrong_type", f"field '{name}' must be a number; got {type(v).__name__}")
    if isinstance(v, (int, float)):
        f = float(v)
    elif allow_str and isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            raise _Bad("wrong_type", f"field '{name}' must be a number; got the string {v[:40]!r}") from None
    else:
        raise _Bad("wrong_type", f"field '{name}' must be a number; got {type(v).__name__}")
    if not math.isfinite(f):
        raise _Bad("non_finite_value", f"field '{name}' is {f}, not a finite number")
    return f


def _timestamp(v: object) -> int:
    if v is None:
        raise _Bad("missing_field", "field 'timestamp' is missing")
    if isinstance(v, str):
        try:
            dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            try:
                return _timestamp(float(v))
            except (_Bad, ValueError):
                raise _Bad("wrong_type", f"field 'timestamp' is not ISO-8601 or epoch: {v[:40]!r}") from None
        if dt.tzinfo is None:
            raise _Bad("wrong_type", f"field 'timestamp' has no time zone: {v[:40]!r}")
        return int(dt.timestamp() * 1000)
    t = _number(v, "timestamp", allow_str=False)
    a = abs(t)
    if a >= 1e17:  # nanoseconds
        return int(t / 1e6)
    if a >= 1e14:  # microseconds
        return int(t / 1e3)
    if a >= 1e11:  # milliseconds
        return int(t)
    return int(t * 1000)


def _check_time(ts_ms: int, now_ms: int, limits: ParseLimits) -> None:
    if limits.max_past_s is not None and ts_ms < now_ms - limits.max_past_s * 1000:
        raise _Bad("timestamp_out_of_range", f"timestamp {ts_ms} ms is more than {limits.max_past_s} s in the past")
    if limits.max_future_s is not None and ts_ms > now_ms + limits.max_future_s * 1000:
        raise _Bad("timestamp_out_of_range",
                   f"timestamp {ts_ms} ms is more than {limits.max_future_s} s in the future")


def _tags(obj: object, where: str) -> dict[str, str]:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise _Bad("wrong_type", f"field '{where}' must be an object of strings; got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise _Bad("wrong_type", f"tag '{where}.{k}' must be a string; got {type(v).__name__}")
        out[str(k)] = str(v)
    return out


def _event(service: str, metric: str, tags: dict[str, str], ts_ms: int, value: float) -> MetricEvent:
    t = tuple(sorted(tags.items()))
    return MetricEvent(series_key(service, metric, t), service, metric, t, ts_ms, value)


def _native(obj: dict) -> MetricEvent:
    metric = _str_field(obj, "metric")
    service = _str_field(obj, "service")
    if "value" not in obj:
        raise _Bad("missing_field", "field 'value' is missing")
    value = _number(obj["value"], "value", allow_str=False)
    ts = _timestamp(obj.get("timestamp"))
    return _event(service, metric, _tags(obj.get("tags"), "tags"), ts, value)


def _telegraf(obj: dict) -> list[MetricEvent]:
    name = _str_field(obj, "name")
    tags = _tags(obj.get("tags"), "tags")
    service = tags.pop("service", None)
    if not service:
        raise _Bad("missing_field", "field 'tags.service' is missing (Telegraf records name their service in a tag)")
    fields = obj["fields"]
    if not isinstance(fields, dict) or not fields:
        raise _Bad("wrong_type", "field 'fields' must be a non-empty object of numbers")
    ts = _timestamp(obj.get("timestamp"))
    return [_event(service, f"{name}_{k}", tags, ts, _number(v, f"fields.{k}", allow_str=False))
            for k, v in sorted(fields.items())]


def _prometheus(obj: dict) -> MetricEvent:
    labels = _tags(obj.get("labels"), "labels")
    metric = labels.pop("__name__", None) or obj.get("name")
    if not metric or not isinstance(metric, str):
        raise _Bad("missing_field", "field 'labels.__name__' is missing")
    service = labels.pop("service", None) or labels.pop("job", None)
    if not service:
        raise _Bad("missing_field", "field 'labels.service' (or 'labels.job') is missing")
    if "value" not in obj:
        raise _Bad("missing_field", "field 'value' is missing")
    value = _number(obj["value"], "value", allow_str=True)
    return _event(service, metric, labels, _timestamp(obj.get("timestamp")), value)


def parse_feedback(payload: bytes, max_bytes: int = 65536) -> Feedback | DeadLetter:
    """Parse one record of the alert-feedback topic, or say exactly why not.

    A verdict names the alert it judges by ``alert_id`` and echoes the alert's ``series`` (its
    ``series.key``) and ``category``, so that the job can route it to the series and service
    state that produced the alert; ``by`` says who, ``reason`` why (optional), ``at`` when.

    >>> fb = parse_feedback(b'{"schema":"vigil.feedback/v1","alert_id":"a1","series":"api|cpu_util|instance=i-1",'
    ...                     b'"category":"saturation","verdict":"false_positive","by":"ana",'
    ...                     b'"at":"2026-11-29T10:00:00Z"}')
    >>> fb.service, fb.verdict, fb.at_ms
    ('api', 'false_positive', 1795946400000)
    >>> parse_feedback(b'{"schema":"vigil.feedback/v1","alert_id":"a1","series":"api|cpu|","category":"c",'
    ...                b'"verdict":"maybe","by":"ana","at":"2026-11-29T10:00:00Z"}').reason
    'invalid_value'
    """
    try:
        obj = _json_object(payload, max_bytes)
        schema = _str_field(obj, "schema")
        if schema != FEEDBACK_SCHEMA:
            raise _Bad("invalid_value", f"field 'schema' must be '{FEEDBACK_SCHEMA}'; got {schema!r}")
        verdict = _str_field(obj, "verdict")
        if verdict not in VERDICTS:
            raise _Bad("invalid_value", f"field 'verdict' must be one of {list(VERDICTS)}; got {verdict!r}")
        series = obj.get("series")
        if series is None:
            raise _Bad("missing_field", "field 'series' is missing")
        if not isinstance(series, str):
            raise _Bad("wrong_type", f"field 'series' must be a string; got {type(series).__name__}")
        if series.count("|") < 2 or not series.split("|", 1)[0] or len(series) > 5 * MAX_NAME:
            raise _Bad("invalid_value", f"field 'series' must be an alert's series.key (service|metric|tags); "
                                        f"got {series[:80]!r}")
        reason = obj.get("reason", "")
        if not isinstance(reason, str):
            raise _Bad("wrong_type", f"field 'reason' must be a string; got {type(reason).__name__}")
        at = _str_field(obj, "at")
        try:
            when = datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError:
            raise _Bad("wrong_type", f"field 'at' must be an ISO-8601 time; got {at[:40]!r}") from None
        if when.tzinfo is None:
            raise _Bad("invalid_value", f"field 'at' must carry a time zone (UTC); got {at[:40]!r}")
        return Feedback(_str_field(obj, "alert_id"), series, series.split("|", 1)[0], _str_field(obj, "category"),
                        verdict, _str_field(obj, "by"), reason[:MAX_NAME], int(when.timestamp() * 1000))
    except _Bad as bad:
        return DeadLetter(bad.reason, bad.detail)
