"""Parsing and validation of metric events, with a machine-readable reason for every refusal.

Accepted shapes (one Kafka record each):

- native: ``{"metric", "value", "timestamp", "service", "tags"}`` (``tags`` optional);
- Telegraf JSON output: ``{"name", "fields": {...}, "tags": {...}, "timestamp"}``, one event per
  numeric field (a boolean is 0 or 1; string fields are states, not measurements: left out and
  counted as ``non_numeric_field``), named ``<name>_<field>``; and Telegraf's batch format
  ``{"metrics": [<one such record>, ...]}``;
- Prometheus samples as JSON (prometheus-kafka-adapter style):
  ``{"labels": {"__name__", ...}, "value": "1.5", "timestamp"}``; the value ``"NaN"`` is how a
  staleness marker reaches JSON (remote write sends it when a target or series goes away): it is
  counted as ``stale_marker`` and skipped, not refused;
- OpenTelemetry metrics as OTLP/JSON (``{"resourceMetrics": [...]}``, what the collector's Kafka
  exporter writes with ``encoding: otlp_json``): gauge and sum data points become events named
  after the metric, with the resource's and the point's attributes as tags (non-scalar ones are
  left out, counted as ``non_scalar_attribute``) and the resource's ``service.name`` as the
  service; histogram, exponential-histogram and summary metrics are counted as
  ``unsupported_metric_type``, and a point flagged "no recorded value" as ``stale_marker``.

The service of a Telegraf record or a Prometheus sample is the first of
``ParseLimits.service_tags`` (``service``, then ``job``, then ``host``) its tags hold, taken out of
the tags; an OTLP resource's is its ``service.name``, else the first of those attributes.

A record that holds several (a Telegraf batch, an OTLP export) is parsed part by part: a part that
is refused is a dead letter of its own, with the part as its payload, and the rest are kept
(:func:`parse`). What is skipped is not lost: :class:`Parsed` counts it by :data:`SKIP_REASONS`.

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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from udfs.records import DeadLetterRecord, FeedbackRecord, ModelUpdateRecord, OpsEventRecord

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
# what a parser leaves out of a record without refusing it, counted (a job metric, not a dead letter)
SKIP_REASONS = (
    "non_numeric_field",  # a Telegraf string or null field: a state, not a measurement
    "stale_marker",  # a Prometheus staleness marker, an OTLP point with no recorded value
    "unsupported_metric_type",  # an OTLP histogram, exponential histogram or summary
    "non_scalar_attribute",  # an OTLP array, key-value list or bytes attribute: not a tag
)
SERVICE_TAGS = ("service", "job", "host")
# the shapes a metric record may have ("unreadable": refused before its shape was known)
SHAPES = ("native", "telegraf", "telegraf_batch", "prometheus", "otlp", "unreadable")
# the reasons the job's state gives, not the parsers: whether an event is late, or one series too many
STATE_REASONS = ("late_event", "too_many_series", "unknown_series")
MAX_NAME = 200
# a longer number literal makes the whole record unreadable (the JVM's JSON reader, which shards the
# records, refuses one too: operators/java ShardBatcher.MAX_NUMBER_CHARS)
MAX_NUMBER_CHARS = 1000
MAX_DEPTH = 16  # OTLP/JSON nests 13 deep for a scalar attribute of a data point
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
        return DeadLetterRecord(self.reason, self.detail, text, enc,
                                source={"topic": topic, "partition": partition, "offset": offset},
                                received_at=datetime.fromtimestamp(now_ms / 1000, tz=UTC).isoformat()).to_json()


@dataclass(frozen=True)
class ParseLimits:
    """Validation bounds. ``None`` disables a time bound (for replays of old data).

    ``max_depth`` bounds how deeply arrays and objects nest (a native record with tags nests 2
    deep, an OTLP export 13); the tag caps bound the tags that become part of the series key, after the shape has
    taken the service and metric name out of them. Lengths count characters.
    """

    max_bytes: int = 65536
    max_past_s: int | None = 7 * 86400
    max_future_s: int | None = 300
    max_depth: int = MAX_DEPTH
    max_tags: int = 32
    max_tag_key_len: int = 64
    max_tag_value_len: int = 256
    # the tags that may name the service of a Telegraf record or Prometheus sample, first match wins
    service_tags: tuple[str, ...] = SERVICE_TAGS


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


class Parsed(NamedTuple):
    """What one record held: its events, the dead letters of its refused parts (with the part's
    own payload, or None when the refusal is the whole record's) and what was skipped, by reason."""

    events: list[MetricEvent]
    dead: list[tuple[DeadLetter, bytes | None]]
    skipped: dict[str, int]
    shape: str = "unreadable"  # one of SHAPES


def parse(payload: bytes, now_ms: int, limits: ParseLimits = ParseLimits()) -> Parsed:
    """Parse one Kafka record value into events, part by part, saying exactly why of each part
    refused. Never raises.

    >>> p = parse(b'{"metrics":[{"name":"cpu","fields":{"usage":3,"state":"ok"},"tags":{"host":"h1"},'
    ...           b'"timestamp":1700000000},{"name":"mem","fields":{"used":"x"},"tags":{},"timestamp":1}]}',
    ...           1700000000000)
    >>> [e.series for e in p.events], [d.reason for d, _ in p.dead], p.skipped
    (['h1|cpu_usage|'], ['missing_field'], {'non_numeric_field': 1})
    """
    out = Parsed([], [], {})
    try:
        obj = _json_object(payload, limits.max_bytes, limits.max_depth)
        if "resourceMetrics" in obj:
            out = out._replace(shape="otlp")
            _otlp(obj, now_ms, limits, out)
        elif "metrics" in obj and "name" not in obj:
            out = out._replace(shape="telegraf_batch")
            parts = obj["metrics"]
            if not isinstance(parts, list) or not parts:
                raise _Bad("wrong_type", "field 'metrics' of a Telegraf batch must be a non-empty array of metrics")
            for part in parts:
                _part(part, now_ms, limits, out, _single)
        else:
            out = out._replace(shape=_shape(obj))
            out.events.extend(_checked(_single(obj, limits, out.skipped), now_ms, limits))
    except _Bad as bad:
        out.dead.append((DeadLetter(bad.reason, bad.detail), None))
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a record must never fail the task
        out.dead.append((_unparseable(exc), None))
    return out


def parse_record(payload: bytes, now_ms: int, limits: ParseLimits = ParseLimits()) -> list[MetricEvent] | DeadLetter:
    """The events of one record, or the first of its refusals (see :func:`parse`, which keeps the
    good parts of a batch whose other parts are refused). Never raises.

    >>> parse_record(b'{"metric":"cpu_util","value":3,"timestamp":1700000000,"service":"s"}', 1700000000000)
    [MetricEvent(series='s|cpu_util|', service='s', metric='cpu_util', tags=(), ts_ms=1700000000000, value=3.0)]
    >>> parse_record(b'{"metric":"cpu_util","value":"x","timestamp":1,"service":"s"}', 0).reason
    'wrong_type'
    >>> parse_record(b'[' * 1000, 0).detail
    'record nests more than 16 arrays or objects deep (max_depth=16)'
    """
    p = parse(payload, now_ms, limits)
    return p.dead[0][0] if p.dead else p.events


def _shape(obj: dict) -> str:
    if "fields" in obj and "name" in obj:
        return "telegraf"
    if "labels" in obj:
        return "prometheus"
    return "native" if "metric" in obj or "value" in obj else "unreadable"


def _single(obj: dict, limits: ParseLimits, skipped: dict[str, int]) -> list[MetricEvent]:
    """The events of one record of a single-record shape (native, Telegraf, Prometheus)."""
    if "fields" in obj and "name" in obj:
        return _telegraf(obj, limits, skipped)
    if "labels" in obj:
        return _prometheus(obj, limits, skipped)
    if "metric" in obj or "value" in obj:
        return [_native(obj, limits)]
    raise _Bad("unknown_shape", "record is neither native (metric/value), Telegraf (name/fields, or a batch "
                                "of them in metrics), Prometheus (labels/value) nor OTLP (resourceMetrics); "
                                "keys: " + ",".join(sorted(obj)[:10]))


def _checked(events: list[MetricEvent], now_ms: int, limits: ParseLimits) -> list[MetricEvent]:
    for ev in events:
        _check_time(ev.ts_ms, now_ms, limits)
    return events


def part_payload(part: object) -> bytes:
    """The payload a dead letter of one part of a record carries: the part as compact JSON."""
    return json.dumps(part, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")


def _part(part: object, now_ms: int, limits: ParseLimits, out: Parsed,
          parse_one: Callable[[dict, ParseLimits, dict[str, int]], list[MetricEvent]]) -> None:
    """Parse one part of a batch into ``out``; a refusal is the part's own dead letter."""
    try:
        if not isinstance(part, dict):
            raise _Bad("not_object", f"a part of the batch is a JSON {type(part).__name__}, not an object")
        skipped: dict[str, int] = {}
        events = _checked(parse_one(part, limits, skipped), now_ms, limits)
    except _Bad as bad:
        out.dead.append((DeadLetter(bad.reason, bad.detail), part_payload(part)))
        return
    except Exception as exc:  # noqa: BLE001 - as in parse()
        out.dead.append((_unparseable(exc), part_payload(part)))
        return
    out.events.extend(events)
    for k, n in skipped.items():
        out.skipped[k] = out.skipped.get(k, 0) + n


def _skip(skipped: dict[str, int], reason: str, n: int = 1) -> None:
    skipped[reason] = skipped.get(reason, 0) + n


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
        obj = json.loads(text, parse_constant=_reject_constant, parse_int=_int, parse_float=_float)
    except _Bad:
        raise
    except ValueError as e:
        if "integer string conversion" in str(e):
            raise _Bad("non_finite_value", f"record holds a number too large for a float: {e}") from None
        raise _Bad("not_json", f"record is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise _Bad("not_object", f"record is a JSON {type(obj).__name__}, not an object")
    return obj


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Bad("limit_exceeded",
                   f"record holds a number of {len(text)} characters; the limit is {MAX_NUMBER_CHARS}")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Bad("limit_exceeded",
                   f"record holds a number of {len(text)} characters; the limit is {MAX_NUMBER_CHARS}")
    return float(text)


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


def _expect_schema(obj: dict, schema_id: str, required: bool) -> None:
    """The record's ``schema`` field must be ``schema_id``; where not ``required``, a record without
    one is taken as that schema."""
    schema = _str_field(obj, "schema") if required else obj.get("schema", schema_id)
    if schema != schema_id:
        raise _Bad("invalid_value", f"field 'schema' must be '{schema_id}'; got {str(schema)[:40]!r}")


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


def _service(tags: dict[str, str], limits: ParseLimits, where: str) -> str:
    """Take the service out of ``tags``: the first of ``limits.service_tags`` they hold."""
    for name in limits.service_tags:
        v = tags.get(name)
        if v:
            del tags[name]
            return _name(v, f"{where}.{name}")
    raise _Bad("missing_field", f"no tag of '{where}' names the service (tried {', '.join(limits.service_tags)}: "
                                "validation.service_tags)")


def _telegraf(obj: dict, limits: ParseLimits, skipped: dict[str, int]) -> list[MetricEvent]:
    name = _str_field(obj, "name")
    tags = _tags(obj.get("tags"), "tags", limits, taken=1)
    service = _service(tags, limits, "tags")
    fields = obj["fields"]
    if not isinstance(fields, dict) or not fields:
        raise _Bad("wrong_type", "field 'fields' must be a non-empty object of numbers")
    ts = _timestamp(obj.get("timestamp"))
    events = []
    for k, v in sorted(fields.items()):
        # Telegraf mixes measurements with states: a boolean is a 0/1 gauge, a string (e.g.
        # net_response's result_type) or null names a state and is not a measurement to score
        if isinstance(v, str) or v is None:
            _skip(skipped, "non_numeric_field")
            continue
        metric = f"{name}_{k}"
        if len(metric) > MAX_NAME or not metric.isascii():
            _name(metric, f"fields.{k[:40]}")
        value = float(v) if isinstance(v, bool) else _number(v, f"fields.{k[:40]}", allow_str=False)
        events.append(_event(service, metric, tags, ts, value, limits))
    return events


def _prometheus(obj: dict, limits: ParseLimits, skipped: dict[str, int]) -> list[MetricEvent]:
    labels = _tags(obj.get("labels"), "labels", limits, taken=2)
    metric = labels.pop("__name__", None) or obj.get("name")
    if not metric or not isinstance(metric, str):
        raise _Bad("missing_field", "field 'labels.__name__' is missing")
    _name(metric, "labels.__name__")
    service = _service(labels, limits, "labels")
    if "value" not in obj:
        raise _Bad("missing_field", "field 'value' is missing")
    v = obj["value"]
    if isinstance(v, str) and v.strip().lower() == "nan":  # a staleness marker, as JSON writes it
        _skip(skipped, "stale_marker")
        return []
    value = _number(v, "value", allow_str=True)
    return [_event(service, metric, labels, _timestamp(obj.get("timestamp")), value, limits)]


_OTLP_KINDS = ("gauge", "sum")
_OTLP_UNSUPPORTED = ("histogram", "exponentialHistogram", "summary")
_OTLP_NO_RECORDED_VALUE = 1  # DataPointFlags.FLAG_NO_RECORDED_VALUE_MASK


def _otlp(obj: dict, now_ms: int, limits: ParseLimits, out: Parsed) -> None:
    parts = obj["resourceMetrics"]
    if not isinstance(parts, list) or not parts:
        raise _Bad("wrong_type", "field 'resourceMetrics' must be a non-empty array")
    for part in parts:
        _part(part, now_ms, limits, out, _otlp_resource)


def _list(obj: dict, name: str, where: str) -> list:
    v = obj.get(name)
    if v is None:
        return []
    if not isinstance(v, list):
        raise _Bad("wrong_type", f"field '{where}{name}' must be an array; got {type(v).__name__}")
    return v


def _otlp_attributes(kvs: list, where: str, skipped: dict[str, int]) -> dict[str, object]:
    """OTLP key-value attributes as tag values (bounded and checked by :func:`_tags` afterwards)."""
    out: dict[str, object] = {}
    for kv in kvs:
        if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
            raise _Bad("wrong_type", f"an attribute of '{where}' must be an object with a string 'key'")
        val = kv.get("value")
        if not isinstance(val, dict) or len(val) != 1:
            raise _Bad("wrong_type", f"attribute '{where}.{kv['key'][:40]}' must hold one typed value")
        ((kind, v),) = val.items()
        if kind in ("stringValue", "intValue", "doubleValue", "boolValue") and isinstance(v, (str, int, float)):
            out[kv["key"]] = str(v).lower() if isinstance(v, bool) else v
        elif kind in ("arrayValue", "kvlistValue", "bytesValue"):
            _skip(skipped, "non_scalar_attribute")
        else:
            raise _Bad("wrong_type", f"attribute '{where}.{kv['key'][:40]}' holds {kind}, not an OTLP AnyValue")
    return out


def _otlp_resource(rm: dict, limits: ParseLimits, skipped: dict[str, int]) -> list[MetricEvent]:
    """The events of one ``ResourceMetrics``: the data points of its gauges and sums."""
    resource = rm.get("resource") or {}
    if not isinstance(resource, dict):
        raise _Bad("wrong_type", "field 'resource' must be an object")
    attrs = _otlp_attributes(_list(resource, "attributes", "resource."), "resource.attributes", skipped)
    service = attrs.pop("service.name", None)
    res_tags = _tags(attrs, "resource.attributes", limits, taken=len(limits.service_tags))
    if isinstance(service, str) and service:
        _name(service, "resource.attributes.service.name")
    else:
        service = _service(res_tags, limits, "resource.attributes")
    events = []
    seen = 0  # data points and unsupported metrics
    for sm in _list(rm, "scopeMetrics", ""):
        if not isinstance(sm, dict):
            raise _Bad("wrong_type", "a scopeMetrics entry must be an object")
        for m in _list(sm, "metrics", "scopeMetrics."):
            if not isinstance(m, dict):
                raise _Bad("wrong_type", "a metrics entry must be an object")
            metric = _str_field(m, "name", "metrics.")
            kind = next((k for k in _OTLP_KINDS if k in m), None)
            if kind is None:
                if any(k in m for k in _OTLP_UNSUPPORTED):
                    _skip(skipped, "unsupported_metric_type")
                    seen += 1
                    continue
                raise _Bad("unknown_shape", f"metric '{metric[:40]}' holds no gauge, sum, histogram or summary")
            data = m[kind]
            if not isinstance(data, dict):
                raise _Bad("wrong_type", f"field '{metric[:40]}.{kind}' must be an object")
            for dp in _list(data, "dataPoints", f"{metric[:40]}.{kind}."):
                seen += 1
                ev = _otlp_point(dp, service, metric, res_tags, limits, skipped)
                if ev is not None:
                    events.append(ev)
    if not seen:  # no data at all: a malformed export rather than an empty one
        raise _Bad("missing_field", "resource holds no data point (scopeMetrics[].metrics[].gauge or "
                                    "sum .dataPoints)")
    return events


def _otlp_point(dp: object, service: str, metric: str, res_tags: dict[str, str], limits: ParseLimits,
                skipped: dict[str, int]) -> MetricEvent | None:
    where = f"{metric[:40]}.dataPoints"
    if not isinstance(dp, dict):
        raise _Bad("wrong_type", f"an entry of '{where}' must be an object")
    flags = dp.get("flags", 0)
    if isinstance(flags, int) and not isinstance(flags, bool) and flags & _OTLP_NO_RECORDED_VALUE:
        _skip(skipped, "stale_marker")
        return None
    if "asDouble" in dp:
        value = _number(dp["asDouble"], f"{where}.asDouble", allow_str=True)
    elif "asInt" in dp:  # an int64, which OTLP/JSON writes as a string
        v = dp["asInt"]
        if isinstance(v, str) and not re.fullmatch(r"-?[0-9]{1,19}", v):
            raise _Bad("wrong_type", f"field '{where}.asInt' must be an integer; got the string {v[:40]!r}")
        value = _number(int(v) if isinstance(v, str) else v, f"{where}.asInt", allow_str=False)
    else:
        raise _Bad("missing_field", f"field '{where}.asDouble' (or asInt) is missing")
    ts = dp.get("timeUnixNano")
    if ts in (None, "", "0", 0):
        raise _Bad("missing_field", f"field '{where}.timeUnixNano' is missing")
    tags = dict(res_tags)
    tags.update(_tags(_otlp_attributes(_list(dp, "attributes", where + "."), where + ".attributes", skipped),
                      where + ".attributes", limits))
    return _event(service, metric, tags, _timestamp(ts), value, limits)


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
        _expect_schema(obj, FeedbackRecord.SCHEMA, required=True)
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


OPS_KINDS = ("deploy", "maintenance")
MAX_WINDOW_S = 7 * 86400  # a window longer than a week is a mistake, not a plan


class OpsEvent(NamedTuple):
    """A deployment or maintenance window of one service (``vigil.ops-event/v1``), in event time."""

    kind: str  # one of OPS_KINDS
    service: str
    start_ms: int
    end_ms: int
    reason: str
    by: str


def parse_ops_event(payload: bytes, max_bytes: int = 65536, max_depth: int = MAX_DEPTH) -> OpsEvent | DeadLetter:
    """Parse one record of the events topic, or say exactly why not. Never raises.

    ``{"kind": "deploy" | "maintenance", "service", "at", "duration_s"}``, with ``reason`` and ``by``
    optional and ``schema`` (``vigil.ops-event/v1``) optional; other fields (a version, a commit)
    are left alone. ``at`` is when the window opens (epoch or ISO-8601 with a zone), ``duration_s``
    how long it lasts (up to a week; 0 closes the service's open window of that kind at ``at``).

    >>> parse_ops_event(b'{"kind":"deploy","service":"search","at":"2026-12-03T10:00:00Z","duration_s":900,'
    ...                 b'"version":"1.4.2","by":"argo"}')
    OpsEvent(kind='deploy', service='search', start_ms=1796292000000, end_ms=1796292900000, reason='', by='argo')
    >>> parse_ops_event(b'{"kind":"reboot","service":"search","at":1,"duration_s":60}').reason
    'invalid_value'
    """
    try:
        obj = _json_object(payload, max_bytes, max_depth)
        _expect_schema(obj, OpsEventRecord.SCHEMA, required=False)
        kind = _str_field(obj, "kind")
        if kind not in OPS_KINDS:
            raise _Bad("invalid_value", f"field 'kind' must be one of {list(OPS_KINDS)}; got {kind[:40]!r}")
        service = _str_field(obj, "service")
        if "at" not in obj:
            raise _Bad("missing_field", "field 'at' is missing (when the window opens)")
        try:
            start = _timestamp(obj["at"])
        except _Bad as bad:
            raise _Bad(bad.reason, bad.detail.replace("'timestamp'", "'at'")) from None
        if not _TS_MIN_MS <= start <= _TS_MAX_MS:
            raise _Bad("timestamp_out_of_range", f"field 'at' is {start} ms, outside 1970 to 9999")
        if "duration_s" not in obj:
            raise _Bad("missing_field", "field 'duration_s' is missing (how long the window lasts)")
        duration = _number(obj["duration_s"], "duration_s", allow_str=False)
        if not 0 <= duration <= MAX_WINDOW_S:
            raise _Bad("invalid_value", f"field 'duration_s' must be 0 to {MAX_WINDOW_S} (a week); got {duration:g}")
        texts = []
        for name in ("reason", "by"):
            v = obj.get(name, "")
            if not isinstance(v, str):
                raise _Bad("wrong_type", f"field '{name}' must be a string; got {type(v).__name__}")
            if not _is_text(v):
                raise _Bad("invalid_value", f"field '{name}' holds a lone surrogate, which is not text")
            texts.append(v[:MAX_NAME])
        return OpsEvent(kind, service, start, start + int(duration * 1000), texts[0], texts[1])
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
        _expect_schema(obj, ModelUpdateRecord.SCHEMA, required=False)
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
