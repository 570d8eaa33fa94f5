"""Business rules through Kafka and Flink: a maintenance window on the events topic suppresses the
spike's alerts, a deployment marks them, and a malformed event is a dead letter from that topic."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from models.context import connect, seed
from tests.contracts import check_all, problems
from tests.integration.kafka_helpers import job_config, produce, read_all
from tests.integration.test_kafka_job import START, run_job, spike_scenario
from training.simulate import SERVICES

pytestmark = pytest.mark.integration


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def test_events_topic_windows_reach_the_alerts(tmp_path, trained_store, kafka_bootstrap, redis_url, topic_prefix):
    seed(connect(redis_url), SERVICES)
    cfg = job_config(tmp_path, topic_prefix, kafka_bootstrap, redis_url, trained_store)
    spike, scen = spike_scenario()
    maintenance = {"schema": "vigil.ops-event/v1", "kind": "maintenance", "service": "search",
                   "at": (START + 60 * 60_000) // 1000, "duration_s": 1800, "reason": "reindex", "by": "ops"}
    deploy = {"kind": "deploy", "service": "playback", "at": START // 1000, "duration_s": 7200, "version": "2.3.1"}
    bad = {"kind": "deploy", "service": "playback", "at": START // 1000}
    assert problems("ops-event", maintenance) == problems("ops-event", deploy) == [] and problems("ops-event", bad)
    offsets = produce(kafka_bootstrap, f"{topic_prefix}.events", [json.dumps(e).encode()
                                                                  for e in (maintenance, deploy, bad)])
    produce(kafka_bootstrap, f"{topic_prefix}.metrics", [json.dumps(e).encode() for e in scen.events])

    done = run_job(cfg)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    dead = read_all(kafka_bootstrap, f"{topic_prefix}.dead_letters")
    assert [(d["reason"], d["source"]["topic"], d["source"]["offset"]) for d in dead] == [
        ("missing_field", f"{topic_prefix}.events", offsets[2])]
    assert "duration_s" in dead[0]["detail"]
    alerts = read_all(kafka_bootstrap, f"{topic_prefix}.alerts")
    check_all("alert", alerts)
    live = [a for a in alerts if a["status"] != "resolved"]
    muted = [a for a in live if a["series"]["service"] == "search"
             and START + 60 * 60_000 <= ms(a["event_time"]) < START + 90 * 60_000]
    assert muted, "the spike raised no alert in the maintenance window"
    assert all(a["status"] == "suppressed" and "maintenance" in a["suppressed_by"] for a in muted)
    assert all(any(r["rule"] == "maintenance" and "reindex" in r["effect"] for r in a["explanation"]["rules"])
               for a in muted)
    assert all(a["deploying"] == (a["series"]["service"] == "playback") for a in live)
