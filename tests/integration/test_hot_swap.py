"""Hot swap in the running job: a shadow version scores beside production without alerting; promote a
new version, see alerts switch with no restart; a corrupted and a schema-mismatched version are
refused while the old one keeps serving; roll back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from jobs.launch import start_job, stop_job
from models.artifact import ArtifactStore, content_version
from models.context import connect, seed
from registry.client import Registry, kafka_publisher
from registry.shadow import live_diff
from tests.contracts import check_all
from tests.integration.kafka_helpers import job_config, produce, read_all, wait_for
from training.simulate import SERVICES, generate
from training.train import train_all

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
START = 1_780_000_000_000 - (1_780_000_000_000 % 3_600_000)


def test_promote_swaps_models_in_the_running_job_and_refuses_a_corrupted_one(
        tmp_path, trained_store, kafka_bootstrap, redis_url, topic_prefix):
    store_root = tmp_path / "store"
    shutil.copytree(trained_store, store_root)
    store = ArtifactStore(store_root)
    v1 = {n: store.latest(n) for n in ("detector", "forecaster", "clusterer", "classifier")}
    redis = connect(redis_url)
    seed(redis, SERVICES)
    for name, version in v1.items():  # the job starts on these
        redis.set(f"vigil:registry:{name}:production", version)
    cfg = job_config(tmp_path, topic_prefix, kafka_bootstrap, redis_url, store_root,
                     job={"delivery": "at_least_once"},
                     alerts={"dedup_window_s": 60})
    updates_topic = f"{topic_prefix}.model_updates"

    scen = generate(seed=21, hours=3, start_ms=START, instances=2, business_metric=False)
    events = [json.dumps(e).encode() for e in scen.events]
    half = len(events) // 2
    produce(kafka_bootstrap, f"{topic_prefix}.metrics", events[:half])
    # a real new version of every model, trained on other data; its detector goes into shadow first
    v2 = train_all(store_root, seed=2, quick=True, runs_dir=None, progress=False)
    assert all(v2[n] != v1[n] for n in v1)
    publish = kafka_publisher(kafka_bootstrap, updates_topic)
    registry = Registry(store, redis, publish)
    assert registry.promote("detector", v2["detector"], alias="shadow", by="test")["alias"] == "shadow"
    job = start_job(cfg)
    try:
        first = wait_for(lambda: read_all(kafka_bootstrap, f"{topic_prefix}.alerts", committed=False), 240)
        assert first and all(a["models"] == v1 for a in first)  # the shadow never alerts

        # the shadow scored the same inputs beside production, and `diff --live` sums that up
        shadow = wait_for(lambda: read_all(kafka_bootstrap, f"{topic_prefix}.shadow", committed=False), 60)
        check_all("shadow", shadow)
        d = live_diff(shadow, "detector", v1["detector"], v2["detector"])
        assert d["inputs"] > 100 and d["inputs"] == sum(1 for r in shadow if r["model"] == "detector")
        assert 0.0 < d["mean_abs_score_diff"] < 1.0 and 0.0 <= d["alert_agreement"] <= 1.0
        assert d["both_alert"] + d["only_production_alerts"] + d["only_shadow_alerts"] <= d["inputs"]

        # a corrupted detector version: one flipped byte in model.onnx
        bad = store_root / "detector" / "v-00000000bad0"
        shutil.copytree(store_root / "detector" / v1["detector"], bad)
        manifest = json.loads((bad / "manifest.json").read_text())
        manifest["version"] = bad.name
        (bad / "manifest.json").write_text(json.dumps(manifest))
        data = bytearray((bad / "model.onnx").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (bad / "model.onnx").write_bytes(bytes(data))
        publish({"model": "detector", "version": bad.name, "alias": "production"})
        # a detector version whose manifest promises another feature schema than the job computes,
        # published as such (its content address is right, so that the schema check is what refuses it)
        manifest = json.loads((store_root / "detector" / v1["detector"] / "manifest.json").read_text())
        manifest["feature_schema"] = list(reversed(manifest["feature_schema"]))
        manifest["version"] = content_version(manifest)
        odd = store_root / "detector" / manifest["version"]
        shutil.copytree(store_root / "detector" / v1["detector"], odd)
        (odd / "manifest.json").write_text(json.dumps(manifest))
        publish({"model": "detector", "version": odd.name, "alias": "production"})

        for name, version in v2.items():  # then the new versions, through the registry
            assert registry.promote(name, version, by="test")["previous"] == v1[name]

        def events_seen():
            evs = read_all(kafka_bootstrap, f"{topic_prefix}.model_events", committed=False)
            serving = {(e["operator"], e["model"]) for e in evs
                       if e["status"] == "serving" and e["version"] == v2[e["model"]]}
            return evs if len(serving) == 4 else None

        evs = wait_for(events_seen, 120)
        assert evs, [(e["model"], e["version"], e["status"], e["detail"][:120])
                     for e in read_all(kafka_bootstrap, f"{topic_prefix}.model_events", committed=False)]
        check_all("model-event", evs)
        refused = [e for e in evs if e["status"] == "refused"]
        corrupted = [e for e in refused if e["version"] == bad.name]
        mismatched = [e for e in refused if e["version"] == odd.name]
        assert {e["operator"] for e in corrupted} == {e["operator"] for e in mismatched} == {"score-shard"}
        assert all("sha256" in e["detail"] for e in corrupted)
        assert all("schema" in e["detail"] for e in mismatched), mismatched

        produce(kafka_bootstrap, f"{topic_prefix}.metrics", events[half:])
        # only records scored after the swap can name v2 (counting records instead raced the job)
        later = wait_for(lambda: [a for a in read_all(kafka_bootstrap, f"{topic_prefix}.alerts", committed=False)
                                  if a["models"] == v2], 240)
        assert later, "no alert scored by the promoted versions"
        assert job.poll() is None, "the job restarted or died"
        # no gap: every series was forecast after the swap, from state kept across it
        fcs = read_all(kafka_bootstrap, f"{topic_prefix}.forecasts", committed=False)
        late = [f for f in fcs if f["model_version"] == v2["forecaster"]]
        assert {f["series"] for f in late} == {f["series"] for f in fcs}
        check_all("forecast", fcs)
        check_all("alert", later)

        # rollback: the registry points production back at v1 and tells the job
        back = registry.rollback("detector", by="test")
        assert back["version"] == v1["detector"] and back["previous"] == v2["detector"]
        assert wait_for(lambda: [e for e in read_all(kafka_bootstrap, f"{topic_prefix}.model_events",
                                                      committed=False)
                                 if e["status"] == "serving" and e["version"] == v1["detector"]], 60)
    finally:
        for name in v1:
            redis.delete(f"vigil:registry:{name}:production", f"vigil:registry:{name}:production:history",
                         f"vigil:registry:{name}:versions")
        stop_job(job)
