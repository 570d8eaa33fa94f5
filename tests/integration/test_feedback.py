"""Feedback through the running job: "false positive" verdicts on one series' alerts, sent to the
alert-feedback topic, lower the priority of the service's later alerts of that category."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from common.config import VigilConfig
from common.kafka_io import GroupProgress
from jobs.inprocess import InProcessJob
from jobs.launch import start_job, stop_job
from models.context import connect, seed
from models.features import PRIORITIES
from models.pipeline import ModelBundle
from tests.integration.kafka_helpers import job_config, produce, read_all, wait_for
from training.simulate import SERVICES, Incident, generate, incident_series

pytestmark = pytest.mark.integration
START = 1_780_000_000_000 - (1_780_000_000_000 % 3_600_000)
CUT = START + 120 * 60_000
SPIKE1 = Incident("f1", "spike", "search", "i-1", ("latency_p99_ms",), START + 90 * 60_000, START + 93 * 60_000,
                  "latency")
SPIKE2 = Incident("f2", "spike", "search", "i-0", ("latency_p99_ms",), START + 150 * 60_000,
                  START + 153 * 60_000, "latency")
CTX = {k: {f: v[f] for f in ("owner", "criticality", "revenue_per_min", "users", "description")}
       for k, v in SERVICES.items()}


def _ts(e: dict) -> int:
    return e["timestamp"] if "metric" in e else e["timestamp"] * 1000


def _verdicts(alerts: list[dict]) -> list[bytes]:
    """Three people's "false positive" verdicts on each alert of the first spike's series."""
    key = incident_series(SPIKE1, 2)[0]
    return [json.dumps({"schema": "vigil.feedback/v1", "alert_id": a["alert_id"], "series": key,
                        "category": a["category"], "verdict": "false_positive", "by": who,
                        "reason": "load test", "at": datetime.now(UTC).isoformat()}).encode()
            for a in alerts if a["series"]["key"] == key for who in ("ana", "ben", "chi")]


def test_false_positive_verdicts_lower_priority_in_the_running_job(
        tmp_path, trained_store, kafka_bootstrap, redis_url, topic_prefix):
    seed(connect(redis_url), SERVICES)
    scen = generate(seed=3, hours=3, start_ms=START, instances=2, incidents=[SPIKE1, SPIKE2],
                    business_metric=False)
    before = [json.dumps(e).encode() for e in scen.events if _ts(e) < CUT]
    after = [json.dumps(e).encode() for e in scen.events if _ts(e) >= CUT]
    key2 = incident_series(SPIKE2, 2)[0]

    # what the logic does with and without the verdicts, in-process
    cfg = VigilConfig.load(overrides={"validation": {"max_past_s": None, "max_future_s": None}})
    models = ModelBundle.load(trained_store)
    plain = InProcessJob(cfg, models, context=CTX.get).run(before, START)
    first = [json.loads(a) for a in plain.alerts]
    verdicts = _verdicts(first)
    assert verdicts, "the first spike was alerted"
    judged = InProcessJob(cfg, models, context=CTX.get).run(before, START)
    for v in verdicts:
        judged.feed_feedback(v)
    n0 = len(judged.alerts)
    judged.run(after, START)
    plain.run(after, START)
    expect = [json.loads(a) for a in judged.alerts[n0:] if json.loads(a)["series"]["key"] == key2]
    unjudged = [json.loads(a) for a in plain.alerts[len(first):] if json.loads(a)["series"]["key"] == key2]
    assert expect and unjudged
    assert expect[0]["feedback"] is not None and unjudged[0]["feedback"] is None

    # the same through Kafka and the running job
    cfg_path = job_config(tmp_path, topic_prefix, kafka_bootstrap, redis_url, trained_store,
                          job={"delivery": "at_least_once"})
    produce(kafka_bootstrap, f"{topic_prefix}.metrics", before)
    job = start_job(cfg_path)
    try:
        key1 = incident_series(SPIKE1, 2)[0]
        seen = wait_for(lambda: [a for a in read_all(kafka_bootstrap, f"{topic_prefix}.alerts", committed=False)
                                 if a["series"]["key"] == key1], 240)
        assert seen, "the job did not alert on the first spike"
        produce(kafka_bootstrap, f"{topic_prefix}.feedback", verdicts)
        # offsets are committed on checkpoints, after the records were processed (the topic has one partition)
        with GroupProgress(kafka_bootstrap, f"{topic_prefix}-feedback", f"{topic_prefix}.feedback") as progress:
            assert wait_for(lambda: progress.committed() >= len(verdicts), 120), "the job did not consume the verdicts"
        produce(kafka_bootstrap, f"{topic_prefix}.metrics", after)
        got = wait_for(lambda: [a for a in read_all(kafka_bootstrap, f"{topic_prefix}.alerts", committed=False)
                                if a["series"]["key"] == key2], 240)
        assert job.poll() is None, "the job died"
    finally:
        stop_job(job)
    assert got, "no alert on the second spike"
    a, e, u = got[0], expect[0], unjudged[0]
    assert (a["alert_id"], a["priority"], a["false_positive_probability"], a["feedback"]) == \
        (e["alert_id"], e["priority"], e["false_positive_probability"], e["feedback"])
    # the verdicts moved the probability up and, past demote_fp_above, the priority down a level
    assert a["false_positive_probability"] > u["false_positive_probability"]
    assert a["classifier"]["priority_demoted"] and not u["classifier"]["priority_demoted"]
    assert PRIORITIES.index(a["priority"]) == PRIORITIES.index(u["priority"]) + 1
