"""The registry against the real Redis: index, promote (verified first), rollback, diff."""

from __future__ import annotations

import shutil

import pytest

from models.artifact import ArtifactStore
from models.context import connect
from models.registry import Registry, RegistryError

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
