"""Parsing and validation: every accepted shape, and a specific reason for every refusal."""

import json

import pytest

from udfs.parse import REASONS, DeadLetter, MetricEvent, ParseLimits, parse_record

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
    (enc({**OK, "timestamp": NOW + 2 * 3600 * 1000}), "timestamp_out_of_range"),
    (enc({**OK, "timestamp": NOW - 8 * 86400 * 1000}), "timestamp_out_of_range"),
    (enc({**OK, "tags": {"blob": "x" * 70000}}), "oversized"),
    (enc({"name": "disk", "fields": {"util": 1}, "tags": {}, "timestamp": 1}), "missing_field"),
    (enc({"name": "disk", "fields": {}, "tags": {"service": "s"}, "timestamp": NOW}), "wrong_type"),
    (enc({"name": "disk", "fields": {"util": "x"}, "tags": {"service": "s"}, "timestamp": NOW}), "wrong_type"),
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
