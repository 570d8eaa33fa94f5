"""Artifact store: content-addressed versions, atomic writes, verified loading, registry pointer."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from models.artifact import (
    VERSION_PATTERN,
    ArtifactError,
    ArtifactStore,
    LoadedModel,
    content_version,
    resolve_version,
    schema_entries,
    stamp_manifest,
)
from models.features import CLUSTERER_FEATURES, DETECTOR_FEATURES
from training.export import kmeans_distance_onnx, run_onnx

D = len(CLUSTERER_FEATURES)
CENTROIDS = np.array([[0.1, 0.2, 0.3, 0.4, 0.5], [0.5, 0.4, 0.3, 0.2, 0.1]], dtype=np.float32)


def _fields(post: dict | None = None, fingerprint: str = "sha256:abc") -> dict:
    return {
        "feature_schema": CLUSTERER_FEATURES,
        "inputs": [{"name": "X"}, {"name": "C"}],
        "outputs": [{"name": "distances"}],
        "training_data": {"fingerprint": fingerprint, "sources": [{"generator": "test"}]},
        "postprocessing": post if post is not None else {"centroids": CENTROIDS},
        "evaluation": {"note": 1.0},
    }


@pytest.fixture
def onnx_bytes() -> bytes:
    return kmeans_distance_onnx(D)


def test_write_then_load_gives_the_same_outputs(tmp_path: Path, onnx_bytes: bytes) -> None:
    store = ArtifactStore(tmp_path)
    version = store.write("clusterer", onnx_bytes, _fields())
    loaded = store.load("clusterer", version, CLUSTERER_FEATURES)
    X = np.array([[0.0, 0.0, 0.0, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4, 0.6]], dtype=np.float32)
    got = loaded.run({"X": X, "C": CENTROIDS})[0]
    want = run_onnx(onnx_bytes, {"X": X, "C": CENTROIDS})[0]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got[1], np.linalg.norm(X[1] - CENTROIDS, axis=1), atol=1e-6)
    assert loaded.postprocessing["centroids"] == CENTROIDS.tolist()
    assert loaded.feature_schema == CLUSTERER_FEATURES


def test_a_copy_keeps_the_commit_it_was_trained_at(tmp_path: Path, onnx_bytes: bytes) -> None:
    trained = ArtifactStore(tmp_path / "a").write("clusterer", onnx_bytes, {**_fields(), "git_commit": "1" * 40})
    m, data = ArtifactStore(tmp_path / "a").verify("clusterer", trained)
    assert m["git_commit"] == "1" * 40
    copied = ArtifactStore(tmp_path / "b").write("clusterer", data, {**_fields(), "git_commit": m["git_commit"]})
    assert copied == trained  # the same content, the same version, whatever commit the copier runs at
    restamped = ArtifactStore(tmp_path / "c").write("clusterer", data, {**_fields(), "git_commit": "2" * 40})
    assert restamped != trained


def test_manifest_has_every_documented_key(tmp_path: Path, onnx_bytes: bytes) -> None:
    store = ArtifactStore(tmp_path)
    version = store.write("clusterer", onnx_bytes, _fields())
    m = json.loads((tmp_path / "clusterer" / version / "manifest.json").read_text())
    for key in ("name", "version", "sha256", "feature_schema", "inputs", "outputs", "opset", "library_versions",
                "training_data", "evaluation", "postprocessing", "parent_version", "created_at", "git_commit"):
        assert key in m, key
    assert m["feature_schema"] == [{"name": n, "dtype": "float32"} for n in CLUSTERER_FEATURES]
    assert set(m["library_versions"]) >= {"sklearn", "skl2onnx", "onnx", "onnxruntime", "numpy", "river", "python"}
    assert m["opset"] == {"": 17}
    assert dt.datetime.fromisoformat(m["created_at"]).utcoffset() == dt.timedelta(0)
    assert m["git_commit"] is None or len(m["git_commit"]) == 40


def test_version_is_content_addressed_and_rewrites_are_no_ops(tmp_path: Path, onnx_bytes: bytes) -> None:
    store = ArtifactStore(tmp_path)
    v1 = store.write("clusterer", onnx_bytes, _fields())
    assert v1 == content_version(store.manifest("clusterer", v1)) == stamp_manifest("clusterer", onnx_bytes,
                                                                                    _fields())["version"]
    assert VERSION_PATTERN.fullmatch(v1)
    assert store.write("clusterer", onnx_bytes, _fields()) == v1
    assert store.versions("clusterer") == [v1]
    # any change to post-processing or training data is a new version whose parent is the old one
    v2 = store.write("clusterer", onnx_bytes, _fields(post={"centroids": CENTROIDS * 2}))
    v3 = store.write("clusterer", onnx_bytes, _fields(fingerprint="sha256:def"))
    v4 = store.write("clusterer", onnx_bytes, {**_fields(), "evaluation": {"note": 2.0}})
    assert len({v1, v2, v3, v4}) == 4
    store.write("clusterer", onnx_bytes, _fields())  # the same content again, now after v4: still v1, still a no-op
    assert store.versions("clusterer") == [v1, v2, v3, v4]
    assert store.latest("clusterer") == v4
    assert store.manifest("clusterer", v1)["parent_version"] is None
    assert store.manifest("clusterer", v2)["parent_version"] == v1
    assert store.manifest("clusterer", v3)["parent_version"] == v2
    index = json.loads((tmp_path / "clusterer" / "index.json").read_text())
    assert [e["version"] for e in index["versions"]] == [v1, v2, v3, v4]
    assert not [p for p in (tmp_path / "clusterer").iterdir() if p.name.startswith(".tmp")]


def test_store_without_index_lists_versions_by_creation_time(tmp_path: Path, onnx_bytes: bytes) -> None:
    store = ArtifactStore(tmp_path)
    v1 = store.write("clusterer", onnx_bytes, _fields())
    v2 = store.write("clusterer", onnx_bytes, _fields(fingerprint="sha256:2"))
    (tmp_path / "clusterer" / "index.json").unlink()
    assert store.versions("clusterer") == [v1, v2]
    assert store.versions("detector") == [] and store.latest("detector") is None


def test_flipped_byte_is_refused_with_a_sha256_message(tmp_path: Path, onnx_bytes: bytes) -> None:
    store = ArtifactStore(tmp_path)
    version = store.write("clusterer", onnx_bytes, _fields())
    path = tmp_path / "clusterer" / version / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=rf"sha256 mismatch for clusterer {version}: manifest says [0-9a-f]{{64}}, "
                                            r"file hashes to [0-9a-f]{64}"):
        store.load("clusterer", version, CLUSTERER_FEATURES)


@pytest.mark.parametrize("edit", [
    lambda m: m["postprocessing"].update(threshold=0.5),  # a threshold added or changed after publishing
    lambda m: m["postprocessing"]["centroids"][0].__setitem__(0, 0.9),
    lambda m: m["evaluation"].update(note=99.0),
    lambda m: m["feature_schema"].reverse(),
    lambda m: m.update(git_commit="0" * 40),
])
def test_manifest_edited_after_publishing_is_refused_like_a_tampered_model(tmp_path: Path, onnx_bytes: bytes,
                                                                            edit) -> None:
    store = ArtifactStore(tmp_path)
    version = store.write("clusterer", onnx_bytes, _fields())
    path = tmp_path / "clusterer" / version / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=rf"content address mismatch for clusterer {version}: the manifest "
                                            rf"hashes to v-[0-9a-f]{{12}}; it was changed after {version} was"):
        store.load("clusterer", version, CLUSTERER_FEATURES)


def test_bookkeeping_outside_the_address_may_change(tmp_path: Path, onnx_bytes: bytes) -> None:
    store = ArtifactStore(tmp_path)
    version = store.write("clusterer", onnx_bytes, _fields())
    path = tmp_path / "clusterer" / version / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(created_at="2020-01-01T00:00:00+00:00", parent_version="v-000000000000")
    path.write_text(json.dumps(manifest, indent=4))  # another layout of the same JSON, too
    assert store.load("clusterer", version, CLUSTERER_FEATURES).version == version


BAD_VERSIONS = ["../x", "../../clusterer/v-000000000000", "v-0123456789ab/..", "v-0123456789ab/../../x", "/etc",
                "", ".", "..", "v-0123456789AB", "v-0123456789a", "v-0123456789abc", "v-0123456789ab\n",
                "v-0123456789ab\x00", "v-\u0660123456789a", 7, ["v-0123456789ab"]]


@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_bad_versions_are_refused_before_any_path_is_built(tmp_path: Path, onnx_bytes: bytes, version,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    store = ArtifactStore(tmp_path / "store")
    store.write("clusterer", onnx_bytes, _fields())
    (tmp_path / "x").mkdir()  # what "../x" would reach from the clusterer folder
    touched = []
    for attr in ("read_text", "read_bytes", "exists", "is_dir", "iterdir", "open", "stat"):
        monkeypatch.setattr(Path, attr, lambda *a, _attr=attr, **k: touched.append(_attr))
    for call in (lambda: store.load("clusterer", version, CLUSTERER_FEATURES),
                 lambda: store.verify("clusterer", version), lambda: store.manifest("clusterer", version),
                 lambda: store.path("clusterer", version)):
        with pytest.raises(ArtifactError, match=r"The 'version' parameter must be a content address"):
            call()
    assert touched == []


def test_schema_mismatch_is_refused(tmp_path: Path, onnx_bytes: bytes) -> None:
    store = ArtifactStore(tmp_path)
    version = store.write("clusterer", onnx_bytes, _fields())
    with pytest.raises(ArtifactError, match=r"feature schema mismatch for clusterer .*position 0: manifest "
                                            r"'entity_cpu_util', code 'z_robust'"):
        store.load("clusterer", version, DETECTOR_FEATURES)
    reordered = (CLUSTERER_FEATURES[1], CLUSTERER_FEATURES[0], *CLUSTERER_FEATURES[2:])
    with pytest.raises(ArtifactError, match="first difference at position 0"):
        store.load("clusterer", version, reordered)
    with pytest.raises(ArtifactError, match="manifest has 5 features, code expects 4"):
        store.load("clusterer", version, CLUSTERER_FEATURES[:4])


def test_graph_whose_input_width_disagrees_with_the_schema_is_refused(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    fields = {**_fields(), "feature_schema": CLUSTERER_FEATURES[:4]}
    version = store.write("clusterer", kmeans_distance_onnx(D), fields)
    with pytest.raises(ArtifactError, match=r"has shape \[None, 5\]; the feature schema has 4 features"):
        store.load("clusterer", version, CLUSTERER_FEATURES[:4])


def test_unloadable_graph_and_missing_artifacts_raise_artifact_errors(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    version = store.write("clusterer", b"not an onnx graph", {**_fields(), "opset": {"": 17}})
    with pytest.raises(ArtifactError, match=f"onnxruntime cannot load clusterer {version}"):
        store.load("clusterer", version, CLUSTERER_FEATURES)
    with pytest.raises(ArtifactError, match="no artifact clusterer v-000000000000"):
        store.load("clusterer", "v-000000000000", CLUSTERER_FEATURES)
    with pytest.raises(ArtifactError, match="no versions of detector"):
        store.load("detector", None, DETECTOR_FEATURES)


def test_manifest_fields_are_validated(tmp_path: Path, onnx_bytes: bytes) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(ArtifactError, match=r"got unknown keys \['weights'\]"):
        store.write("clusterer", onnx_bytes, {**_fields(), "weights": [1.0]})
    with pytest.raises(ArtifactError, match=r"lacks \['postprocessing'\]"):
        store.write("clusterer", onnx_bytes, {k: v for k, v in _fields().items() if k != "postprocessing"})
    with pytest.raises(ArtifactError, match="must be finite"):
        store.write("clusterer", onnx_bytes, _fields(post={"t": float("nan")}))
    with pytest.raises(ArtifactError, match="plain folder name"):
        store.write("../x", onnx_bytes, _fields())
    assert store.versions("clusterer") == []


def test_from_bytes_runs_the_same_checks_without_a_store(onnx_bytes: bytes) -> None:
    manifest = {"name": "clusterer", "version": "unpublished", "feature_schema": schema_entries(CLUSTERER_FEATURES)}
    m = LoadedModel.from_bytes(onnx_bytes, manifest, CLUSTERER_FEATURES)
    assert m.input_names == ("X", "C") and m.output_names == ("distances",)
    with pytest.raises(ArtifactError, match="feature schema mismatch"):
        LoadedModel.from_bytes(onnx_bytes, manifest, DETECTOR_FEATURES)


class _Redis:
    def __init__(self, value: object = None, fail: bool = False) -> None:
        self.value, self.fail, self.keys = value, fail, []

    def get(self, key: str) -> object:
        self.keys.append(key)
        if self.fail:
            raise ConnectionError("redis is down")
        return self.value


def test_resolve_version_prefers_the_registry_pointer_and_falls_back(tmp_path: Path, onnx_bytes: bytes) -> None:
    store = ArtifactStore(tmp_path)
    v1 = store.write("clusterer", onnx_bytes, _fields())
    v2 = store.write("clusterer", onnx_bytes, _fields(fingerprint="sha256:2"))
    r = _Redis(v1.encode())
    assert resolve_version("clusterer", store, r) == v1
    assert r.keys == ["vigil:registry:clusterer:production"]
    assert resolve_version("clusterer", store, _Redis(v1)) == v1
    assert resolve_version("clusterer", store, _Redis(fail=True)) == v2  # Redis down: latest
    assert resolve_version("clusterer", store, _Redis(None)) == v2  # no pointer
    assert resolve_version("clusterer", store, _Redis(b"v-unknown00000")) == v2  # pointer to nothing here
    assert resolve_version("clusterer", store) == v2
    assert resolve_version("detector", store) is None
