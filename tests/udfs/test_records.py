"""Each record class and its published JSON Schema say the same thing: the id, the fields, which of
them are required; and a record built from the class conforms."""

from __future__ import annotations

import dataclasses
import json

import pytest

from models.impact import DEFAULT_CONTEXT, business_impact, recommended_actions
from tests.contracts import SCHEMAS, problems
from udfs.records import (
    RECORDS,
    AlertRecord,
    BaselineAlertRecord,
    DeadLetterRecord,
    DriftRecord,
    FeedbackRecord,
    ForecastRecord,
    ModelEventRecord,
    ModelUpdateRecord,
    OpsEventRecord,
    Record,
    ScoreRecord,
    ShadowRecord,
)

T0, T1 = "2026-12-01T10:00:00.000+00:00", "2026-12-01T10:05:00.000+00:00"
V = "v-0123456789ab"
HORIZONS = [{"horizon_min": h, "value": 71.5, "lower": 60.0, "upper": 83.0} for h in (5, 15, 60, 240, 1440)]
KEY = "search|cpu_util|instance=i-3"
SERIES = {"key": KEY, "service": "search", "metric": "cpu_util", "tags": {"instance": "i-3"}}


def _alert() -> AlertRecord:
    return AlertRecord(
        alert_id="0123456789abcdef0123", fingerprint="0123456789abcdef", revision=0, status="open",
        trigger="detector", series={**SERIES, "entity": "i-3"},
        window={"start": T0, "end": T1, "candidates": 3}, startsAt=T0, endsAt=None, event_time=T1, emitted_at=T1,
        value=97.2, expected_value=41.0, anomaly={"score": 0.81, "threshold": 0.5, "detector_score": 0.74},
        severity="high", priority="P2", category="saturation", team="sre", false_positive_probability=0.12,
        classifier={"priority": {"P1": 0.2, "P2": 0.6, "P3": 0.1, "P4": 0.1},
                    "category": {"latency": 0.1, "errors": 0.1, "saturation": 0.7, "traffic": 0.05,
                                 "peer_drift": 0.05},
                    "team": {"edge": 0.1, "playback": 0.1, "discovery": 0.1, "payments": 0.1, "sre": 0.6},
                    "fp": 0.12, "priority_demoted": False, "features": [0.5, 1.25]},
        feedback=None, impact=business_impact("saturation", "high", DEFAULT_CONTEXT, 0.25),
        forecast={"interval": 0.8, "horizons": HORIZONS, "time_to_breach_s": 600.0, "limit": 95.0},
        cluster={"id": 2, "distance": 1.7, "outlier_score": 0.9},
        explanation={"top_features": [{"feature": "z_robust", "deviation_iqr": 6.2}], "summary": "cpu_util high",
                     "rules": [{"rule": "deploy", "effect": "bar x0.8", "changed_outcome": False}]},
        suppressed_by=[], deploying=True,
        recommended_actions=recommended_actions("saturation", "cpu_util", "search", "i-3", "detector", 600.0, 95.0, 1),
        related_series=[KEY], models={"detector": V, "forecaster": V, "clusterer": V, "classifier": V})


EXAMPLES: list[Record] = [
    _alert(),
    ForecastRecord(KEY, "search", "cpu_util", {"instance": "i-3"}, T1, 70.1, HORIZONS, 0.8, None, 95.0, V),
    DriftRecord(KEY, "search", "cpu_util", {"instance": "i-3"}, "detector_score", "detector", V, "page_hinkley",
                T0, T1, {"mean": 0.2, "cumsum": 3.1}),
    ShadowRecord("detector", KEY, "search", T1, {"version": V, "score": 0.4}, {"version": V, "score": 0.5}),
    ScoreRecord(KEY, 1_796_292_000_000, 70.1, 0.4, 0.5, "", 0.31),
    DeadLetterRecord("not_json", "Expecting value", "{oops", "utf8", {"topic": "metrics", "partition": 0,
                                                                      "offset": 7}, T1),
    ModelEventRecord("score-shard", "detector", V, "production", "serving", "replaced v-000000000000",
                     1_796_292_000_000),
    FeedbackRecord("0123456789abcdef0123", KEY, "saturation", "false_positive", "ana", "2026-12-01T10:07:00Z",
                   reason="a load test"),
    ModelUpdateRecord("detector", V, "shadow", None, "promote", "cli"),
    OpsEventRecord("deploy", "search", "2026-12-01T10:00:00Z", 900, by="argo"),
    BaselineAlertRecord(SERIES, T0, T1, 97.2, 0.93),
]


def _schema(cls: type[Record]) -> dict:
    return json.loads((SCHEMAS / f"{cls.NAME}.json").read_text())


def test_there_is_one_example_per_record_class_and_one_class_per_schema_id():
    assert [type(r) for r in EXAMPLES] == list(RECORDS)
    assert len({c.SCHEMA for c in RECORDS}) == len({c.NAME for c in RECORDS}) == len(RECORDS)


@pytest.mark.parametrize("cls", RECORDS, ids=[c.NAME for c in RECORDS])
def test_the_schema_pins_the_class_id(cls):
    assert _schema(cls)["properties"]["schema"]["const"] == cls.SCHEMA


@pytest.mark.parametrize("cls", RECORDS, ids=[c.NAME for c in RECORDS])
def test_fields_and_required_agree_with_the_schema(cls):
    schema = _schema(cls)
    fields = dataclasses.fields(cls)
    assert {f.name for f in fields} == set(schema["properties"]) - {"schema"}
    required = {f.name for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    assert required == set(schema["required"]) - {"schema"}  # a default: the readers take it as optional


@pytest.mark.parametrize("record", EXAMPLES, ids=[r.NAME for r in EXAMPLES])
def test_a_record_built_from_its_class_conforms(record):
    wire = json.loads(record.to_json())
    assert problems(record.NAME, wire) == []
    assert list(wire) == ["schema", *(f.name for f in dataclasses.fields(record))]
    assert wire == record.to_dict() and record.to_json() == json.dumps(wire, separators=(",", ":"))


def test_a_revised_alert_keeps_every_key_in_its_place():
    last = _alert().to_dict()
    out = json.loads(AlertRecord.revised_json(last, revision=1, status="resolved", endsAt=T1))
    assert list(out) == list(last) and problems("alert", out) == []
    assert (out["revision"], out["status"], out["endsAt"], out["value"]) == (1, "resolved", T1, last["value"])
    # an alert kept by an older layout, without a field added since, is revised as it was
    old = {k: v for k, v in last.items() if k != "deploying"}
    assert "deploying" not in json.loads(AlertRecord.revised_json(old, status="resolved"))
    with pytest.raises(TypeError, match="ends_at"):
        AlertRecord.revised_json(last, ends_at=T1)


def test_the_parsers_read_what_the_classes_write():
    from udfs.parse import Feedback, ModelUpdate, OpsEvent, parse_feedback, parse_model_update, parse_ops_event

    fb, upd, ops = EXAMPLES[7], EXAMPLES[8], EXAMPLES[9]
    assert isinstance(parse_feedback(fb.to_json().encode()), Feedback)
    assert parse_model_update(upd.to_json().encode()) == ModelUpdate("detector", V, "shadow")
    assert parse_ops_event(ops.to_json().encode()) == OpsEvent("deploy", "search", 1_796_119_200_000,
                                                               1_796_120_100_000, "", "argo")
