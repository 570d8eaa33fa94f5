"""Vigil's alerts in a real Alertmanager: an incident appears as an active alert with Vigil's labels,
routed by team; a silence made in Alertmanager mutes it; it turns resolved when the incident ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from models.context import connect, seed
from tests.integration.faults import ROOT, MiniClusterJob
from tests.integration.kafka_helpers import job_config, produce, read_all, wait_for
from training.simulate import SERVICES, Incident, generate, incident_series

pytestmark = pytest.mark.integration
START = 1_780_000_000_000 - (1_780_000_000_000 % 3_600_000)
TEAMS = {"edge", "playback", "discovery", "payments", "sre"}


def _am(url: str, path: str, body=None, method: str | None = None):
    req = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                 method=method or ("POST" if body is not None else "GET"),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


def _listed(url: str, fp: str) -> list[dict]:
    alerts = _am(url, "/api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true")
    return [a for a in alerts if a["labels"].get("vigil_fingerprint") == fp]


def test_an_incident_is_active_in_alertmanager_routed_by_team_silenced_and_resolved(
        tmp_path, trained_store, kafka_bootstrap, redis_url, alertmanager_url, topic_prefix):
    seed(connect(redis_url), SERVICES)
    cfg = job_config(tmp_path, topic_prefix, kafka_bootstrap, redis_url, trained_store,
                     job={"checkpoint_interval_ms": 1000},
                     # the spike comes 50 scores into its series: no learning period, so that it pages
                     alerts={"dedup_window_s": 600, "learning_scores": 0},
                     state={"sweep_interval_s": 1},
                     alertmanager={"url": alertmanager_url, "repeat_interval_s": 5})
    spike = Incident("am-spike", "spike", "search", "i-1", ("latency_p99_ms",), START + 70 * 60_000,
                     START + 74 * 60_000, "latency")
    scen = generate(seed=11, hours=2.0, start_ms=START, instances=2, incidents=[spike], business_metric=False)
    key = incident_series(spike, 2)[0]

    def ts(e):
        return e["timestamp"] if "metric" in e else e["timestamp"] * 1000

    cut = spike.end_ms + 2 * 60_000
    produce(kafka_bootstrap, f"{topic_prefix}.metrics", [json.dumps(e).encode() for e in scen.events if ts(e) < cut])
    job = MiniClusterJob(cfg, tmp_path / "job.log")
    fwd_log = (tmp_path / "forwarder.log").open("wb")
    fwd = subprocess.Popen([sys.executable, "-m", "jobs.alertmanager", "--config", str(cfg)], cwd=ROOT,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=fwd_log, stderr=subprocess.STDOUT)
    silence = None
    try:
        def incident_alert():
            return [a for a in read_all(kafka_bootstrap, f"{topic_prefix}.alerts", quiet_s=1)
                    if key in a["related_series"] and a["status"] in ("open", "escalated")]

        hits = wait_for(incident_alert, 240)
        assert hits, "the job raised no alert on the incident"
        fp = hits[-1]["fingerprint"]
        listed = wait_for(lambda: _listed(alertmanager_url, fp), 60, every_s=1)
        assert listed, (tmp_path / "forwarder.log").read_text()[-2000:]
        am = listed[0]
        assert am["status"]["state"] == "active"
        labels = am["labels"]
        assert labels["service"] == "search" and labels["category"] == hits[-1]["category"]
        assert labels["severity"] == hits[-1]["severity"] and labels["priority"] == hits[-1]["priority"]
        assert labels["team"] in TEAMS and labels["alertname"].startswith("Vigil")
        assert [r["name"] for r in am["receivers"]] == [labels["team"]]  # the route on `team`
        assert am["annotations"]["summary"] and am["annotations"]["recommended_actions"]
        assert am["startsAt"].startswith(hits[-1]["startsAt"][:16])

        # a silence made in Alertmanager mutes it
        now = datetime.now(UTC)
        silence = _am(alertmanager_url, "/api/v2/silences", {
            "matchers": [{"name": "vigil_fingerprint", "value": fp, "isRegex": False, "isEqual": True}],
            "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat(),
            "createdBy": "vigil-test", "comment": "muted by the test"})["silenceID"]
        muted = wait_for(lambda: [a for a in _listed(alertmanager_url, fp) if a["status"]["state"] == "suppressed"],
                         30, every_s=1)
        assert muted and muted[0]["status"]["silencedBy"] == [silence]

        # the incident ends: the rest of the stream is normal for longer than the grouping window
        produce(kafka_bootstrap, f"{topic_prefix}.metrics",
                [json.dumps(e).encode() for e in scen.events if ts(e) >= cut])
        resolved = wait_for(lambda: [a for a in read_all(kafka_bootstrap, f"{topic_prefix}.alerts", quiet_s=1)
                                     if a["fingerprint"] == fp and a["status"] == "resolved"], 240)
        assert resolved and resolved[-1]["endsAt"]
        assert wait_for(lambda: not _listed(alertmanager_url, fp), 60, every_s=1), _listed(alertmanager_url, fp)
        assert fwd.poll() is None and job.alive()
    finally:
        if silence:
            _am(alertmanager_url, f"/api/v2/silence/{silence}", method="DELETE")
        fwd.kill()
        fwd.wait(10)
        job.kill9()
