"""The registry against the real Redis: index, promote (verified first), rollback, diff."""

from __future__ import annotations

import json
import shutil

import pytest

from models.artifact import ArtifactStore
from models.context import connect
from registry.client import Registry, RegistryError

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(trained_store, redis_url, tmp_path, topic_prefix):
    root = tmp_path / "store"
    shutil.copytree(trained_store, root)
    redis = connect(redis_url)

    def clear():
        for name in ("detector", "forecaster", "clusterer", "classifier"):
            redis.delete(*redis.keys(f"vigil:registry:{name}:*") or ["none"])

    clear()  # the registry's keys are global to a Redis: start from none
    events: list[dict] = []
    reg = Registry(ArtifactStore(root), redis, events.append)
    yield reg, events
    clear()


def test_promote_rollback_and_events(registry):
    reg, events = registry
    v = reg.store.latest("detector")
    assert reg.sync("detector") == [v] and reg.versions("detector") == [v]
    ev = reg.promote("detector", v, by="alice")
    assert (ev["version"], ev["previous"], ev["action"], ev["by"]) == (v, None, "promote", "alice")
    assert reg.alias("detector") == v and events == [ev]
    # promoting the same version again changes nothing and tells nobody
    assert reg.promote("detector", v)["action"] == "unchanged" and len(events) == 1
    with pytest.raises(RegistryError, match="no earlier version"):
        reg.rollback("detector")
    with pytest.raises(RegistryError, match="Unknown model"):
        reg.promote("detecter", v)


def test_a_corrupted_version_is_never_promoted(registry):
    reg, events = registry
    v = reg.store.latest("classifier")
    onnx = reg.store.root / "classifier" / v / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[100] ^= 0x01
    onnx.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="sha256"):
        reg.promote("classifier", v)
    assert reg.alias("classifier") is None and events == []


def test_diff_lists_evaluation_figures_side_by_side(registry):
    reg, _ = registry
    v = reg.store.latest("forecaster")
    rows = reg.diff("forecaster", v, v)
    assert rows and all(a == b for _, a, b in rows)
    assert any(k.endswith("mae") for k, _, _ in rows)


def test_shadow_alias_promote_and_clear(registry):
    reg, events = registry
    v = reg.store.latest("forecaster")
    ev = reg.promote("forecaster", v, alias="shadow", by="bob")
    assert (ev["alias"], ev["version"]) == ("shadow", v)
    assert reg.aliases("forecaster") == {"production": None, "shadow": v}
    cleared = reg.clear_shadow("forecaster", by="bob")
    assert (cleared["alias"], cleared["version"], cleared["previous"], cleared["action"]) == \
        ("shadow", None, v, "clear")
    assert reg.aliases("forecaster") == {"production": None, "shadow": None} and events == [ev, cleared]
    with pytest.raises(RegistryError, match="no shadow version"):
        reg.clear_shadow("forecaster")


def test_diff_live_reads_production_and_shadow_from_the_shadow_topic(
        tmp_path, kafka_bootstrap, redis_url, topic_prefix, capsys):
    from common.kafka_io import produce
    from tests.integration.kafka_helpers import job_config
    from training.__main__ import main

    cfg = job_config(tmp_path, topic_prefix, kafka_bootstrap, redis_url, tmp_path / "store")
    rec = {"schema": "vigil.shadow/v1", "model": "detector", "series": "s|m|", "service": "s",
           "event_time": "2026-11-29T00:00:00+00:00"}
    scores = [(0.2, False, 0.7, True), (0.9, True, 0.95, True), (0.1, False, 0.1, False)]
    produce(kafka_bootstrap, f"{topic_prefix}.shadow",
            [json.dumps({**rec, "production": {"version": "v-a", "score": ps, "alert": pa},
                         "shadow": {"version": "v-b", "score": ss, "alert": sa}}).encode()
             for ps, pa, ss, sa in scores] + [b"not json"])
    assert main(["diff", "detector", "v-a", "v-b", "--live", "--config", str(cfg)]) == 0
    out = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert (out["inputs"], out["both_alert"], out["only_shadow_alerts"], out["only_production_alerts"]) == \
        ("3", "1", "1", "0")
    assert float(out["alert_agreement"]) == pytest.approx(2 / 3, abs=1e-4)
    assert float(out["mean_abs_score_diff"]) == pytest.approx((0.5 + 0.05 + 0.0) / 3, abs=1e-4)
    assert main(["diff", "detector", "v-a", "v-c", "--live", "--config", str(cfg)]) == 1  # no such pair
