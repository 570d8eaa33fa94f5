"""The Alertmanager forwarder without a network: the API v2 shape and what each revision posts."""

from __future__ import annotations

import json

import pytest

from common.config import AlertmanagerConfig, VigilConfig
from jobs.alertmanager import Forwarder, to_alertmanager
from jobs.inprocess import InProcessJob
from models.pipeline import ModelBundle
from training.simulate import SERVICES, Incident, generate

START = 1_780_000_000_000 - (1_780_000_000_000 % 3_600_000)
CTX = {k: {f: v[f] for f in ("owner", "criticality", "revenue_per_min", "users", "description")}
       for k, v in SERVICES.items()}
AM = AlertmanagerConfig(runbook_url="https://runbooks.example.com/vigil/{category}")


@pytest.fixture(scope="module")
def alerts(trained_store) -> list[dict]:
    """Every revision of a run with an incident, swept at the end: open, escalated, suppressed, resolved."""
    cfg = VigilConfig.load(overrides={"validation": {"max_past_s": None, "max_future_s": None}})
    spike = Incident("am", "spike", "search", "i-1", ("latency_p99_ms",), START + 90 * 60_000,
                     START + 93 * 60_000, "latency")
    scen = generate(seed=3, hours=3, start_ms=START, instances=3, incidents=[spike], business_metric=False)
    job = InProcessJob(cfg, ModelBundle.load(trained_store), context=CTX.get)
    job.run([json.dumps(e).encode() for e in scen.events], START)
    job.sweep()
    return [json.loads(a) for a in job.alerts]


def test_every_revision_maps_to_alertmanagers_shape(alerts):
    assert {a["status"] for a in alerts} >= {"open", "resolved"}
    for a in alerts:
        am = to_alertmanager(a, AM)
        assert set(am) <= {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
        assert {"alertname", "service", "severity", "priority", "team", "category", "vigil_fingerprint"} \
            <= set(am["labels"])
        assert all(isinstance(v, str) and v for v in am["labels"].values())
        assert am["labels"]["vigil_fingerprint"] == a["fingerprint"] and am["labels"]["team"] == a["team"]
        assert ("entity" in am["labels"]) == bool(a["series"]["entity"])
        assert am["annotations"]["summary"] == a["explanation"]["summary"]
        assert a["alert_id"] in am["annotations"]["description"]
        assert am["annotations"]["recommended_actions"]
        assert am["annotations"]["runbook"] == f"https://runbooks.example.com/vigil/{a['category']}"
        assert am["startsAt"] == a["startsAt"]
        assert ("endsAt" in am) == (a["status"] == "resolved")


def test_the_forwarder_posts_the_lifecycle_and_ends_old_label_sets(alerts):
    fw = Forwarder(AlertmanagerConfig())
    posted = []
    for a in alerts:
        posted.append((a, fw.apply(a)))
    for a, out in posted:
        if a["status"] in ("open", "escalated"):
            assert out[-1]["labels"]["severity"] == a["severity"] and "endsAt" not in out[-1]
        if a["status"] == "resolved":
            assert out[-1]["endsAt"] == a["endsAt"]
    # at the end nothing is active that the stream resolved, and what is active is re-posted
    last = {}
    for a in alerts:
        last[a["fingerprint"]] = a
    still = {fp for fp, a in last.items() if a["status"] in ("open", "escalated")}
    assert set(fw.active) == still
    assert {x["labels"]["vigil_fingerprint"] for x in fw.repeat()} == still


def test_an_escalation_ends_the_alert_under_its_old_labels():
    base = {"fingerprint": "f1", "alert_id": "a1", "revision": 0, "status": "open", "severity": "medium",
            "priority": "P3", "team": "sre", "category": "latency", "trigger": "detector", "value": 1.0,
            "expected_value": 0.5, "anomaly": {"score": 0.99, "threshold": 0.9},
            "window": {"candidates": 1}, "related_series": ["s|m|"], "impact": {},
            "false_positive_probability": 0.1, "explanation": {"summary": "x"}, "recommended_actions": ["y"],
            "startsAt": "2026-05-28T00:00:00.000Z", "endsAt": None,
            "series": {"service": "s", "metric": "m", "entity": None}}
    fw = Forwarder(AlertmanagerConfig())
    assert len(fw.apply(base)) == 1
    out = fw.apply({**base, "revision": 1, "status": "escalated", "severity": "critical"})
    assert [o["labels"]["severity"] for o in out] == ["medium", "critical"]
    assert "endsAt" in out[0] and "endsAt" not in out[1]
    out = fw.apply({**base, "revision": 2, "status": "suppressed", "severity": "critical"})
    assert len(out) == 1 and "endsAt" in out[0] and fw.active == {}
    assert fw.apply_record(b"not json", "t/0@1") == [] and fw.apply_record(b'{"a":1}', "t/0@2") == []


def test_rules_that_applied_show_in_the_annotations(alerts):
    a = json.loads(json.dumps(alerts[0]))
    a["explanation"]["rules"] = [{"rule": "deploy", "effect": "deploying until 2026-12-03T11:00:00Z (events)",
                                  "changed_outcome": True}]
    a["deploying"] = True
    got = to_alertmanager(a, AlertmanagerConfig())
    assert got["annotations"]["deploying"] == "true"
    assert got["annotations"]["rules"] == "deploy: deploying until 2026-12-03T11:00:00Z (events) (changed the outcome)"
    a["explanation"]["rules"], a["deploying"] = [], False
    plain = to_alertmanager(a, AlertmanagerConfig())["annotations"]
    assert "rules" not in plain and "deploying" not in plain
