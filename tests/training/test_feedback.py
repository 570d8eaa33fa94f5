"""Drift events and alert feedback as retraining inputs: parsing, refusals with reasons, the join, threshold floors."""

from __future__ import annotations

import json

import pytest

from models.features import CLASSIFIER_FEATURES
from training.drift import parse_drift
from training.feedback import FLOOR_CAP, join, parse_alerts, parse_feedback, read_feedback, threshold_floors

N = len(CLASSIFIER_FEATURES)


def drift_event(series: str = "search|latency_p99_ms|instance=i-3", model: str = "detector",
                detected_at: str = "2026-03-01T10:00:00Z", **kw) -> bytes:
    svc, metric, _ = series.split("|")
    return json.dumps({"schema": "vigil.drift/v1", "series": series, "service": svc, "metric": metric,
                       "tags": {"instance": "i-3"}, "signal": "detector_score", "model": model,
                       "model_version": "v-abc", "detector": "page_hinkley", "event_time": detected_at,
                       "detected_at": detected_at, "stats": {"mean": 0.4}, **kw}).encode()


def test_drift_events_give_the_reason_and_refuse_bad_records_with_reasons() -> None:
    records = [("f:1", drift_event()),
               ("f:2", drift_event("payments|error_rate|instance=i-1", model="forecaster")),
               ("f:3", drift_event()),  # the same series again: one series, two events
               ("f:4", b"{not json"),
               ("f:5", drift_event(schema="vigil.drift/v0")),
               ("f:6", drift_event(model="classifier")),
               ("f:7", json.dumps({"schema": "vigil.drift/v1", "series": "nokey", "model": "detector",
                                   "detected_at": "2026-03-01T10:00:00Z"}).encode()),
               ("f:8", drift_event(detected_at="2026-03-01T10:00:00")),  # no zone
               ("f:9", drift_event("search|cpu_util|instance=i-0", detected_at="2026-02-01T00:00:00Z"))]
    d = parse_drift(records, since_ms=1772236800000)  # 2026-02-28T00:00:00Z
    assert d.reason() == {"drift": ["payments|error_rate|instance=i-1", "search|latency_p99_ms|instance=i-3"],
                          "events": 3, "by_model": {"detector": 2, "forecaster": 1}}
    assert d.metric_kinds() == ["error_rate", "latency_p99_ms"] and d.metric_kinds("forecaster") == ["error_rate"]
    assert d.before_since == 1
    assert [(b["where"], b["reason"]) for b in d.bad] == [
        ("f:4", "not_json"), ("f:5", "wrong_schema"), ("f:6", "bad_model"), ("f:7", "bad_series"), ("f:8", "bad_time")]
    assert d.summary()["bad_by_reason"] == {"not_json": 1, "wrong_schema": 1, "bad_model": 1, "bad_series": 1,
                                            "bad_time": 1}


def verdict(alert_id: str, v: str, at: str = "2026-03-01T10:00:00Z", series: str = "s|m|", **kw) -> bytes:
    return json.dumps({"schema": "vigil.feedback/v1", "alert_id": alert_id, "series": series, "category": "latency",
                       "verdict": v, "by": "alice", "reason": "why not", "at": at, **kw}).encode()


def alert(alert_id: str, series: str, score: float, *, trigger: str = "detector", revision: int = 0,
          features: list[float] | None | str = "default", fp: float = 0.2) -> bytes:
    a = {"schema": "vigil.alert/v1", "alert_id": alert_id, "revision": revision, "trigger": trigger,
         "series": {"key": series}, "anomaly": {"score": score, "threshold": 0.5, "detector_score": score},
         "false_positive_probability": fp, "classifier": {"priority": {"P1": 1.0}}}
    if features == "default":
        a["classifier"]["features"] = [score] + [0.0] * (N - 1)
    elif features is not None:
        a["classifier"]["features"] = features
    return json.dumps(a).encode()


def test_feedback_joins_the_latest_revision_and_the_latest_verdict_and_lists_what_it_refuses() -> None:
    alerts = [("a:0", alert("A1", "s|m|", 0.61)), ("a:1", alert("A1", "s|m|", 0.72, revision=1, fp=0.3)),
              ("a:2", alert("A2", "s|m|", 0.9)), ("a:3", alert("A3", "s|m|", 0.8, features=None)),
              ("a:4", alert("A4", "s|m|", 0.8, features=[1.0, 2.0])), ("a:5", b"garbage"),
              ("a:6", alert("A5", "s|m|", 0.55)), ("a:7", alert("A6", "s|m|", 0.57))]
    feedback = [("f:1", verdict("A1", "ack", "2026-03-01T09:00:00Z")),
                ("f:2", verdict("A1", "false_positive", "2026-03-01T09:30:00+00:00")),
                ("f:3", verdict("A2", "false_positive", "2026-03-01T09:00:00Z")),
                ("f:4", verdict("A2", "resolved", "2026-03-01T11:00:00Z")),  # someone looked again: real
                ("f:5", verdict("A3", "false_positive")), ("f:6", verdict("A4", "resolved")),
                ("f:7", verdict("A9", "false_positive")),  # no such alert
                ("f:8", verdict("A5", "maybe")), ("f:9", verdict("A5", "ack", at="yesterday")),
                ("f:10", json.dumps({"schema": "vigil.feedback/v1", "verdict": "ack"}).encode()),
                ("f:11", b"[]"), ("f:12", verdict("A6", "ack"))]
    fb = read_feedback(feedback, alerts, {"file": "x"})
    assert fb.lineage() == {"records": 8, "false_positive": 4, "resolved": 2, "ack": 2}
    # rows: A1 from its latest revision (0.72), labelled fp; A2 resolved (fp 0); A3 and A4 have no usable row
    assert fb.alert_ids == ["A1", "A2"] and fb.y.tolist() == [1, 0]
    assert fb.X[0, 0] == pytest.approx(0.72) and fb.job_fp.tolist() == [0.3, 0.2]
    assert dict(fb.skipped) == {"no_classifier_features": 1, "classifier_features_wrong_length": 1,
                                "alert_not_found": 1, "ack_no_label": 1}
    # the job's own validation (udfs.parse.parse_feedback) and its reasons
    assert sorted((b["where"], b["reason"]) for b in fb.bad) == [
        ("f:10", "missing_field"), ("f:11", "not_object"), ("f:7", "alert_not_found"), ("f:8", "invalid_value"),
        ("f:9", "wrong_type")]
    assert [b["reason"] for b in fb.alerts_bad] == ["not_json"]
    s = fb.summary()
    assert s["classifier_rows"] == 2 and s["classifier_rows_fp"] == 1 and s["bad"] == 5
    assert s["effective_verdicts"] == {"false_positive": 2, "resolved": 2, "ack": 1}
    # the digest follows the rows and labels
    other = read_feedback(feedback[:2], alerts)
    assert other.digest() != fb.digest() and read_feedback(feedback, alerts).digest() == fb.digest()


def test_threshold_floors_sit_just_above_false_positives_and_never_hide_a_resolved_alert() -> None:
    A, B, C, D, E = ("a|cpu_util|instance=i-1", "b|cpu_util|instance=i-1", "c|cpu_util|instance=i-1",
                     "d|latency_p99_ms|instance=i-1", "e|error_rate|instance=i-1")
    alerts = [alert("a1", A, 0.71), alert("a1", A, 0.74, revision=1), alert("a2", A, 0.66),  # A: two FPs
              alert("b1", B, 0.8), alert("b2", B, 0.7),  # B: a real incident scored below the FP: no floor
              alert("c1", C, 0.6), alert("c2", C, 0.95),  # C: the real incident scored far above: floor stays
              alert("d1", D, 0.99, trigger="forecast"),  # D: a forecast-triggered FP moves no detector floor
              alert("e1", E, 1.0)]  # E: capped
    verdicts = [verdict("a1", "false_positive", series=A), verdict("a2", "false_positive", series=A),
                verdict("b1", "false_positive", series=B), verdict("b2", "resolved", series=B),
                verdict("c1", "false_positive", series=C), verdict("c2", "resolved", series=C),
                verdict("d1", "false_positive", series=D), verdict("e1", "false_positive", series=E)]
    parsed, bad = parse_feedback((str(i), v) for i, v in enumerate(verdicts))
    assert bad == []
    revs, n, alerts_bad = parse_alerts([(str(i), a) for i, a in enumerate(alerts)])
    fb = join(parsed, revs, bad, n, alerts_bad)
    floors, why = threshold_floors(fb)
    assert floors == {A: 0.741, C: 0.601, E: FLOOR_CAP}
    assert why[A]["false_positive_alerts"] == 2 and why[A]["highest_false_positive_score"] == 0.74
    assert why[B]["floor"] is None and "resolved alert of this series scored 0.7" in why[B]["why_none"]
    assert D not in why
    # an acknowledgement is not a verdict: it sets no floor
    acked = join(parse_feedback([("x", verdict("a1", "ack", series=A))])[0], revs)
    assert threshold_floors(acked) == ({}, {})
