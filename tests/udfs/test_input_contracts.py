"""The published input schemas (``schemas/``) and the parsers agree: what shippers really send
conforms and parses; what a schema refuses, the parser refuses with a reason."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator

from tests.contracts import SCHEMAS, problems
from tests.udfs.test_parse import FB, NOW, OK, OTLP, TELEGRAF_BATCH, UPDATE, enc
from udfs.parse import (
    Feedback,
    ModelUpdate,
    parse,
    parse_feedback,
    parse_model_update,
)

TELEGRAF = {"name": "net_response", "fields": {"response_time": 0.012, "result_code": 0, "result_type": "success",
                                               "up": True}, "tags": {"service": "edge", "server": "cdn"},
            "timestamp": NOW // 1000}
PROMETHEUS = {"labels": {"__name__": "http_requests_total", "job": "api", "instance": "10.0.0.1:9100"},
              "value": "1027", "timestamp": "2026-05-28T20:26:40Z"}
ACCEPTED = [("metric-native", OK), ("metric-telegraf", TELEGRAF), ("metric-telegraf", TELEGRAF_BATCH),
            ("metric-prometheus", PROMETHEUS), ("metric-otlp", OTLP)]
REFUSED = [("metric-native", {k: v for k, v in OK.items() if k != "value"}),
           ("metric-native", {**OK, "value": "12"}),
           ("metric-native", {**OK, "service": ""}),
           ("metric-native", {**OK, "tags": {"a": {"b": 1}}}),
           ("metric-telegraf", {**TELEGRAF, "fields": "up"}),
           ("metric-telegraf", {"metrics": []}),
           ("metric-prometheus", {"labels": {"job": "api"}, "value": "1", "timestamp": NOW})]


def test_every_schema_is_a_valid_draft_2020_12_schema_named_by_its_file():
    files = sorted(SCHEMAS.glob("*.json"))
    assert len(files) >= 13
    for f in files:
        schema = json.loads(f.read_text())
        Draft202012Validator.check_schema(schema)
        assert schema["$id"].endswith("/" + f.name) and schema["title"] and schema["description"]


@pytest.mark.parametrize(("schema", "record"), ACCEPTED, ids=[f"{s}-{i}" for i, (s, _) in enumerate(ACCEPTED)])
def test_what_shippers_send_conforms_to_its_schema_and_parses(schema, record):
    assert problems(schema, record) == []
    p = parse(enc(record), NOW)
    assert p.events and not p.dead and p.shape == {"metric-native": "native", "metric-prometheus": "prometheus",
                                                   "metric-otlp": "otlp"}.get(schema, p.shape)


@pytest.mark.parametrize(("schema", "record"), REFUSED, ids=[f"{s}-{i}" for i, (s, _) in enumerate(REFUSED)])
def test_what_a_schema_refuses_the_parser_refuses_with_a_reason(schema, record):
    assert problems(schema, record)
    p = parse(enc(record), NOW)
    assert not p.events and p.dead and p.dead[0][0].reason in ("missing_field", "wrong_type", "unknown_shape")


def test_feedback_and_model_updates_conform_and_parse():
    assert problems("feedback", FB) == [] and isinstance(parse_feedback(enc(FB)), Feedback)
    assert problems("model-update", UPDATE) == [] and isinstance(parse_model_update(enc(UPDATE)), ModelUpdate)
    assert problems("feedback", {**FB, "verdict": "maybe"}) and parse_feedback(enc({**FB, "verdict": "maybe"})).reason
    bad = {**UPDATE, "version": "../../etc"}
    assert problems("model-update", bad) and parse_model_update(enc(bad)).reason == "invalid_value"
