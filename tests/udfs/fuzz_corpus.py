"""Hostile inputs for the parsers of ``udfs.parse``, generated deterministically from a seed.

Each generator takes a seeded :class:`random.Random` and returns one payload (bytes): a valid
record of one of the accepted shapes, mutated structurally (wrong types, missing fields, hostile
names and numbers) or byte by byte, or plain garbage (random bytes, JSON-ish noise, deep nesting).
Only ``random.Random`` draws decide what comes out, so a seed gives the same payloads on every
machine and Python run (no ``hash()``, no set iteration).

:func:`generate` is the entry point for other tests, e.g. an integration test that pushes
10,000 hostile metric records through the running job::

    from tests.udfs.fuzz_corpus import generate
    payloads = generate(10_000, seed=7)
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from typing import Any

NOW_MS = 1_780_000_000_000
MODEL_NAMES = ("detector", "forecaster", "clusterer", "classifier")

# Strings that have broken parsers before: separators of the series key, escapes, control and
# format characters, lone surrogates (only reachable through \u escapes), non-BMP, combining marks,
# right-to-left marks, other digits, long runs.
ODD_STRINGS = (
    "", " ", "|", ",", "=", "\\", "a|b", "k=v", "x,y", "\\|", "a\\", "\\\\|,=", "|||", "==", ",,",
    "\x00", "\x1f", "\x7f", "\u0085", "\u2028", "\u200b", "\u200f", "\u202e", "\ufeff", "\ufffd", "\uffff",
    "\ud800", "\udfff", "\ud83d", "\udca9", "\U0001f4a9", "e\u0301", "\u0660\u0661", "\uff10", "İ", "ß", "ﬃ",
    "NaN", "Infinity", "null", "true", "1e999", "-0", "0x1F", "[", "{", "]", "}", '"', "'", "\n", "\t",
    "service", "__name__", "job", "tags", "metric", "value", "timestamp",
)
# Number literals spliced into the JSON text as they are (json.dumps could not write most of them).
RAW_NUMBERS = (
    "0", "-0", "1", "-1", "1e999999", "-1e999999", "1E400", "2e-400", "5e-324", "1.7976931348623157e308",
    "1.7976931348623159e308", "9" * 400, "-" + "9" * 400, "9" * 4300, "9" * 4301, "1" * 20000,
    "0." + "0" * 5000 + "1", "1" + "0" * 330 + ".0", "NaN", "-NaN", "Infinity", "-Infinity", "infinity",
    "01", "+1", ".5", "1.", "1e", "-", "0x10", "1_000", "١", "9223372036854775808", "-9223372036854775809",
    "1780000000000", "1780000000", "1780000000000000", "1780000000000000000", "17800000000000000000000",
    "253402300800000", "-1780000000000", "1e17", "1e300",
)
TIMESTAMPS = (
    NOW_MS, NOW_MS // 1000, NOW_MS * 1000, NOW_MS * 1_000_000, NOW_MS / 1000 + 0.5, -NOW_MS, 0, -1,
    "2026-05-28T20:26:40Z", "2026-05-28T20:26:40+02:00", "2026-05-28T20:26:40", "0001-01-01T00:00:00+00:00",
    "9999-12-31T23:59:59.999999-23:59", "0001-01-01T00:00:00+23:59", "2026-13-01T00:00:00Z", "yesterday",
    "1780000000000", "1e999", "nan", "", "2026-05-28T20:26:40.123456789Z", "2026-W22-4T20:26:40Z", "+002026-05-28",
)
TOKENS = (
    b"[", b"]", b"{", b"}", b'"', b"\\", b":", b",", b"[" * 9, b"{" * 9, b'{"a":' * 9, b'[{"a":' * 12,
    b"\\u", b"\\ud800", b"\\udfff\\ud800", b"\\u0000", b"\xff", b"\xfe", b"\xc0\x80", b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x00", b"NaN", b"Infinity", b"-Infinity", b"1e999999", b"9" * 5000,
    b"null", b"true", b"\r\n", b"\xef\xbb\xbf",
)
JSONISH = b'[]{}",:0123456789eE.-+\\ ntrufalsNIy\xff'


def odd_string(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.45:
        return rng.choice(ODD_STRINGS)
    if r < 0.65:
        return "".join(rng.choice(ODD_STRINGS) for _ in range(rng.randint(2, 6)))
    if r < 0.8:
        return "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(1, 12)))
    if r < 0.9:
        return rng.choice(string.ascii_letters) * rng.choice((63, 64, 65, 199, 200, 201, 255, 256, 257, 1000))
    return "".join(rng.choice(string.ascii_lowercase + "-_.|,=\\") for _ in range(rng.randint(1, 20)))


def _name(rng: random.Random) -> str:
    return rng.choice(("cpu_util", "memory_util", "latency_p99_ms", "error_rate", "disk", "plays_per_min"))


def _tags(rng: random.Random, n: int | None = None) -> dict[str, Any]:
    n = rng.choice((0, 1, 2, 3, 5)) if n is None else n
    return {rng.choice(("instance", "zone", "host", "region", "pod")) + str(i): f"i-{rng.randint(0, 99)}"
            for i in range(n)}


def native(rng: random.Random) -> dict[str, Any]:
    rec: dict[str, Any] = {"metric": _name(rng), "value": round(rng.uniform(-1e3, 1e3), 3), "timestamp": NOW_MS,
                           "service": rng.choice(("search", "api", "playback"))}
    if rng.random() < 0.8:
        rec["tags"] = _tags(rng)
    return rec


def telegraf(rng: random.Random) -> dict[str, Any]:
    fields = {rng.choice(("util", "free_gb", "used", "iops")) + str(i): rng.uniform(0, 100)
              for i in range(rng.randint(1, 4))}
    return {"name": _name(rng), "fields": fields, "tags": {"service": "search", **_tags(rng)},
            "timestamp": NOW_MS // 1000}


def prometheus(rng: random.Random) -> dict[str, Any]:
    labels = {"__name__": _name(rng), rng.choice(("job", "service")): "playback", **_tags(rng)}
    return {"labels": labels, "value": str(rng.uniform(0, 1e5)), "timestamp": "2026-05-28T20:26:40Z"}


def telegraf_batch(rng: random.Random) -> dict[str, Any]:
    metrics = [telegraf(rng) for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.3:
        metrics[0]["fields"]["result_type"] = "success"  # a state field: skipped, counted
    return {"metrics": metrics}


def _attr(key: str, value: Any) -> dict[str, Any]:
    kind = {str: "stringValue", bool: "boolValue", int: "intValue", float: "doubleValue"}[type(value)]
    return {"key": key, "value": {kind: str(value) if kind == "intValue" else value}}


def otlp(rng: random.Random) -> dict[str, Any]:
    """An OTLP/JSON export of one or two resources (what the collector's Kafka exporter writes)."""
    def point() -> dict[str, Any]:
        dp: dict[str, Any] = {"timeUnixNano": str(NOW_MS * 1_000_000),
                              "attributes": [_attr(k, v) for k, v in _tags(rng, rng.choice((0, 1, 2))).items()]}
        if rng.random() < 0.5:
            dp["asDouble"] = rng.uniform(0, 100)
        else:
            dp["asInt"] = str(rng.randint(0, 10**6))
        return dp

    def resource() -> dict[str, Any]:
        metrics = [{"name": _name(rng), rng.choice(("gauge", "sum")): {"dataPoints": [point()]}}]
        if rng.random() < 0.2:
            metrics.append({"name": "http.server.duration", "histogram": {"dataPoints": []}})
        return {"resource": {"attributes": [_attr("service.name", rng.choice(("search", "api"))),
                                            _attr("host.name", f"h-{rng.randint(0, 9)}")]},
                "scopeMetrics": [{"scope": {"name": "vigil.fuzz"}, "metrics": metrics}]}

    return {"resourceMetrics": [resource() for _ in range(rng.randint(1, 2))]}


def feedback(rng: random.Random) -> dict[str, Any]:
    from udfs.parse import series_key

    service = rng.choice(("search", "api", odd_string(rng) or "s"))
    tags = tuple(sorted({odd_string(rng): odd_string(rng) for _ in range(rng.randint(0, 3))}.items()))
    return {"schema": "vigil.feedback/v1", "alert_id": f"a{rng.randint(0, 10**6)}",
            "series": series_key(service, _name(rng), tags), "category": "saturation",
            "verdict": rng.choice(("ack", "resolved", "false_positive")), "by": "ana", "reason": "noisy",
            "at": rng.choice(("2026-11-29T10:00:00Z", "2026-11-29T10:00:00+01:00"))}


def model_update(rng: random.Random) -> dict[str, Any]:
    alias = rng.choice(("production", "shadow"))
    version = None if alias == "shadow" and rng.random() < 0.2 else "v-" + "".join(
        rng.choice("0123456789abcdef") for _ in range(12))
    return {"schema": "vigil.model-update/v1", "model": rng.choice(MODEL_NAMES), "version": version, "alias": alias,
            "previous": None, "action": "promote", "by": "cli", "at": "2026-11-29T10:00:00+00:00"}


def hostile_value(rng: random.Random, depth: int = 0) -> Any:
    """A JSON-able value of any type, odd strings and deep nests included; ``"\\x00RAW<n>"`` marks a raw number."""
    r = rng.random()
    if r < 0.1:
        return None
    if r < 0.18:
        return rng.random() < 0.5
    if r < 0.3:
        return rng.choice((0, -1, 2**63, -(2**63) - 1, 10**300, rng.randint(-10**6, 10**6)))
    if r < 0.4:
        return rng.choice((0.0, -0.0, 1e308, 5e-324, rng.uniform(-1e9, 1e9)))
    if r < 0.6:
        return odd_string(rng)
    if r < 0.72:
        return f"\x00RAW{rng.randrange(len(RAW_NUMBERS))}"
    if r < 0.8 or depth > 3:
        n = rng.choice((2, 8, 9, 30, 600))
        return json.loads("[" * n + "]" * n) if n < 500 else "\x00DEEP" + str(n)
    if r < 0.9:
        return [hostile_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {odd_string(rng): hostile_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def encode(obj: Any, rng: random.Random) -> bytes:
    """``obj`` as JSON bytes, raw-number and deep-nest markers spliced in; lone surrogates sometimes
    written as (invalid) UTF-8 instead of ``\\u`` escapes."""
    ensure_ascii = rng.random() < 0.6
    try:
        text = json.dumps(obj, ensure_ascii=ensure_ascii)
    except (ValueError, RecursionError):
        text = json.dumps(obj, ensure_ascii=True, allow_nan=True)
    if "\\u0000RAW" in text or "\x00RAW" in text or "DEEP" in text:
        for marker in ("\\u0000RAW", "\x00RAW"):
            while (i := text.find('"' + marker)) >= 0:
                j = text.index('"', i + 1)
                text = text[:i] + RAW_NUMBERS[int(text[i + 1 + len(marker):j])] + text[j + 1:]
        for marker in ("\\u0000DEEP", "\x00DEEP"):
            while (i := text.find('"' + marker)) >= 0:
                j = text.index('"', i + 1)
                n = int(text[i + 1 + len(marker):j])
                text = text[:i] + "[" * n + "]" * n + text[j + 1:]
    return text.encode("utf-8", "surrogatepass")


def mutate_structure(rec: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """1 to 3 structural edits: a field dropped, set to a hostile value, tags inflated or renamed."""
    rec = json.loads(json.dumps(rec))
    for _ in range(rng.randint(1, 3)):
        op = rng.random()
        keys = list(rec)
        nested = [k for k in keys if isinstance(rec[k], dict)]
        if op < 0.15 and keys:
            del rec[rng.choice(keys)]
        elif op < 0.45 and keys:
            rec[rng.choice(keys)] = hostile_value(rng)
        elif op < 0.55 and nested:
            d = rec[rng.choice(nested)]
            d[odd_string(rng)] = hostile_value(rng) if rng.random() < 0.5 else odd_string(rng)
        elif op < 0.65 and nested:
            d = rec[rng.choice(nested)]
            for k in list(d)[: rng.randint(1, 3)]:
                d[odd_string(rng)] = d.pop(k)
        elif op < 0.72 and nested:
            d = rec[rng.choice(nested)]
            for i in range(rng.choice((30, 31, 32, 33, 34, 35, 200))):
                d[f"t{i}"] = "v"
        elif op < 0.8:
            rec["timestamp"] = rng.choice(TIMESTAMPS)
        elif op < 0.9:
            for k in ("service", "metric", "name", "__name__"):
                if k in rec:
                    rec[k] = odd_string(rng)
            for d in [v for v in rec.values() if isinstance(v, dict)]:
                for k in ("service", "__name__", "job"):
                    if k in d:
                        d[k] = odd_string(rng)
        else:
            rec[odd_string(rng)] = hostile_value(rng)
    return rec


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """1 to 8 byte-level edits: flips, random bytes, hostile tokens, deletions, duplications, truncation."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        pos = rng.randint(0, len(buf))
        if op < 0.2 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op < 0.35 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op < 0.6:
            buf[pos:pos] = rng.choice(TOKENS) * rng.choice((1, 1, 1, 2, 50))
        elif op < 0.72 and buf:
            del buf[pos:pos + rng.randint(1, 16)]
        elif op < 0.82 and buf:
            a = rng.randrange(len(buf))
            buf[pos:pos] = buf[a:a + rng.randint(1, 32)] * rng.randint(1, 4)
        elif op < 0.9:
            del buf[pos:]
        else:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(buf)


def garbage(rng: random.Random) -> bytes:
    """Not derived from a record: random bytes, JSON-ish noise, deep or wide nesting, oversized records."""
    r = rng.random()
    if r < 0.25:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
    if r < 0.5:
        return bytes(rng.choice(JSONISH) for _ in range(rng.randint(0, 300)))
    if r < 0.7:
        n = rng.choice((1, 7, 8, 9, 10, 100, 1000, 5000, 30000))
        opener = rng.choice((b"[", b"{", b'{"a":', b'[{"a":[', b'["x",'))
        closer = {b"[": b"]", b"{": b"}", b'{"a":': b"}", b'[{"a":[': b"]}]", b'["x",': b"]"}[opener]
        body = opener * n + (b"1" if rng.random() < 0.5 else b"") + closer * rng.choice((0, n, n // 2))
        if rng.random() < 0.3:  # the same brackets inside a string: harmless, must not count
            body = b'{"metric":"m","value":1,"timestamp":1780000000000,"service":"s","tags":{"k":"' + \
                   b"[{" * min(n, 3000) + b'"}}'
        return body
    if r < 0.8:
        return b'{"metric":"m","value":' + rng.choice(RAW_NUMBERS).encode() + \
               b',"timestamp":1780000000000,"service":"s"}'
    if r < 0.88:
        return b'"' + b'\\"' * rng.randint(0, 20000) + rng.choice((b"", b'"', b"[" * 20))
    if r < 0.94:
        return bytes(rng.choice((b" ", b"\t", b"\n", b"\r"))[0] for _ in range(rng.randint(0, 50)))
    # near and over the size cap
    pad = rng.choice((65_400, 65_536, 66_000))
    return (b'{"metric":"m","value":1,"timestamp":1780000000000,"service":"s","tags":{"k":"' + b"x" * pad + b'"}}')


SHAPES: tuple[Callable[[random.Random], dict[str, Any]], ...] = (native, telegraf, prometheus, telegraf_batch, otlp)


def _hostile(rng: random.Random, make: Callable[[random.Random], dict[str, Any]]) -> bytes:
    r = rng.random()
    if r < 0.08:
        return encode(make(rng), rng)  # valid, as a control
    if r < 0.5:
        return encode(mutate_structure(make(rng), rng), rng)
    if r < 0.85:
        return mutate_bytes(encode(make(rng), rng), rng)
    if r < 0.9:
        return mutate_bytes(encode(mutate_structure(make(rng), rng), rng), rng)
    return garbage(rng)


def hostile_metric(rng: random.Random) -> bytes:
    """One hostile payload for the metrics topic (based on a record of any accepted shape)."""
    return _hostile(rng, rng.choice(SHAPES))


def hostile_feedback(rng: random.Random) -> bytes:
    """One hostile payload for the alert-feedback topic."""
    return _hostile(rng, feedback)


def hostile_model_update(rng: random.Random) -> bytes:
    """One hostile payload for the model-updates topic; a third of them aim at the version field."""
    if rng.random() < 0.33:
        rec = model_update(rng)
        rec["version"] = rng.choice((
            "../x", "../../etc/passwd", "v-0123456789ab/../../x", "/etc", "v-" + odd_string(rng), odd_string(rng),
            "v-0123456789AB", "v-0123456789abc", "v-0123456789a", "v-0123456789ab\n", "v-\u0660123456789a",
            None, 7, [], {}, True))
        if rng.random() < 0.5:
            rec["alias"] = rng.choice(("production", "shadow", "Production", "", None, 1, odd_string(rng)))
        return encode(rec, rng)
    return _hostile(rng, model_update)


def generate(n: int, seed: int) -> list[bytes]:
    """``n`` hostile metric payloads, the same for the same ``seed`` on every machine.

    About one in ten parses into events (the unmutated controls and harmless mutations); the
    rest are refused, each with a dead-letter reason.
    """
    rng = random.Random(seed)
    return [hostile_metric(rng) for _ in range(n)]
