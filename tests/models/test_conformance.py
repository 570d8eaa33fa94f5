"""The same checks on every runtime model of :mod:`models.catalog`, in the manner of river's
``check_estimator``: a model added to the catalog is checked without a line of test written for it.

On one trained version of each model (the session's ``trained_store``):

- its artifact refuses a feature schema other than the catalog's, and its runtime refuses an
  artifact of another model;
- a batch gives the same outputs as the same rows one at a time;
- the version written to a new store comes back as the same version with the same outputs;
- the manifest records the ONNX-versus-scikit-learn parity of training, inside its tolerance;
- a hot swap of the bundle to another version serves the new one and returns the old, a refused
  version leaves the bundle untouched, and a bundle loaded afresh from the store (a restore)
  serves what the store's latest says.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from models.artifact import _CALLER_KEYS, ArtifactError, ArtifactStore
from models.catalog import BY_NAME, MODEL_NAMES, MODELS, ModelSpec
from models.pipeline import ModelBundle
from models.runtime import ModelRuntime

IDS = [m.name for m in MODELS]


def _rows(spec: ModelSpec, n: int = 64) -> np.ndarray:
    """Feature rows in the range the features take (signed logs and one-hots: within a few units)."""
    rng = np.random.default_rng(7)
    return rng.normal(0.0, 1.5, size=(n, len(spec.features))).astype(np.float32)


def _copy_latest(source: ArtifactStore, target: ArtifactStore, name: str) -> str:
    manifest, data = source.verify(name, source.latest(name))
    return target.write(name, data, {k: v for k, v in manifest.items() if k in _CALLER_KEYS})


@pytest.fixture(scope="module")
def store(trained_store: Path) -> ArtifactStore:
    return ArtifactStore(trained_store)


def test_the_catalog_lists_each_model_once_with_its_schema():
    assert len(set(MODEL_NAMES)) == len(MODELS) == 4
    for m in MODELS:
        assert m.features and len(set(m.features)) == len(m.features), m.name
        assert m.runtime.name == m.name  # the runtime class serves the model it is listed for
        assert issubclass(m.runtime, ModelRuntime) and m.runtime.features == m.features  # loading written once


@pytest.mark.parametrize("spec", MODELS, ids=IDS)
def test_refuses_another_feature_schema_and_another_models_artifact(spec: ModelSpec, store: ArtifactStore):
    with pytest.raises(ArtifactError, match="feature schema mismatch"):
        store.load(spec.name, None, spec.features[::-1])
    with pytest.raises(ArtifactError, match="feature schema mismatch"):
        store.load(spec.name, None, spec.features[:-1])
    other = next(m for m in MODELS if m.features != spec.features)
    loaded = store.load(other.name, None, other.features)
    with pytest.raises(ValueError):
        spec.runtime(loaded)


@pytest.mark.parametrize("spec", MODELS, ids=IDS)
def test_a_batch_equals_its_rows_one_by_one(spec: ModelSpec, store: ArtifactStore):
    model = spec.load(store)
    x = _rows(spec)
    batch = np.asarray(spec.batch(model, x))
    assert batch.shape[0] == len(x) and np.isfinite(batch).all()
    one_by_one = np.concatenate([np.asarray(spec.batch(model, x[i:i + 1])).reshape(1, -1) for i in range(len(x))])
    np.testing.assert_allclose(batch.reshape(len(x), -1), one_by_one, rtol=1e-5, atol=1e-6)
    assert np.ptp(batch, axis=0).max() > 0  # different rows, different outputs: the rows reached the model
    with pytest.raises(ValueError):
        spec.batch(model, np.zeros((3, len(spec.features) + 1), dtype=np.float32))


@pytest.mark.parametrize("spec", MODELS, ids=IDS)
def test_a_version_written_to_a_new_store_loads_as_the_same_version(spec: ModelSpec, store: ArtifactStore,
                                                                     tmp_path: Path):
    version = store.latest(spec.name)
    copy = ArtifactStore(tmp_path / "copy")
    assert _copy_latest(store, copy, spec.name) == version
    x = _rows(spec)
    np.testing.assert_array_equal(np.asarray(spec.batch(spec.load(copy, version), x)),
                                  np.asarray(spec.batch(spec.load(store, version), x)))


@pytest.mark.parametrize("spec", MODELS, ids=IDS)
def test_the_manifest_records_onnx_parity_within_tolerance(spec: ModelSpec, store: ArtifactStore):
    manifest, _ = store.verify(spec.name, store.latest(spec.name))
    ev = manifest["evaluation"]
    err = ev["parity_max_abs_error"]
    assert isinstance(err, float) and math.isfinite(err) and 0.0 <= err < 1e-3, err
    assert ev["parity_tolerance"]


@pytest.mark.parametrize("spec", MODELS, ids=IDS)
def test_hot_swap_and_restore(spec: ModelSpec, store: ArtifactStore, tmp_path: Path):
    root = tmp_path / "store"
    local = ArtifactStore(root)
    for m in MODELS:  # the latest version of every model, written to a store of this test's own
        _copy_latest(store, local, m.name)
    first = local.latest(spec.name)
    # a second version of the same model: the same graph, a manifest that says so
    manifest, data = local.verify(spec.name, first)
    fields = {k: v for k, v in manifest.items() if k in _CALLER_KEYS}
    fields["description"] = f"{fields.get('description', '')} (conformance copy)"
    second = local.write(spec.name, data, fields)
    assert second != first
    bundle = ModelBundle(**{m: BY_NAME[m].load(local, first if m == spec.name else None) for m in MODEL_NAMES})
    before = dict(bundle.versions())
    assert bundle.swap(root, spec.name, second) == first
    assert bundle.versions() == {**before, spec.name: second}
    with pytest.raises(ArtifactError):
        bundle.swap(root, spec.name, "v-000000000000")
    assert bundle.versions() == {**before, spec.name: second}  # refused: the bundle serves on unchanged
    restored = ModelBundle.load(root)  # no Redis: the latest of each, as a restore without pointers does
    assert restored.versions()[spec.name] == second
