"""ONNX exporters against scikit-learn: parity within stated tolerances, and determinism."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from sklearn.cluster import KMeans
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor, IsolationForest

from models.features import CLUSTERER_FEATURES, DETECTOR_FEATURES, FORECASTER_FEATURES
from training.data import ScenarioSpec, extract
from training.export import (
    ParityError,
    assert_parity,
    head_slices,
    hist_gradient_boosting_heads_to_onnx,
    hist_gradient_boosting_regressor_to_onnx,
    isolation_forest_to_onnx,
    kmeans_distance_onnx,
    run_onnx,
)


@pytest.fixture(scope="module")
def ext():
    return extract(ScenarioSpec(seed=4242, hours=4.0, instances=4, n_incidents=6))


@pytest.fixture(scope="module")
def fc_ext():
    return extract(ScenarioSpec(seed=4243, hours=28.0, instances=1, n_incidents=6), detector=False, entities=False,
                   forecast_every=5)


@pytest.fixture(scope="module")
def forest(ext) -> IsolationForest:
    X = ext.detector.X[ext.detector.clean]
    return IsolationForest(n_estimators=50, max_samples=128, random_state=3).fit(X)


def _threshold_rows(est_nodes, n_features: int, rng: np.random.Generator, n: int = 400) -> np.ndarray:
    """Rows whose features sit exactly on (float32-rounded) split thresholds: the hardest case."""
    feats, thr = est_nodes
    X = rng.normal(size=(n, n_features)).astype(np.float32)
    pick = rng.integers(len(thr), size=(n, n_features))
    for j in range(n_features):
        cand = thr[feats == j]
        if cand.size:
            X[:, j] = np.float32(cand[pick[:, j] % cand.size])
            X[:, j] = np.where(rng.random(n) < 0.5, X[:, j], np.nextafter(X[:, j], np.float32(np.inf)))
    return X


def test_isolation_forest_is_one_tree_ensemble_node_matching_score_samples(ext, forest) -> None:
    data = isolation_forest_to_onnx(forest, len(DETECTOR_FEATURES))
    graph = onnx.load_from_string(data).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("TreeEnsembleRegressor") == 1 and len(ops) <= 5, ops
    rng = np.random.default_rng(0)
    feats = np.concatenate([e.tree_.feature[e.tree_.feature >= 0] for e in forest.estimators_])
    thr = np.concatenate([e.tree_.threshold[e.tree_.feature >= 0] for e in forest.estimators_])
    X = np.concatenate([
        ext.detector.X[:3000],  # normal and incident rows
        (rng.normal(size=(300, 6)) * 8).astype(np.float32),  # far outside the training range
        _threshold_rows((feats, thr), 6, rng),
    ])
    got = run_onnx(data, {"X": X})[0]
    err = assert_parity("iforest", got, forest.score_samples(X), atol=1e-5)
    assert err < 1e-6


def test_exports_are_byte_identical_for_the_same_fit(ext, forest) -> None:
    X = ext.detector.X[ext.detector.clean]
    again = IsolationForest(n_estimators=50, max_samples=128, random_state=3).fit(X)
    assert isolation_forest_to_onnx(forest, 6) == isolation_forest_to_onnx(again, 6)
    assert kmeans_distance_onnx(5) == kmeans_distance_onnx(5)


def test_hgb_regressor_matches_predict(fc_ext) -> None:
    fc = fc_ext.forecast
    reg = HistGradientBoostingRegressor(max_iter=30, max_leaf_nodes=15, loss="absolute_error", random_state=0)
    reg.fit(fc.X, fc.y)
    data = hist_gradient_boosting_regressor_to_onnx(reg, len(FORECASTER_FEATURES))
    assert [n.op_type for n in onnx.load_from_string(data).graph.node] == ["TreeEnsembleRegressor"]
    thr = np.concatenate([p.nodes["num_threshold"][~p.nodes["is_leaf"].astype(bool)]
                          for it in reg._predictors for p in it])
    feats = np.concatenate([p.nodes["feature_idx"][~p.nodes["is_leaf"].astype(bool)]
                            for it in reg._predictors for p in it])
    X = np.concatenate([fc.X[:3000], _threshold_rows((feats, thr), len(FORECASTER_FEATURES), np.random.default_rng(1))])
    got = run_onnx(data, {"X": X})[0].ravel()
    assert_parity("hgb regressor", got, reg.predict(X), atol=1e-4, rtol=1e-5)


def test_hgb_regressor_export_agrees_with_skl2onnx(fc_ext) -> None:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    fc = fc_ext.forecast
    reg = HistGradientBoostingRegressor(max_iter=20, random_state=0).fit(fc.X, fc.y)
    nf = len(FORECASTER_FEATURES)
    stock = convert_sklearn(reg, initial_types=[("X", FloatTensorType([None, nf]))],
                            target_opset={"": 17, "ai.onnx.ml": 3}).SerializeToString()
    ours = hist_gradient_boosting_regressor_to_onnx(reg, nf)
    X = fc.X[:2000]
    assert_parity("ours vs skl2onnx", run_onnx(ours, {"X": X})[0].ravel(), run_onnx(stock, {"X": X})[0].ravel(),
                  atol=1e-4, rtol=1e-5)


def test_hgb_heads_are_one_output_matching_predict_proba_binary_and_multiclass(ext) -> None:
    X = ext.detector.X[:4000]
    y_multi = np.asarray(["a", "b", "c"])[np.digitize(X[:, 0], [-0.5, 0.5])]
    y_bin = np.asarray(["0", "1"])[(X[:, 1] + X[:, 3] > 0.3).astype(int)]
    heads = [("multi", HistGradientBoostingClassifier(max_iter=15, random_state=0).fit(X, y_multi)),
             ("bin", HistGradientBoostingClassifier(max_iter=15, random_state=0).fit(X, y_bin))]
    data = hist_gradient_boosting_heads_to_onnx(heads, 6)
    graph = onnx.load_from_string(data).graph
    assert [o.name for o in graph.output] == ["probabilities"]
    assert [n.op_type for n in graph.node] == ["TreeEnsembleRegressor"] * 2 + ["Concat"]
    slices = head_slices(heads)
    assert slices == {"multi": [0, 3], "bin": [3, 5]}
    Xt = np.concatenate([ext.detector.X[4000:6000], (np.random.default_rng(2).normal(size=(200, 6)) * 5)
                         .astype(np.float32)])
    outs = run_onnx(data, {"X": Xt})
    assert len(outs) == 1 and outs[0].shape == (len(Xt), 5)
    for name, clf in heads:
        a, b = slices[name]
        assert_parity(name, outs[0][:, a:b], clf.predict_proba(Xt), atol=1e-5)


def test_kmeans_graph_matches_transform_and_takes_any_centroids(ext) -> None:
    X = ext.entities.X
    km = KMeans(n_clusters=4, n_init=2, random_state=0).fit(X)
    data = kmeans_distance_onnx(len(CLUSTERER_FEATURES))
    C = km.cluster_centers_.astype(np.float32)
    assert_parity("kmeans", run_onnx(data, {"X": X, "C": C})[0], km.transform(X), atol=1e-5)
    other = C[::-1] + np.float32(0.05)
    want = np.linalg.norm(X[:, None, :].astype(np.float64) - other[None, :, :], axis=2)
    assert_parity("kmeans (adapted centroids)", run_onnx(data, {"X": X, "C": other})[0], want, atol=1e-5)


def test_assert_parity_reports_the_worst_value() -> None:
    assert assert_parity("x", np.array([1.0, 2.0]), np.array([1.0, 2.0 + 5e-6]), atol=1e-5) == pytest.approx(5e-6)
    with pytest.raises(ParityError, match=r"x: 1 of 2 values differ beyond atol=1e-05.*onnx 2.0 vs reference 2.1"):
        assert_parity("x", np.array([1.0, 2.0]), np.array([1.0, 2.1]), atol=1e-5)
    with pytest.raises(ParityError, match="shape"):
        assert_parity("x", np.zeros(3), np.zeros((3, 1)), atol=1.0)
