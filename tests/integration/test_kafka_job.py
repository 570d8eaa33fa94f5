"""The job against the real Kafka broker and Redis: known input with bad records among it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.artifact import ArtifactStore
from models.context import connect, seed
from tests.contracts import check_all
from tests.integration.kafka_helpers import job_config, produce, read_all, read_keyed
from training.simulate import SERVICES, Incident, generate
from udfs.parse import series_key

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
START = 1_780_000_000_000 - (1_780_000_000_000 % 3_600_000)
BAD = [
    (b"{not json", "not_json"),
    (b'{"metric":"cpu_util","value":"NaN","timestamp":1780000000000,"service":"search"}', "wrong_type"),
    (b'{"metric":"cpu_util","value":Infinity,"timestamp":1780000000000,"service":"search"}', "non_finite_value"),
    (b'{"metric":"cpu_util","timestamp":1780000000000,"service":"search"}', "missing_field"),
    (b"\xc3\x28", "not_utf8"),
]


def run_job(config: Path, timeout: int = 420) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "jobs.vigil_job", "--config", str(config), "--bounded"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def spike_scenario():
    spike = Incident("it-spike", "spike", "search", "i-1", ("latency_p99_ms",), START + 70 * 60_000,
                     START + 73 * 60_000, "latency")
    return spike, generate(seed=11, hours=1.6, start_ms=START, instances=2, incidents=[spike], business_metric=False)


def test_job_on_kafka_alerts_on_the_spike_and_dead_letters_every_bad_record(
        tmp_path, trained_store, kafka_bootstrap, redis_url, topic_prefix):
    seed(connect(redis_url), SERVICES)
    cfg = job_config(tmp_path, topic_prefix, kafka_bootstrap, redis_url, trained_store)
    spike, scen = spike_scenario()
    good = [json.dumps(e).encode() for e in scen.events]
    payloads = good[:500] + [b for b, _ in BAD] + good[500:]
    offsets = produce(kafka_bootstrap, f"{topic_prefix}.metrics", payloads)

    done = run_job(cfg)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # shards interleave on the dead-letter topic: in source order
    dead = sorted(read_all(kafka_bootstrap, f"{topic_prefix}.dead_letters"), key=lambda d: d["source"]["offset"])
    assert [d["reason"] for d in dead] == [r for _, r in BAD]
    assert [d["source"]["offset"] for d in dead] == offsets[500:500 + len(BAD)]
    assert all(d["source"]["topic"] == f"{topic_prefix}.metrics" and d["source"]["partition"] == 0 for d in dead)
    assert dead[4]["payload_encoding"] == "base64"
    check_all("dead-letter", dead)

    keyed = read_keyed(kafka_bootstrap, f"{topic_prefix}.alerts")
    alerts = [a for _, a in keyed]
    assert alerts, "no alerts at all"
    check_all("alert", alerts)
    # keyed by fingerprint: every revision of an alert on one partition, in order
    assert all(k == a["fingerprint"].encode() for k, a in keyed)
    assert len({(a["alert_id"], a["revision"]) for a in alerts}) == len(alerts), "duplicate alert records"
    key = series_key("search", "latency_p99_ms", (("instance", "i-1"),))
    hits = [a for a in alerts if key in a["related_series"]]
    assert hits, [a["series"]["key"] for a in alerts]
    store = ArtifactStore(trained_store)
    expected_versions = {n: store.latest(n) for n in ("detector", "forecaster", "clusterer", "classifier")}
    assert all(a["models"] == expected_versions for a in alerts)
    assert all(a["team"] in ("edge", "playback", "discovery", "payments", "sre") for a in alerts)

    forecasts = read_all(kafka_bootstrap, f"{topic_prefix}.forecasts")
    n_series = len({e.get("metric", "disk_util") + json.dumps(e["tags"], sort_keys=True) + e.get("service", "")
                    for e in scen.events})
    assert len(forecasts) >= n_series  # every series forecast at least once
    assert all(len(f["horizons"]) == 5 for f in forecasts)
    check_all("forecast", forecasts)


def test_job_keeps_scoring_when_redis_is_down(tmp_path, trained_store, kafka_bootstrap, topic_prefix):
    dead_redis = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    cfg = job_config(tmp_path, topic_prefix, kafka_bootstrap, dead_redis, trained_store,
                     job={"delivery": "at_least_once"})
    spike, scen = spike_scenario()
    produce(kafka_bootstrap, f"{topic_prefix}.metrics", [json.dumps(e).encode() for e in scen.events])
    done = run_job(cfg)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    alerts = read_all(kafka_bootstrap, f"{topic_prefix}.alerts", committed=False)
    key = series_key("search", "latency_p99_ms", (("instance", "i-1"),))
    assert any(key in a["related_series"] for a in alerts)
    # without context the impact uses the documented defaults rather than failing
    assert all(a["impact"]["revenue_per_min_at_risk"] == 0.0 for a in alerts)
