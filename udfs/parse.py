"""Parsing and validation of metric events, with a machine-readable reason for every refusal.

Accepted shapes (one Kafka record each):

- native: ``{"metric", "value", "timestamp", "service", "tags"}`` (``tags`` optional);
- Telegraf JSON output: ``{"name", "fields": {...}, "tags": {"service", ...}, "timestamp"}``, one
  event per numeric field (a boolean is 0 or 1; string fields are states, not measurements, and
  are left out), named ``<name>_<field>``;
- Prometheus samples as JSON (prometheus-kafka-adapter style):
  ``{"labels": {"__name__", "job"|"service", ...}, "value": "1.5", "timestamp"}``.

Timestamps are epoch seconds, milliseconds or microseconds (told apart by magnitude) or ISO-8601
strings with a zone; all become epoch milliseconds UTC. Nothing here raises on bad input: it
returns a :class:`DeadLetter` whose ``reason`` is one of :data:`REASONS`. Hostile input is bounded
by :class:`ParseLimits` (size, nesting depth, tag count and tag lengths), and nesting is measured
before the JSON decoder runs, so that no record can make it recurse deeply.

The same decoder serves the alert-feedback topic (:func:`parse_feedback`) and the model-updates
topic (:func:`parse_model_update`).
"""

from __future__ import annotations

import base64
import json
import math
import re
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
    "timestamp_in_future",  # further ahead of the wall clock than max_future_s
    "late_event",
    "unknown_series",  # a verdict on a series that has no state
    "too_many_series",  # a new series of a service that already holds state.max_series_per_service
    "invalid_value",
    "limit_exceeded",  # over one of the ParseLimits caps; the detail names it
    "unparseable",  # an exception no check foresaw (a bug to fix); the detail names its type
)
# the reasons the job's state gives, not the parsers: whether an event is late, or one series too many
STATE_REASONS = ("late_event", "too_many_series", "unknown_series")
DEAD_LETTER_SCHEMA = "vigil.deadletter/v1"
MAX_NAME = 200
MAX_DEPTH = 8
# the oldest and newest event times any record may carry, whatever the configured bounds: Flink
# keeps event time in a Java long, and ISO-8601 cannot write years past 9999
_TS_MIN_MS, _TS_MAX_MS = 0, 253_402_300_799_999


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
    """Validation bounds. ``None`` disables a time bound (for replays of old data).

    ``max_depth`` bounds how deeply arrays and objects nest (a native record with tags nests 2
    deep); the tag caps bound the tags that become part of the series key, after the shape has
    taken the service and metric name out of them. Lengths count characters.
    """

    max_bytes: int = 65536
    max_past_s: int | None = 7 * 86400
    max_future_s: int | None = 300
    max_depth: int = MAX_DEPTH
    max_tags: int = 32
    max_tag_key_len: int = 64
    max_tag_value_len: int = 256


class _Bad(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


_KEY_SPECIAL = re.compile(r"[\\|,=]")
_KEY_TOKEN = re.compile(r"\\([\\|,=])|([|,=])|([^\\|,=]+)|(\\)")


def series_key(service: str, metric: str, tags: tuple[tuple[str, str], ...]) -> str:
    r"""The canonical series id: ``service|metric|k=v,...``, tags in the order given (the parsers
    sort them by name).

    A ``\``, ``|``, ``,`` or ``=`` inside a name is escaped with a backslash, so that distinct
    (service, metric, tags) never share a key; :func:`split_series_key` is the exact inverse. Names
    without those characters give the plain key.

    >>> series_key("api", "cpu_util", (("instance", "i-1"), ("zone", "b")))
    'api|cpu_util|instance=i-1,zone=b'
    >>> series_key("a|b", "m", (("k", "x,y=z"),))
    'a\\|b|m|k=x\\,y\\=z'
    """
    plain = f"{service}|{metric}|" + ",".join(f"{k}={v}" for k, v in tags)
    n = len(tags)
    # counting is cheaper than escaping: the separators are all the special characters a key
    # holds unless some name holds one too
    if ("\\" not in plain and plain.count("|") == 2 and plain.count("=") == n
            and plain.count(",") == (n - 1 if n else 0)):
        return plain
    return f"{_escape(service)}|{_escape(metric)}|" + ",".join(f"{_escape(k)}={_escape(v)}" for k, v in tags)


def _escape(name: str) -> str:
    return _KEY_SPECIAL.sub(lambda m: "\\" + m.group(), name)


def split_series_key(key: str) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    r"""The (service, metric, tags) that :func:`series_key` made ``key`` of; ``ValueError`` if it is
    no series key.

    >>> split_series_key("api|cpu_util|instance=i-1")
    ('api', 'cpu_util', (('instance', 'i-1'),))
    >>> split_series_key(r"a\|b|m|k=x\,y\=z")
    ('a|b', 'm', (('k', 'x,y=z'),))
    """
    if "\\" in key:
        return _split_escaped(key)
    parts = key.split("|")
    if len(parts) != 3:
        raise ValueError(f"a series key has three '|'-separated parts (service|metric|tags); got {len(parts)}")
    service, metric, rest = parts
    if "," in service or "=" in service or "," in metric or "=" in metric:
        raise ValueError("unescaped ',' or '=' in the service or metric of a series key")
    if not rest:
        return service, metric, ()
    tags = []
    for item in rest.split(","):
        kv = item.split("=")
        if len(kv) != 2:
            raise ValueError(f"each tag of a series key is one 'name=value'; got {item[:40]!r}")
        tags.append((kv[0], kv[1]))
    return service, metric, tuple(tags)


def _split_escaped(key: str) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    heads: list[str] = []  # service, metric
    tags: list[tuple[str, str]] = []
    pieces: list[str] = []  # of the name being read
    tag_name: str | None = None  # once its '=' has been read
    for m in _KEY_TOKEN.finditer(key):
        escaped, sep, text, lone = m.groups()
        if lone is not None:
            raise ValueError("a backslash in a series key escapes one of \\ | , = and nothing else")
        if sep is None:
            pieces.append(escaped if escaped is not None else text)
            continue
        name, pieces = "".join(pieces), []
        if len(heads) < 2:
            if sep != "|":
                raise ValueError(f"unescaped {sep!r} in the service or metric of a series key")
            heads.append(name)
        elif sep == "=" and tag_name is None:
            tag_name = name
        elif sep == "," and tag_name is not None:
            tags.append((tag_name, name))
            tag_name = None
        else:
            raise ValueError(f"unescaped {sep!r} out of place in the tags of a series key")
    name = "".join(pieces)
    if len(heads) < 2:
        raise ValueError("a series key has three '|'-separated parts (service|metric|tags)")
    if tag_name is not None:
        tags.append((tag_name, name))
    elif name or tags:
        raise ValueError("each tag of a series key is one 'name=value'")
    return heads[0], heads[1], tuple(tags)


def parse_record(payload: bytes, now_ms: int, limits: ParseLimits = ParseLimits()) -> list[MetricEvent] | DeadLetter:
    """Parse one Kafka record value into events, or say exactly why not. Never raises.

    >>> parse_record(b'{"metric":"cpu_util","value":3,"timestamp":1700000000,"service":"s"}', 1700000000000)
    [MetricEvent(series='s|cpu_util|', service='s', metric='cpu_util', tags=(), ts_ms=1700000000000, value=3.0)]
    >>> parse_record(b'{"metric":"cpu_util","value":"x","timestamp":1,"service":"s"}', 0).reason
    'wrong_type'
    >>> parse_record(b'[' * 1000, 0).detail
    'record nests more than 8 arrays or objects deep (max_depth=8)'
    """
    try:
        obj = _json_object(payload, limits.max_bytes, limits.max_depth)
        if "fields" in obj and "name" in obj:
            events = _telegraf(obj, limits)
        elif "labels" in obj:
            events = [_prometheus(obj, limits)]
        elif "metric" in obj or "value" in obj:
            events = [_native(obj, limits)]
        else:
            raise _Bad("unknown_shape", "record is neither native (metric/value), Telegraf (name/fields) "
                                        "nor Prometheus (labels/value); keys: " + ",".join(sorted(obj)[:10]))
        for ev in events:
            _check_time(ev.ts_ms, now_ms, limits)
        return events
    except _Bad as bad:
        return DeadLetter(bad.reason, bad.detail)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a record must never fail the task
        return _unparseable(exc)


def _unparseable(exc: BaseException) -> DeadLetter:
    try:
        msg = str(exc)[:200]
    except Exception:  # noqa: BLE001 - an exception whose message cannot be built still has a type
        msg = "?"
    return DeadLetter("unparseable", f"unexpected {type(exc).__name__} while parsing: {msg}")


# A JSON string from its opening quote on, possessive so that a long or unterminated one costs one pass.
_STRING_REST = re.compile(r'(?:[^"\\]++|\\.)*+"', re.S)
_BRACKET_OR_QUOTE = re.compile(r'[\[\]{}"]')


def _nests_deeper(text: str, max_depth: int) -> bool:
    """Whether arrays and objects in ``text`` nest more than ``max_depth`` deep, without recursion.

    Brackets inside strings do not count. Text that is no JSON may be judged either way; what
    matters is that the decoder, which stops at the first error, never goes deeper than this says.
    """
    if text.count("[") + text.count("{") <= max_depth:  # nearly every record: two calls into C
        return False
    depth, pos = 0, 0
    search, string_end = _BRACKET_OR_QUOTE.search, _STRING_REST.match
    while (m := search(text, pos)) is not None:
        c = m.group()
        pos = m.end()
        if c == '"':
            end = string_end(text, pos)
            if end is None:  # unterminated: the decoder fails here
                return False
            pos = end.end()
        elif c in "[{":
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
            if depth < 0:  # a closing bracket too many: the decoder fails here
                return False
    return False


def _json_object(payload: bytes, max_bytes: int, max_depth: int = MAX_DEPTH) -> dict:
    """The record as a JSON object, or :class:`_Bad` saying why not (size, encoding, nesting, syntax, shape)."""
    if len(payload) > max_bytes:
        raise _Bad("oversized", f"record is {len(payload)} bytes; the limit is {max_bytes}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Bad("not_utf8", f"record is not UTF-8: {e.reason} at byte {e.start}") from None
    if _nests_deeper(text, max_depth):
        raise _Bad("not_json", f"record nests more than {max_depth} arrays or objects deep (max_depth={max_depth})")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except _Bad:
        raise
    except ValueError as e:
        if "integer string conversion" in str(e):
            raise _Bad("non_finite_value", f"record holds a number too large for a float: {e}") from None
        raise _Bad("not_json", f"record is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise _Bad("not_object", f"record is a JSON {type(obj).__name__}, not an object")
    return obj


def _reject_constant(name: str) -> float:
    raise _Bad("non_finite_value", f"JSON constant {name} is not a finite number")


def _is_text(s: str) -> bool:
    """False for strings that cannot be written out as UTF-8 (lone surrogates, from ``\\ud800`` escapes)."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _name(v: str, where: str) -> str:
    """``v`` if it can name a service or metric: 1 to MAX_NAME characters of text."""
    if not v or len(v) > MAX_NAME:
        raise _Bad("wrong_type", f"field '{where}' must be 1 to {MAX_NAME} characters; got {len(v)}")
    if not v.isascii() and not _is_text(v):
        raise _Bad("invalid_value", f"field '{where}' holds a lone surrogate, which is not text")
    return v


def _str_field(obj: dict, name: str, where: str = "") -> str:
    if name not in obj or obj[name] is None:
        raise _Bad("missing_field", f"field '{where}{name}' is missing")
    v = obj[name]
    if not isinstance(v, str):
        raise _Bad("wrong_type", f"field '{where}{name}' must be a string; got {type(v).__name__}")
    return _name(v, where + name)


def _number(v: object, name: str, allow_str: bool) -> float:
    if isinstance(v, bool) or v is None:
        raise _Bad("wrong_type", f"field '{name}' must be a number; got {type(v).__name__}")
    if isinstance(v, (int, float)):
        try:
            f = float(v)
        except OverflowError:  # an integer of up to 4300 digits
            raise _Bad("non_finite_value", f"field '{name}' is an integer too large for a float") from None
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
    if not _TS_MIN_MS <= ts_ms <= _TS_MAX_MS:
        raise _Bad("timestamp_out_of_range", f"timestamp {ts_ms} ms is outside the years 1970 to 9999")
    if limits.max_past_s is not None and ts_ms < now_ms - limits.max_past_s * 1000:
        raise _Bad("timestamp_out_of_range", f"timestamp {ts_ms} ms is more than {limits.max_past_s} s in the past")
    if limits.max_future_s is not None and ts_ms > now_ms + limits.max_future_s * 1000:
        # a host whose clock runs ahead: refused, so that it cannot push its series' event time on
        raise _Bad("timestamp_in_future",
                   f"timestamp {ts_ms} ms is more than {limits.max_future_s} s ahead of the wall clock ({now_ms} ms)")


def _tags(obj: object, where: str, limits: ParseLimits, taken: int = 0) -> dict[str, str]:
    """Tags as strings, each within the length caps. ``taken``: how many of them the shape may
    take out for the service and metric (the tag count is checked on what is left, by :func:`_event`)."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise _Bad("wrong_type", f"field '{where}' must be an object of strings; got {type(obj).__name__}")
    if len(obj) > limits.max_tags + taken:
        raise _Bad("limit_exceeded", f"field '{where}' has {len(obj)} tags; the limit is max_tags={limits.max_tags}")
    out = {}
    for k, v in obj.items():
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise _Bad("wrong_type", f"tag '{where}.{k[:40]}' must be a string; got {type(v).__name__}")
        if type(v) is not str:
            v = str(v)
        if len(k) > limits.max_tag_key_len:
            raise _Bad("limit_exceeded", f"a tag name of '{where}' is {len(k)} characters; "
                                         f"the limit is max_tag_key_len={limits.max_tag_key_len}")
        if len(v) > limits.max_tag_value_len:
            raise _Bad("limit_exceeded", f"tag '{where}.{k[:40]}' is {len(v)} characters; "
                                         f"the limit is max_tag_value_len={limits.max_tag_value_len}")
        if not (k.isascii() and v.isascii()) and not (_is_text(k) and _is_text(v)):
            raise _Bad("invalid_value", f"a tag of '{where}' holds a lone surrogate, which is not text")
        out[k] = v
    return out


def _event(service: str, metric: str, tags: dict[str, str], ts_ms: int, value: float,
           limits: ParseLimits) -> MetricEvent:
    if len(tags) > limits.max_tags:
        raise _Bad("limit_exceeded", f"the series has {len(tags)} tags; the limit is max_tags={limits.max_tags}")
    t = tuple(sorted(tags.items()))
    return MetricEvent(series_key(service, metric, t), service, metric, t, ts_ms, value)


def _native(obj: dict, limits: ParseLimits) -> MetricEvent:
    metric = _str_field(obj, "metric")
    service = _str_field(obj, "service")
    if "value" not in obj:
        raise _Bad("missing_field", "field 'value' is missing")
    value = _number(obj["value"], "value", allow_str=False)
    ts = _timestamp(obj.get("timestamp"))
    return _event(service, metric, _tags(obj.get("tags"), "tags", limits), ts, value, limits)


def _telegraf(obj: dict, limits: ParseLimits) -> list[MetricEvent]:
    name = _str_field(obj, "name")
    tags = _tags(obj.get("tags"), "tags", limits, taken=1)
    service = tags.pop("service", None)
    if not service:
        raise _Bad("missing_field", "field 'tags.service' is missing (Telegraf records name their service in a tag)")
    _name(service, "tags.service")
    fields = obj["fields"]
    if not isinstance(fields, dict) or not fields:
        raise _Bad("wrong_type", "field 'fields' must be a non-empty object of numbers")
    ts = _timestamp(obj.get("timestamp"))
    events = []
    for k, v in sorted(fields.items()):
        # Telegraf mixes measurements with states: a boolean is a 0/1 gauge, a string (e.g.
        # net_response's result_type) or null names a state and is not a measurement to score
        if isinstance(v, str) or v is None:
            continue
        metric = f"{name}_{k}"
        if len(metric) > MAX_NAME or not metric.isascii():
            _name(metric, f"fields.{k[:40]}")
        value = float(v) if isinstance(v, bool) else _number(v, f"fields.{k[:40]}", allow_str=False)
        events.append(_event(service, metric, tags, ts, value, limits))
    if not events:
        raise _Bad("wrong_type", "no field of 'fields' is a number or a boolean (string fields are states, "
                   "not measurements)")
    return events


def _prometheus(obj: dict, limits: ParseLimits) -> MetricEvent:
    labels = _tags(obj.get("labels"), "labels", limits, taken=3)
    metric = labels.pop("__name__", None) or obj.get("name")
    if not metric or not isinstance(metric, str):
        raise _Bad("missing_field", "field 'labels.__name__' is missing")
    _name(metric, "labels.__name__")
    service = labels.pop("service", None) or labels.pop("job", None)
    if not service:
        raise _Bad("missing_field", "field 'labels.service' (or 'labels.job') is missing")
    _name(service, "labels.service")
    if "value" not in obj:
        raise _Bad("missing_field", "field 'value' is missing")
    value = _number(obj["value"], "value", allow_str=True)
    return _event(service, metric, labels, _timestamp(obj.get("timestamp")), value, limits)


def parse_feedback(payload: bytes, max_bytes: int = 65536, max_depth: int = MAX_DEPTH) -> Feedback | DeadLetter:
    """Parse one record of the alert-feedback topic, or say exactly why not. Never raises.

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
        obj = _json_object(payload, max_bytes, max_depth)
        schema = _str_field(obj, "schema")
        if schema != FEEDBACK_SCHEMA:
            raise _Bad("invalid_value", f"field 'schema' must be '{FEEDBACK_SCHEMA}'; got {schema[:40]!r}")
        verdict = _str_field(obj, "verdict")
        if verdict not in VERDICTS:
            raise _Bad("invalid_value", f"field 'verdict' must be one of {list(VERDICTS)}; got {verdict[:40]!r}")
        series = obj.get("series")
        if series is None:
            raise _Bad("missing_field", "field 'series' is missing")
        if not isinstance(series, str):
            raise _Bad("wrong_type", f"field 'series' must be a string; got {type(series).__name__}")
        try:
            service = split_series_key(series)[0] if len(series) <= 5 * MAX_NAME and _is_text(series) else ""
        except ValueError:
            service = ""
        if not service:
            raise _Bad("invalid_value", f"field 'series' must be an alert's series.key (service|metric|tags); "
                                        f"got {series[:80]!r}")
        reason = obj.get("reason", "")
        if not isinstance(reason, str):
            raise _Bad("wrong_type", f"field 'reason' must be a string; got {type(reason).__name__}")
        if not _is_text(reason):
            raise _Bad("invalid_value", "field 'reason' holds a lone surrogate, which is not text")
        at = _str_field(obj, "at")
        try:
            when = datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError:
            raise _Bad("wrong_type", f"field 'at' must be an ISO-8601 time; got {at[:40]!r}") from None
        if when.tzinfo is None:
            raise _Bad("invalid_value", f"field 'at' must carry a time zone (UTC); got {at[:40]!r}")
        return Feedback(_str_field(obj, "alert_id"), series, service, _str_field(obj, "category"),
                        verdict, _str_field(obj, "by"), reason[:MAX_NAME], int(when.timestamp() * 1000))
    except _Bad as bad:
        return DeadLetter(bad.reason, bad.detail)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a record must never fail the task
        return _unparseable(exc)


class ModelUpdate(NamedTuple):
    """An instruction of the model-updates topic: serve ``version`` of ``model`` as ``alias``
    (``version`` None: stop shadowing)."""

    model: str
    version: str | None
    alias: str


MODEL_UPDATE_SCHEMA = "vigil.model-update/v1"
# what models/ serves; udfs/ imports nothing from models/, and a test keeps the two in step
MODEL_NAMES = ("detector", "forecaster", "clusterer", "classifier")
MODEL_ALIASES = ("production", "shadow")
VERSION_PATTERN = re.compile(r"v-[0-9a-f]{12}")  # the artifact store's content addresses
MAX_UPDATE_BYTES = 4096


def parse_model_update(payload: bytes, max_bytes: int = MAX_UPDATE_BYTES,
                       max_depth: int = MAX_DEPTH) -> ModelUpdate | DeadLetter:
    """Parse one record of the model-updates topic (``vigil.model-update/v1``), or say why not. Never raises.

    ``schema`` may be left out, and ``alias`` defaults to ``production``; ``version`` must be a
    content address of the artifact store (``v-`` and 12 hex digits), or null to stop shadowing.
    Nothing here touches the store: a well-formed update may still name a version it lacks.

    >>> parse_model_update(b'{"schema":"vigil.model-update/v1","model":"detector","version":"v-0123456789ab",'
    ...                    b'"alias":"shadow","previous":null,"action":"promote","by":"cli"}')
    ModelUpdate(model='detector', version='v-0123456789ab', alias='shadow')
    >>> parse_model_update(b'{"model":"detector","version":"../../etc"}').reason
    'invalid_value'
    """
    try:
        obj = _json_object(payload, max_bytes, max_depth)
        schema = obj.get("schema", MODEL_UPDATE_SCHEMA)
        if schema != MODEL_UPDATE_SCHEMA:
            raise _Bad("invalid_value", f"field 'schema' must be '{MODEL_UPDATE_SCHEMA}'; got {str(schema)[:40]!r}")
        model = _str_field(obj, "model")
        if model not in MODEL_NAMES:
            raise _Bad("invalid_value", f"field 'model' must be one of {list(MODEL_NAMES)}; got {model[:40]!r}")
        alias = obj.get("alias", "production")
        if not isinstance(alias, str):
            raise _Bad("wrong_type", f"field 'alias' must be a string; got {type(alias).__name__}")
        if alias not in MODEL_ALIASES:
            raise _Bad("invalid_value", f"field 'alias' must be one of {list(MODEL_ALIASES)}; got {alias[:40]!r}")
        if "version" not in obj:
            raise _Bad("missing_field", "field 'version' is missing (null stops shadowing)")
        version = obj["version"]
        if version is None:
            if alias != "shadow":
                raise _Bad("invalid_value", "field 'version' may be null only for alias 'shadow' (stop shadowing); "
                                            "a production version can be replaced, not removed")
        elif not isinstance(version, str):
            raise _Bad("wrong_type", f"field 'version' must be a string or null; got {type(version).__name__}")
        elif not VERSION_PATTERN.fullmatch(version):
            raise _Bad("invalid_value", f"field 'version' must be a content address ('v-' and 12 hex digits); "
                                        f"got {version[:40]!r}")
        return ModelUpdate(model, version, alias)
    except _Bad as bad:
        return DeadLetter(bad.reason, bad.detail)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a record must never fail the task
        return _unparseable(exc)
