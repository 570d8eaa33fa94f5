"""Retraining from what the topics hold, on the real Kafka broker: bounded reads, the replay, drift and feedback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from retrain_helpers import drift_event, judged_alerts, manifests, tiny_specs, train_args

from common.kafka_io import TopicReadError, create_topics, produce, read_topic
from models.artifact import ArtifactStore
from models.catalog import MODEL_NAMES
from training.__main__ import main
from training.base import TrainConfig
from training.simulate import generate

pytestmark = pytest.mark.integration


def test_a_read_stops_at_the_end_offsets_and_keeps_the_latest_when_bounded(kafka_bootstrap: str,
                                                                           topic_prefix: str) -> None:
    t = f"{topic_prefix}.read"
    assert create_topics(kafka_bootstrap, [t], partitions=2) == [t]
    produce(kafka_bootstrap, t, [f"a{i}".encode() for i in range(30)], partition=0)
    produce(kafka_bootstrap, t, [f"b{i}".encode() for i in range(10)], partition=1)
    r = read_topic(kafka_bootstrap, t, timeout_s=30)
    assert len(r.records) == 40 and not r.truncated and not r.timed_out
    assert r.partitions == {0: {"start": 0, "end": 30, "read": 30}, 1: {"start": 0, "end": 10, "read": 10}}
    assert [x.value for x in r.records[:2]] == [b"a0", b"a1"] and r.records[-1].value == b"b9"
    bounded = read_topic(kafka_bootstrap, t, max_records=8, timeout_s=30)
    assert bounded.truncated and [x.value.decode() for x in bounded.records] == \
        ["a24", "a25", "a26", "a27", "a28", "a29", "b8", "b9"]
    missing = read_topic(kafka_bootstrap, f"{topic_prefix}.none", timeout_s=10)
    assert not missing.exists and missing.records == []
    with pytest.raises(TopicReadError, match="does not exist"):
        read_topic(kafka_bootstrap, f"{topic_prefix}.none", timeout_s=10, must_exist=True)


def test_replay_of_the_metrics_topic_with_drift_and_feedback_from_their_topics(
        tiny, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    base_root, base = tiny
    metrics, drift_t, fb_t, al_t = (f"{topic_prefix}.{t}" for t in ("metrics", "drift", "feedback", "alerts"))
    create_topics(kafka_bootstrap, [metrics], partitions=2)
    create_topics(kafka_bootstrap, [drift_t, fb_t, al_t])
    sc = generate(seed=41, hours=4.0, instances=2)
    produce(kafka_bootstrap, metrics, [json.dumps(e).encode() for e in sc.events] + [b"{oops", b"[]"])
    drifted = ["search|latency_p99_ms|instance=i-1", "payments|cpu_util|instance=i-0", "nowhere|cpu_util|"]
    produce(kafka_bootstrap, drift_t, [json.dumps(drift_event(s)).encode() for s in drifted] + [b"not json"])
    alerts, verdicts = judged_alerts(base_root)
    produce(kafka_bootstrap, al_t, [json.dumps(a).encode() for a in alerts])
    produce(kafka_bootstrap, fb_t, [json.dumps(v).encode() for v in verdicts[:6]] + [b"{}"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TrainConfig, "specs", tiny_specs)
        args = train_args(tmp_path / "store", tmp_path / "runs", "--data", "replay", "--bootstrap", kafka_bootstrap,
                          "--topic", metrics, "--background", "10", "--drift-topic", drift_t,
                          "--feedback-topic", fb_t, "--alerts-topic", al_t)
        assert main(args) == 0
    out = capsys.readouterr().out
    assert "drift: 3 events on 3 series; 1 bad records" in out
    assert "feedback: 6 records" in out and "data: replay" in out
    m = manifests(tmp_path / "store")
    det = m["detector"]["training_data"]
    used = det["lineage"]["data"]
    assert used["used"] == "replay"
    rp = used["replay"]
    assert rp["records"] == len(sc.events) + 2 and rp["events"] == len(sc.events)
    assert rp["dead_letters"] == {"not_json": 1, "not_object": 1}
    parts = rp["read"]["partitions"].values()
    assert rp["read"]["topic"] == metrics and sum(p["read"] for p in parts) == rp["records"]
    # drift selected the two drifted series that exist, and ten others as background
    assert rp["selection"] == {"drifted_requested": 3, "drifted_found": 2, "drifted_missing": ["nowhere|cpu_util|"],
                               "background": 10, "background_limit": 10}
    assert rp["series"] == 61  # what the topic held; 12 of them replayed
    fit = next(s for s in det["sources"] if s["role"] == "fit+calibration")
    assert fit["source"] == "replay" and fit["series"] == 12 and fit["selection"] == {"drifted": 2, "background": 10}
    val = next(s for s in det["sources"] if s["role"] == "validation")
    assert val["injected"]["incidents"] >= 4
    assert m["detector"]["evaluation"]["test_scenario"]["source"] == "replay"
    assert m["detector"]["evaluation"]["incident_recall"] > 0
    # four hours cannot hold the forecaster's 6 h and one-day horizons in each slice: it keeps the generator,
    # and says why
    fc = m["forecaster"]["training_data"]["lineage"]["data"]
    assert fc["used"] == "generator" and "0 rows at horizon 360 min in the fit slice" in fc["fallback"]
    assert "data: generator (0 rows at horizon 360 min" in out
    # the reason and the feedback from the topics
    assert det["lineage"]["reason"]["drift"] == sorted(drifted) and det["lineage"]["reason"]["events"] == 3
    assert m["classifier"]["training_data"]["lineage"]["feedback"]["records"] == 6
    assert "feedback: 6 records" in out and "1 bad records" in out
    assert m["classifier"]["evaluation"]["feedback"]["rows"] == 6
    # the clusterer's model is the one it had; its version is new, as its lineage names this run's reason
    before = manifests(base_root)["clusterer"]
    assert (m["clusterer"]["sha256"], m["clusterer"]["postprocessing"]) == (before["sha256"], before["postprocessing"])
    assert m["clusterer"]["version"] != base.versions["clusterer"]
    assert set(ArtifactStore(tmp_path / "store").versions("detector")) == {m["detector"]["version"]}
    assert all(m[n]["version"] for n in MODEL_NAMES)
    # an unreachable metrics topic fails before anything is written
    assert main(train_args(tmp_path / "other", tmp_path / "runs", "--data", "replay", "--bootstrap", kafka_bootstrap,
                      "--topic", f"{topic_prefix}.absent")) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "other").exists()
