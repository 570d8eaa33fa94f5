"""Parsing and validation: every accepted shape, and a specific reason for every refusal."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udfs.parse import (
    MODEL_ALIASES,
    MODEL_NAMES,
    REASONS,
    SKIP_REASONS,
    VERSION_PATTERN,
    DeadLetter,
    MetricEvent,
    ModelUpdate,
    ParseLimits,
    parse,
    parse_feedback,
    parse_model_update,
    parse_record,
    series_key,
    split_series_key,
)

NOW = 1_780_000_000_000
OK = {"metric": "cpu_util", "value": 12.5, "timestamp": NOW, "service": "search", "tags": {"instance": "i-1"}}


def enc(obj) -> bytes:
    return json.dumps(obj).encode()


def test_native_event_parses_to_canonical_series():
    [ev] = parse_record(enc(OK), NOW)
    assert ev == MetricEvent("search|cpu_util|instance=i-1", "search", "cpu_util", (("instance", "i-1"),), NOW, 12.5)
    assert ev.tag("instance") == "i-1" and ev.tag("zone") is None


@pytest.mark.parametrize(
    "ts, expected_ms",
    [
        (NOW // 1000, NOW),  # seconds
        (NOW, NOW),  # milliseconds
        (NOW * 1000, NOW),  # microseconds
        (NOW * 1_000_000, NOW),  # nanoseconds
        ("2026-05-28T20:26:40Z", 1_780_000_000_000),
        ("2026-05-28T22:26:40+02:00", 1_780_000_000_000),
    ],
)
def test_timestamps_in_every_unit_become_epoch_ms(ts, expected_ms):
    [ev] = parse_record(enc({**OK, "timestamp": ts}), NOW)
    assert ev.ts_ms == expected_ms


def test_tags_are_sorted_so_the_series_key_is_stable():
    a = parse_record(enc({**OK, "tags": {"zone": "b", "instance": "i-1"}}), NOW)[0]
    b = parse_record(enc({**OK, "tags": {"instance": "i-1", "zone": "b"}}), NOW)[0]
    assert a.series == b.series == "search|cpu_util|instance=i-1,zone=b"


def test_telegraf_record_gives_one_event_per_field():
    rec = {"name": "disk", "fields": {"util": 40.5, "free_gb": 12}, "tags": {"service": "search", "host": "h1"},
           "timestamp": NOW // 1000}
    evs = parse_record(enc(rec), NOW)
    assert [(e.metric, e.value, e.service, e.tags) for e in evs] == [
        ("disk_free_gb", 12.0, "search", (("host", "h1"),)),
        ("disk_util", 40.5, "search", (("host", "h1"),)),
    ]


def test_telegraf_string_fields_are_states_and_booleans_are_gauges():
    """net_response's result_type is a string beside its numbers: the record is scored, not refused."""
    rec = {"name": "net_response", "fields": {"response_time": 0.012, "result_code": 0, "result_type": "success",
                                              "up": True}, "tags": {"service": "edge", "server": "cdn"},
           "timestamp": NOW // 1000}
    evs = parse_record(enc(rec), NOW)
    assert [(e.metric, e.value) for e in evs] == [("net_response_response_time", 0.012),
                                                  ("net_response_result_code", 0.0), ("net_response_up", 1.0)]
    assert parse(enc(rec), NOW).skipped == {"non_numeric_field": 1}
    only_states = parse(enc({**rec, "fields": {"result_type": "timeout", "error": None}}), NOW)
    assert only_states == ([], [], {"non_numeric_field": 2}, "telegraf")  # no event, no refusal, and counted


# Telegraf's JSON serializer with json_batch_format = true (its documented example, times made recent)
TELEGRAF_BATCH = {"metrics": [
    {"fields": {"field_1": 30, "field_2": 4, "field_N": 59, "n_images": 660}, "name": "docker",
     "tags": {"host": "raynor"}, "timestamp": NOW // 1000},
    {"fields": {"result_code": 0, "result_type": "success", "response_time": 0.0031}, "name": "net_response",
     "tags": {"host": "raynor", "service": "edge", "server": "cdn.example", "port": "443"}, "timestamp": NOW // 1000},
]}


def test_telegraf_batch_gives_the_events_of_every_metric_and_the_service_from_the_first_service_tag():
    p = parse(enc(TELEGRAF_BATCH), NOW)
    assert not p.dead and p.skipped == {"non_numeric_field": 1}
    assert [(e.service, e.metric, e.tags) for e in p.events] == [
        ("raynor", "docker_field_1", ()), ("raynor", "docker_field_2", ()), ("raynor", "docker_field_N", ()),
        ("raynor", "docker_n_images", ()),
        # 'service' comes before 'host' in validation.service_tags: host stays a tag
        ("edge", "net_response_response_time", (("host", "raynor"), ("port", "443"), ("server", "cdn.example"))),
        ("edge", "net_response_result_code", (("host", "raynor"), ("port", "443"), ("server", "cdn.example"))),
    ]


def test_a_refused_part_of_a_batch_is_a_dead_letter_of_its_own_and_the_rest_is_kept():
    bad = {"name": "disk", "fields": {"used": "x", "util": "NaN"}, "tags": {"host": "h"},
           "timestamp": "yesterday"}
    p = parse(enc({"metrics": [TELEGRAF_BATCH["metrics"][0], bad, 7]}), NOW)
    assert len(p.events) == 4
    assert [(d.reason, json.loads(part)) for d, part in p.dead] == [("wrong_type", bad), ("not_object", 7)]
    assert parse(enc({"metrics": []}), NOW).dead[0][0].reason == "wrong_type"
    assert parse(enc({"metrics": {"a": 1}}), NOW).dead[0][1] is None  # the whole record is refused


def test_service_tags_are_configurable_and_a_record_naming_none_says_which_it_tried():
    rec = {"name": "cpu", "fields": {"usage_idle": 97.5}, "tags": {"host": "h1", "dc": "fra"}, "timestamp": NOW}
    assert parse_record(enc(rec), NOW)[0].service == "h1"
    [ev] = parse_record(enc(rec), NOW, ParseLimits(service_tags=("dc",)))
    assert (ev.service, ev.tags) == ("fra", (("host", "h1"),))
    dl = parse_record(enc(rec), NOW, ParseLimits(service_tags=("service",)))
    assert dl.reason == "missing_field" and "tried service" in dl.detail and "validation.service_tags" in dl.detail


def test_a_prometheus_staleness_marker_is_counted_not_refused():
    """Remote write sends NaN (0x7ff0000000000002) when a target goes away; in JSON it is the string NaN."""
    rec = {"labels": {"__name__": "up", "job": "api", "instance": "10.0.0.1:9100"}, "value": "NaN",
           "timestamp": "2026-05-28T20:26:40Z"}
    assert parse(enc(rec), NOW) == ([], [], {"stale_marker": 1}, "prometheus")
    assert parse_record(enc({**rec, "value": "+Inf"}), NOW).reason == "non_finite_value"


# an OTLP/JSON export as the collector's Kafka exporter writes it (encoding otlp_json), after the
# example in opentelemetry-proto's examples/metrics.json
OTLP = {"resourceMetrics": [{
    "resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "checkout"}},
        {"key": "host.name", "value": {"stringValue": "node-7"}},
        {"key": "process.command_args", "value": {"arrayValue": {"values": [{"stringValue": "java"}]}}}]},
    "scopeMetrics": [{
        "scope": {"name": "my.library", "version": "1.0.0"},
        "metrics": [
            {"name": "my.counter", "unit": "1", "description": "I am a Counter",
             "sum": {"aggregationTemporality": 1, "isMonotonic": True, "dataPoints": [
                 {"asDouble": 5, "startTimeUnixNano": str((NOW - 60_000) * 10**6),
                  "timeUnixNano": str(NOW * 10**6),
                  "attributes": [{"key": "my.counter.attr", "value": {"stringValue": "some value"}}]}]}},
            {"name": "my.gauge", "unit": "1", "gauge": {"dataPoints": [
                {"asInt": "10", "timeUnixNano": str(NOW * 10**6),
                 "attributes": [{"key": "ok", "value": {"boolValue": True}}]},
                {"asDouble": 0, "flags": 1, "timeUnixNano": str(NOW * 10**6)}]}},
            {"name": "my.histogram", "histogram": {"aggregationTemporality": 1, "dataPoints": [
                {"count": "2", "sum": 2, "bucketCounts": ["1", "1"], "explicitBounds": [1],
                 "timeUnixNano": str(NOW * 10**6)}]}},
        ]}]}]}


def test_otlp_gauges_and_sums_become_events_with_resource_attributes_as_tags():
    p = parse(enc(OTLP), NOW)
    assert not p.dead and p.shape == "otlp"
    assert [(e.service, e.metric, e.tags, e.ts_ms, e.value) for e in p.events] == [
        ("checkout", "my.counter", (("host.name", "node-7"), ("my.counter.attr", "some value")), NOW, 5.0),
        ("checkout", "my.gauge", (("host.name", "node-7"), ("ok", "true")), NOW, 10.0),
    ]
    assert p.skipped == {"non_scalar_attribute": 1, "stale_marker": 1, "unsupported_metric_type": 1}
    assert set(p.skipped) <= set(SKIP_REASONS)


def test_a_refused_otlp_resource_is_a_dead_letter_of_its_own():
    good = OTLP["resourceMetrics"][0]
    no_service = {"resource": {"attributes": []}, "scopeMetrics": good["scopeMetrics"]}
    bad_int = json.loads(json.dumps(good))
    bad_int["scopeMetrics"][0]["metrics"][1]["gauge"]["dataPoints"][0]["asInt"] = "ten"
    empty = {"resource": good["resource"], "scopeMetrics": []}
    p = parse(enc({"resourceMetrics": [no_service, good, bad_int, empty]}), NOW)
    assert len(p.events) == 2
    assert [d.reason for d, _ in p.dead] == ["missing_field", "wrong_type", "missing_field"]
    assert "service" in p.dead[0][0].detail and "asInt" in p.dead[1][0].detail
    assert json.loads(p.dead[1][1]) == bad_int


def test_prometheus_sample_with_string_value():
    rec = {"labels": {"__name__": "plays_per_min", "job": "playback", "region": "eu"}, "value": "52000.5",
           "timestamp": "2026-05-28T20:26:40Z"}
    [ev] = parse_record(enc(rec), NOW)
    assert (ev.metric, ev.service, ev.tags, ev.value) == ("plays_per_min", "playback", (("region", "eu"),), 52000.5)


BAD = [
    (b"cpu 1", "not_json"),
    (b"\xff\xfe", "not_utf8"),
    (b"[1]", "not_object"),
    (b'"text"', "not_object"),
    (enc({"x": 1}), "unknown_shape"),
    (enc({k: v for k, v in OK.items() if k != "value"}), "missing_field"),
    (enc({k: v for k, v in OK.items() if k != "service"}), "missing_field"),
    (enc({k: v for k, v in OK.items() if k != "timestamp"}), "missing_field"),
    (enc({**OK, "value": "12"}), "wrong_type"),
    (enc({**OK, "value": True}), "wrong_type"),
    (enc({**OK, "value": None}), "wrong_type"),
    (enc({**OK, "service": 3}), "wrong_type"),
    (enc({**OK, "service": ""}), "wrong_type"),
    (enc({**OK, "tags": ["a"]}), "wrong_type"),
    (enc({**OK, "tags": {"a": {"b": 1}}}), "wrong_type"),
    (enc({**OK, "timestamp": "yesterday"}), "wrong_type"),
    (enc({**OK, "timestamp": "2026-05-28T20:26:40"}), "wrong_type"),
    (b'{"metric":"m","value":NaN,"timestamp":1780000000000,"service":"s"}', "non_finite_value"),
    (b'{"metric":"m","value":Infinity,"timestamp":1780000000000,"service":"s"}', "non_finite_value"),
    (b'{"metric":"m","value":1e400,"timestamp":1780000000000,"service":"s"}', "non_finite_value"),
    (enc({**OK, "timestamp": NOW + 2 * 3600 * 1000}), "timestamp_in_future"),
    (enc({**OK, "timestamp": NOW + 301 * 1000}), "timestamp_in_future"),
    (enc({**OK, "timestamp": NOW - 8 * 86400 * 1000}), "timestamp_out_of_range"),
    (enc({**OK, "tags": {"blob": "x" * 70000}}), "oversized"),
    (enc({"name": "disk", "fields": {"util": 1}, "tags": {}, "timestamp": 1}), "missing_field"),
    (enc({"name": "disk", "fields": {}, "tags": {"service": "s"}, "timestamp": NOW}), "wrong_type"),
    (enc({"name": "disk", "fields": {"util": [1]}, "tags": {"service": "s"}, "timestamp": NOW}), "wrong_type"),
    (enc({"resourceMetrics": "x"}), "wrong_type"),
    (enc({"labels": {"job": "s"}, "value": "1", "timestamp": NOW}), "missing_field"),
    (enc({"labels": {"__name__": "m"}, "value": "1", "timestamp": NOW}), "missing_field"),
    (enc({"labels": {"__name__": "m", "job": "s"}, "value": "abc", "timestamp": NOW}), "wrong_type"),
]


@pytest.mark.parametrize("payload, reason", BAD)
def test_bad_records_get_their_specific_reason(payload, reason):
    out = parse_record(payload, NOW)
    assert isinstance(out, DeadLetter), out
    assert out.reason == reason, out.detail
    assert out.reason in REASONS and out.detail


def test_time_bounds_can_be_disabled_for_replays_of_old_data():
    old = enc({**OK, "timestamp": 1_400_000_000_000})
    assert isinstance(parse_record(old, NOW), DeadLetter)
    [ev] = parse_record(old, NOW, ParseLimits(max_past_s=None))
    assert ev.ts_ms == 1_400_000_000_000


def test_dead_letter_json_keeps_payload_and_source():
    dl = parse_record(b"\xff\x00bin", NOW)
    rec = json.loads(dl.to_json(b"\xff\x00bin", "m", 2, 41, NOW))
    assert rec["schema"] == "vigil.deadletter/v1"
    assert rec["reason"] == "not_utf8"
    assert (rec["payload"], rec["payload_encoding"]) == ("/wBiaW4=", "base64")
    assert rec["source"] == {"topic": "m", "partition": 2, "offset": 41}
    assert rec["received_at"].endswith("+00:00")


# -- hostile input ----------------------------------------------------------------------------------

FB = {"schema": "vigil.feedback/v1", "alert_id": "a1", "series": "api|cpu_util|instance=i-1", "category": "c",
      "verdict": "ack", "by": "ana", "at": "2026-11-29T10:00:00Z"}
UPDATE = {"schema": "vigil.model-update/v1", "model": "detector", "version": "v-0123456789ab", "alias": "production"}


def nested(depth: int) -> bytes:
    """A native record whose ignored field ``extra`` makes the whole record nest ``depth`` deep."""
    inner = "[" * (depth - 1) + "1" + "]" * (depth - 1)
    return enc(OK)[:-1] + f', "extra": {inner}}}'.encode()


@pytest.mark.parametrize("parse", [lambda p: parse_record(p, NOW), parse_feedback, parse_model_update])
def test_nesting_a_thousand_deep_is_a_dead_letter_not_a_recursion_error(parse):
    out = parse(b"[" * 1000)
    assert out == DeadLetter("not_json", "record nests more than 16 arrays or objects deep (max_depth=16)")
    assert parse(b'{"a":' * 800).reason == "not_json"


def test_nesting_is_measured_exactly_and_brackets_in_strings_do_not_count():
    assert isinstance(parse_record(nested(16), NOW), list)
    assert parse_record(nested(17), NOW).reason == "not_json"
    assert "max_depth=3" in parse_record(nested(4), NOW, ParseLimits(max_depth=3)).detail
    brackets = enc({**OK, "tags": {"k": "[{" * 100, "q": '\\"[[[[[[[[[['}})
    assert parse_record(brackets, NOW)[0].tag("k") == "[{" * 100
    assert parse_record(b'{"a":"' + b"[" * 20, NOW).reason == "not_json"  # unterminated string


@pytest.mark.parametrize("number", [b"1e999999", b"-1e999999", b"9" * 400, b"9" * 1000])
def test_numbers_too_large_for_a_float_are_non_finite(number):
    payload = b'{"metric":"m","value":' + number + b',"timestamp":1780000000000,"service":"s"}'
    assert parse_record(payload, NOW).reason == "non_finite_value"
    assert parse_record(enc({**OK, "timestamp": 10**400}), NOW).reason == "non_finite_value"


@pytest.mark.parametrize("number", [b"9" * 1001, b"9" * 5000, b"1" * 60000, b"0." + b"1" * 1000])
def test_number_literals_over_1000_characters_refuse_the_whole_record(number):
    """The JVM's reader (which shards records) refuses them too, so both sides agree on what is readable."""
    payload = b'{"metrics":[{"name":"m","fields":{"v":' + number + b'},"tags":{"host":"h"},"timestamp":1}]}'
    p = parse(payload, NOW)
    assert p.events == [] and len(p.dead) == 1 and p.dead[0][1] is None
    assert p.dead[0][0].reason == "limit_exceeded" and "1000" in p.dead[0][0].detail


@pytest.mark.parametrize("rec", [
    {**OK, "service": "\ud800"},
    {**OK, "metric": "cpu\udfff"},
    {**OK, "tags": {"instance": "\ud83d"}},
    {**OK, "tags": {"\udca9": "x"}},
    {"name": "disk", "fields": {"u\ud800": 1.0}, "tags": {"service": "s"}, "timestamp": NOW},
    {"labels": {"__name__": "m", "job": "\ud800"}, "value": "1", "timestamp": NOW},
])
def test_lone_surrogates_never_reach_a_series_key(rec):
    out = parse_record(json.dumps(rec).encode(), NOW)  # json.dumps writes them as \u escapes: valid UTF-8
    assert out.reason == "invalid_value" and "lone surrogate" in out.detail
    assert parse_record(json.dumps(rec, ensure_ascii=False).encode("utf-8", "surrogatepass"), NOW).reason \
        == "not_utf8"


def test_tag_caps_give_limit_exceeded_naming_the_cap():
    tags = {f"t{i}": "v" for i in range(32)}
    assert len(parse_record(enc({**OK, "tags": tags}), NOW)[0].tags) == 32
    over = parse_record(enc({**OK, "tags": {**tags, "t32": "v"}}), NOW)
    assert over == DeadLetter("limit_exceeded", "field 'tags' has 33 tags; the limit is max_tags=32")
    # the shapes' service and metric labels are not tags of the series
    prom = {"labels": {"__name__": "m", "service": "s", "job": "j", **{f"t{i}": "v" for i in range(31)}},
            "value": 1, "timestamp": NOW}
    assert len(parse_record(enc(prom), NOW)[0].tags) == 32  # job stays a tag when service names the service
    prom["labels"]["t31"] = "v"
    assert "max_tags=32" in parse_record(enc(prom), NOW).detail
    tele = {"name": "disk", "fields": {"util": 1}, "tags": {"service": "s", **tags}, "timestamp": NOW}
    assert len(parse_record(enc(tele), NOW)[0].tags) == 32
    assert "max_tag_key_len=64" in parse_record(enc({**OK, "tags": {"k" * 65: "v"}}), NOW).detail
    assert isinstance(parse_record(enc({**OK, "tags": {"k" * 64: "v" * 256}}), NOW), list)
    assert "max_tag_value_len=256" in parse_record(enc({**OK, "tags": {"k": "v" * 257}}), NOW).detail
    tight = ParseLimits(max_tags=1, max_tag_key_len=3, max_tag_value_len=3)
    assert parse_record(enc({**OK, "tags": {"a": "1", "b": "2"}}), NOW, tight).reason == "limit_exceeded"
    assert parse_record(enc({**OK, "tags": {"abcd": "1"}}), NOW, tight).reason == "limit_exceeded"
    assert parse_record(enc({**OK, "tags": {"abc": "1234"}}), NOW, tight).reason == "limit_exceeded"


def test_derived_names_are_bounded_like_given_ones():
    tele = {"name": "disk", "fields": {"u" * 200: 1.0}, "tags": {"service": "s"}, "timestamp": NOW}
    assert parse_record(enc(tele), NOW).reason == "wrong_type"
    prom = {"labels": {"__name__": "m" * 201, "job": "s"}, "value": 1, "timestamp": NOW}
    assert parse_record(enc(prom), NOW).reason == "wrong_type"


@pytest.mark.parametrize("ts", [10.0**300, -NOW, 10**25, -(10**20), "0001-01-01T00:00:00+00:00"])
def test_event_times_outside_1970_to_9999_are_refused_even_without_time_bounds(ts):
    replay = ParseLimits(max_past_s=None, max_future_s=None)
    assert parse_record(enc({**OK, "timestamp": ts}), NOW, replay).reason == "timestamp_out_of_range"


def test_an_unforeseen_exception_is_a_dead_letter_naming_its_type(monkeypatch):
    import udfs.parse

    def boom(*a):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(udfs.parse, "_native", boom)
    monkeypatch.setattr(udfs.parse, "split_series_key", boom)
    monkeypatch.setattr(udfs.parse, "_str_field", boom)
    for out in (parse_record(enc(OK), NOW), parse_feedback(enc(FB)), parse_model_update(enc(UPDATE))):
        assert out == DeadLetter("unparseable", "unexpected ZeroDivisionError while parsing: a bug")


# -- series keys ------------------------------------------------------------------------------------

def test_tag_values_holding_separators_no_longer_collide():
    a = parse_record(enc({**OK, "tags": {"instance": "i-1,zone=b"}}), NOW)[0]
    b = parse_record(enc({**OK, "tags": {"instance": "i-1", "zone": "b"}}), NOW)[0]
    assert a.series != b.series
    assert b.series == "search|cpu_util|instance=i-1,zone=b"  # plain names: the key is unchanged
    assert a.series == "search|cpu_util|instance=i-1\\,zone\\=b"
    assert series_key("a|b", "c", ()) != series_key("a", "b|c", ())
    assert series_key("a\\", "b", ()) != series_key("a", "\\b", ())


NAMES = st.text(st.sampled_from("ab|,=\\ \u00e9"), max_size=6) | st.text(max_size=6)
KEYS = st.tuples(NAMES, NAMES, st.lists(st.tuples(NAMES, NAMES), max_size=4).map(tuple))


@settings(max_examples=2000, deadline=None, database=None, derandomize=True)
@given(KEYS, KEYS)
def test_split_series_key_inverts_series_key_and_keys_never_collide(x, y):
    kx, ky = series_key(*x), series_key(*y)
    assert split_series_key(kx) == x and split_series_key(ky) == y
    assert (kx == ky) == (x == y)


@settings(max_examples=2000, deadline=None, database=None, derandomize=True)
@given(st.text(st.sampled_from("ab|,=\\"), max_size=12))
def test_split_series_key_accepts_exactly_the_keys_series_key_makes(text):
    try:
        parts = split_series_key(text)
    except ValueError:
        return
    assert series_key(*parts) == text


@pytest.mark.parametrize("key", ["", "a", "a|b", "a|b|c|d", "a|b|c", "a|b|k=v,", "a|b|,k=v", "a|b|k=v=w", "a\\",
                                 "a|b|k=v\\", "a\\|b|c", "a|b|k\\=v", "a=b|c|", "a,b|c|"])
def test_split_series_key_refuses_what_series_key_cannot_make(key):
    with pytest.raises(ValueError):
        split_series_key(key)


def test_feedback_takes_the_service_from_an_escaped_series_key():
    series = series_key("pay|ments", "cpu_util", (("instance", "i,1"),))
    fb = parse_feedback(enc({**FB, "series": series}))
    assert (fb.service, fb.series) == ("pay|ments", series)
    for bad in ("a|b|c|d", "|cpu|", "api|cpu", "a\\", "api|cpu|\ud800=x"):
        assert parse_feedback(enc({**FB, "series": bad})).reason == "invalid_value", bad


# -- model updates ----------------------------------------------------------------------------------

def test_model_update_as_the_registry_writes_it():
    from registry.client import update_event

    ev = update_event("forecaster", "v-00aa11bb22cc", "shadow", None, "promote", "cli")
    assert parse_model_update(json.dumps(ev).encode()) == ModelUpdate("forecaster", "v-00aa11bb22cc", "shadow")
    clear = update_event("forecaster", None, "shadow", "v-00aa11bb22cc", "clear", "cli")
    assert parse_model_update(json.dumps(clear).encode()) == ModelUpdate("forecaster", None, "shadow")
    # what tests and operators publish by hand: no schema, alias defaults to production
    assert parse_model_update(b'{"model":"detector","version":"v-0123456789ab"}').alias == "production"


@pytest.mark.parametrize("change, reason", [
    ({"version": "../x"}, "invalid_value"),
    ({"version": "v-0123456789ab/../../x"}, "invalid_value"),
    ({"version": "v-0123456789AB"}, "invalid_value"),
    ({"version": "v-0123456789ab\n"}, "invalid_value"),
    ({"version": "v-\u0660123456789a"}, "invalid_value"),
    ({"version": 7}, "wrong_type"),
    ({"version": None}, "invalid_value"),  # only a shadow can be stopped
    ({"version": None, "alias": "shadow"}, None),
    ({"alias": "canary"}, "invalid_value"),
    ({"alias": 1}, "wrong_type"),
    ({"model": "ranker"}, "invalid_value"),
    ({"model": None}, "missing_field"),
    ({"schema": "vigil.model-update/v0"}, "invalid_value"),
])
def test_model_update_fields_are_validated(change, reason):
    out = parse_model_update(enc({**UPDATE, **change}))
    if reason is None:
        assert isinstance(out, ModelUpdate)
    else:
        assert isinstance(out, DeadLetter) and out.reason == reason, out
    assert parse_model_update(enc({k: v for k, v in UPDATE.items() if k != "version"})).reason == "missing_field"
    assert parse_model_update(enc(UPDATE), max_bytes=10).reason == "oversized"


def test_model_update_vocabulary_matches_the_model_side():
    from models import artifact
    from models.catalog import FEATURE_SCHEMAS
    from registry import client as registry

    assert MODEL_NAMES == tuple(FEATURE_SCHEMAS) and MODEL_ALIASES == registry.ALIASES
    event = registry.update_event("detector", "v-0123456789ab", "shadow", None, "promote", "cli")
    assert parse_model_update(json.dumps(event).encode()) == ModelUpdate("detector", "v-0123456789ab", "shadow")
    assert VERSION_PATTERN.pattern == artifact.VERSION_PATTERN.pattern
