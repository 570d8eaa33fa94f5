"""ONNX export of the four models, and the parity checks that gate publishing.

* Isolation forest: not skl2onnx's graph (one node chain per tree, ~800 us a call) but ONE
  ``ai.onnx.ml.TreeEnsembleRegressor`` whose leaves hold ``depth + c(n_leaf)`` averaged over trees
  (= E[h(x)]), then ``-2^(-E[h]/c(max_samples))`` = sklearn's ``score_samples``.
* Forecaster and classifier heads (HistGradientBoosting): written directly as
  ``TreeEnsembleRegressor`` nodes from the fitted trees, not through skl2onnx, so thresholds can
  be rounded for exact branch parity and a head costs one node (probabilities via the node's
  SOFTMAX post-transform, plain tensors, no ZipMap); the four classifier heads share the input ``X``.
* Clusterer: a hand-built graph with two inputs, ``X`` (n, d) and centroids ``C`` (k, d),
  returning Euclidean distances (n, k), so centroids adapted online can be passed in.

Every exporter is deterministic: the same fitted estimator gives byte-identical ONNX.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
ML_OPSET = 3
TARGET_OPSET = {"": OPSET, "ai.onnx.ml": ML_OPSET}
PRODUCER = "vigil.training"


class ParityError(AssertionError):
    """ONNX output differs from the reference implementation beyond the stated tolerance."""


def _model(graph: onnx.GraphProto, ml: bool = False) -> bytes:
    ops = [helper.make_opsetid("", OPSET)]
    if ml:
        ops.append(helper.make_opsetid("ai.onnx.ml", ML_OPSET))
    m = helper.make_model(graph, opset_imports=ops, producer_name=PRODUCER, producer_version="1")
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m.SerializeToString()


# --------------------------------------------------------------------------------------------
# Isolation forest -> one TreeEnsembleRegressor
# --------------------------------------------------------------------------------------------


def average_path_length(n: np.ndarray | float) -> np.ndarray:
    """c(n): average path length of an unsuccessful BST search among n points (sklearn's formula)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def _f32_floor(x: float) -> float:
    """The largest float32 <= x, so that ``x32 <= t32`` iff ``x32 <= x`` for every float32 x32."""
    f = np.float32(x)
    if float(f) > x:
        f = np.nextafter(f, np.float32(-np.inf))
    return float(f)


# The attributes of an ONNX-ML TreeEnsemble, as lists the exporters below fill node by node.
_TREE_KEYS = ("nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values", "nodes_modes",
              "nodes_truenodeids", "nodes_falsenodeids", "nodes_hitrates", "nodes_missing_value_tracks_true",
              "target_treeids", "target_nodeids", "target_ids", "target_weights")


def _tree_node(attrs: dict[str, Any], tree: int, node: int, missing_left: int) -> None:
    attrs["nodes_treeids"].append(tree)
    attrs["nodes_nodeids"].append(node)
    attrs["nodes_hitrates"].append(1.0)
    attrs["nodes_missing_value_tracks_true"].append(missing_left)


def _tree_leaf(attrs: dict[str, Any], tree: int, node: int, target: int, weight: float) -> None:
    attrs["nodes_featureids"].append(0)
    attrs["nodes_values"].append(0.0)
    attrs["nodes_modes"].append("LEAF")
    attrs["nodes_truenodeids"].append(0)
    attrs["nodes_falsenodeids"].append(0)
    attrs["target_treeids"].append(tree)
    attrs["target_nodeids"].append(node)
    attrs["target_ids"].append(target)
    attrs["target_weights"].append(weight)


def _tree_branch(attrs: dict[str, Any], feature: int, threshold: float, left: int, right: int) -> None:
    """A ``x[feature] <= threshold`` split, the threshold rounded down to float32 (exact branch parity)."""
    attrs["nodes_featureids"].append(feature)
    attrs["nodes_values"].append(_f32_floor(threshold))
    attrs["nodes_modes"].append("BRANCH_LEQ")
    attrs["nodes_truenodeids"].append(left)
    attrs["nodes_falsenodeids"].append(right)


def isolation_forest_to_onnx(forest: Any, n_features: int) -> bytes:
    """sklearn ``IsolationForest`` -> ONNX computing ``forest.score_samples(X)`` as output ``score_samples`` (n,).

    Thresholds are rounded *down* to float32: the float32 input then takes exactly the branch
    sklearn takes with its float64 thresholds, so parity is limited only by the float32
    arithmetic of the final Exp (about 1e-7).
    """
    n_trees = len(forest.estimators_)
    subsample = forest._max_features != n_features  # noqa: SLF001 - the fitted model's own numbers, no public accessor
    attrs: dict[str, Any] = {k: [] for k in _TREE_KEYS}
    for t, (est, feats) in enumerate(zip(forest.estimators_, forest.estimators_features_, strict=True)):
        tree = est.tree_
        depth = tree.compute_node_depths().astype(np.float64) - 1.0  # edges from the root
        leaf_value = depth + average_path_length(tree.n_node_samples)
        for node in range(tree.node_count):
            left, right = int(tree.children_left[node]), int(tree.children_right[node])
            # sklearn sends NaN left when it saw none during fit; our features are always finite
            _tree_node(attrs, t, node, 1)
            if left == -1:
                _tree_leaf(attrs, t, node, 0, float(leaf_value[node]))
            else:
                f = int(tree.feature[node])
                _tree_branch(attrs, int(feats[f]) if subsample else f, float(tree.threshold[node]), left, right)
    c_max = float(average_path_length(np.array([forest._max_samples]))[0])  # noqa: SLF001 - the fitted model's own numbers, no public accessor
    if c_max <= 0:
        raise ValueError("IsolationForest with max_samples <= 1 has no defined score")
    # the ensemble averages E[h]; sklearn's score_samples = -2^(-E[h]/c) = -exp(E[h] * (-ln2/c))
    nodes = [
        helper.make_node("TreeEnsembleRegressor", ["X"], ["mean_path"], domain="ai.onnx.ml",
                         n_targets=1, aggregate_function="AVERAGE", post_transform="NONE", **attrs),
        helper.make_node("Mul", ["mean_path", "neg_ln2_over_c"], ["exponent"]),
        helper.make_node("Exp", ["exponent"], ["anomaly"]),
        helper.make_node("Neg", ["anomaly"], ["neg_anomaly"]),
        helper.make_node("Reshape", ["neg_anomaly", "flat"], ["score_samples"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([-math.log(2.0) / c_max], dtype=np.float32), "neg_ln2_over_c"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat"),
    ]
    graph = helper.make_graph(
        nodes, f"isolation_forest_{n_trees}",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info("score_samples", TensorProto.FLOAT, [None])], inits)
    return _model(graph, ml=True)


# --------------------------------------------------------------------------------------------
# KMeans distances with centroids as an input
# --------------------------------------------------------------------------------------------


def kmeans_distance_onnx(n_features: int) -> bytes:
    """ONNX graph ``distances[i, j] = ||X[i] - C[j]||_2`` with inputs X (n, d) and C (k, d).

    Computed as the direct difference (not the ||x||^2 - 2x.c + ||c||^2 expansion), so there is
    no cancellation error for points close to a centroid.
    """
    nodes = [
        helper.make_node("Unsqueeze", ["X", "axis1"], ["X3"]),  # (n, 1, d)
        helper.make_node("Sub", ["X3", "C"], ["diff"]),  # (n, k, d)
        helper.make_node("Mul", ["diff", "diff"], ["sq"]),
        helper.make_node("ReduceSum", ["sq", "axis2"], ["d2"], keepdims=0),  # (n, k)
        helper.make_node("Sqrt", ["d2"], ["distances"]),
    ]
    inits = [numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
             numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2")]
    graph = helper.make_graph(
        nodes, "kmeans_distances",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, n_features]),
         helper.make_tensor_value_info("C", TensorProto.FLOAT, ["k", n_features])],
        [helper.make_tensor_value_info("distances", TensorProto.FLOAT, [None, "k"])], inits)
    return _model(graph)


# --------------------------------------------------------------------------------------------
# HistGradientBoosting -> TreeEnsembleRegressor
# --------------------------------------------------------------------------------------------

def _hgb_tree_attributes(estimator: Any, first_target: int) -> dict[str, Any]:
    """TreeEnsemble attributes of a fitted HistGradientBoosting model; tree k of an iteration feeds
    target ``first_target + k``. Thresholds are rounded down to float32 (exact branch parity)."""
    if getattr(estimator, "is_categorical_", None) is not None and np.any(estimator.is_categorical_):
        raise ValueError("categorical features are not supported by this exporter")
    attrs: dict[str, Any] = {k: [] for k in _TREE_KEYS}
    tree_id = 0
    for per_iteration in estimator._predictors:  # noqa: SLF001 - the fitted model's own numbers, no public accessor
        for k, predictor in enumerate(per_iteration):
            nodes = predictor.nodes
            for i in range(len(nodes)):
                nd = nodes[i]
                _tree_node(attrs, tree_id, i, int(nd["missing_go_to_left"]))
                if nd["is_leaf"]:
                    _tree_leaf(attrs, tree_id, i, first_target + k, float(nd["value"]))
                else:
                    _tree_branch(attrs, int(nd["feature_idx"]), float(nd["num_threshold"]), int(nd["left"]),
                                 int(nd["right"]))
            tree_id += 1
    return attrs


def hist_gradient_boosting_regressor_to_onnx(regressor: Any, n_features: int) -> bytes:
    """A fitted ``HistGradientBoostingRegressor`` as one ``TreeEnsembleRegressor``: output ``y`` (n, 1)
    equals ``regressor.predict(X)`` (identity link: squared, absolute or quantile loss)."""
    base = [float(v) for v in np.ravel(regressor._baseline_prediction)]  # noqa: SLF001 - the fitted model's own numbers, no public accessor
    node = helper.make_node("TreeEnsembleRegressor", ["X"], ["y"], name="trees", domain="ai.onnx.ml",
                            n_targets=1, aggregate_function="SUM", post_transform="NONE", base_values=base,
                            **_hgb_tree_attributes(regressor, 0))
    graph = helper.make_graph([node], "hgb_regressor",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, n_features])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])])
    return _model(graph, ml=True)


def hist_gradient_boosting_heads_to_onnx(heads: Sequence[tuple[str, Any]], n_features: int,
                                         output: str = "probabilities") -> bytes:
    """Several fitted ``HistGradientBoostingClassifier`` heads sharing the input ``X``, ONE output.

    Each head is one ``TreeEnsembleRegressor`` node whose targets are the head's raw class scores
    (base values = its baseline) with ``post_transform="SOFTMAX"``, so the node's output is the
    head's probability matrix (n, n_classes) in ``classes_`` order. A binary head gets a
    constant-zero target for class 0: softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)], which is
    scikit-learn's binary probability. A ``Concat`` node joins the heads, in the order given, into
    the single output ``output`` (n, sum of n_classes); :func:`head_slices` says which columns are
    whose. One output tensor instead of one per head saves about 1 us a call (each output is a
    separate allocation and Python object); skl2onnx's graphs (label, cast, zipmap nodes per
    head) cost far more.
    """
    nodes, parts = [], []
    for name, clf in heads:
        binary = int(clf.n_trees_per_iteration_) == 1
        base = [float(v) for v in np.ravel(clf._baseline_prediction)]  # noqa: SLF001 - the fitted model's own numbers, no public accessor
        nodes.append(helper.make_node(
            "TreeEnsembleRegressor", ["X"], [f"{name}/proba"], name=f"{name}/trees", domain="ai.onnx.ml",
            n_targets=len(base) + int(binary), aggregate_function="SUM", post_transform="SOFTMAX",
            base_values=[0.0, *base] if binary else base, **_hgb_tree_attributes(clf, int(binary))))
        parts.append(f"{name}/proba")
    nodes.append(helper.make_node("Concat", parts, [output], name="heads", axis=1))
    width = sum(len(clf.classes_) for _, clf in heads)
    graph = helper.make_graph(nodes, "hgb_heads",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, n_features])],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, [None, width])])
    return _model(graph, ml=True)


def head_slices(heads: Sequence[tuple[str, Any]]) -> dict[str, list[int]]:
    """``{head: [start, stop]}``: the columns of each head in :func:`hist_gradient_boosting_heads_to_onnx`'s output."""
    out, start = {}, 0
    for name, clf in heads:
        out[name] = [start, start + len(clf.classes_)]
        start += len(clf.classes_)
    return out


# --------------------------------------------------------------------------------------------
# Parity
# --------------------------------------------------------------------------------------------


def run_onnx(onnx_bytes: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run a graph once with the same single-threaded options the job uses."""
    import onnxruntime as ort

    from models.artifact import session_options

    sess = ort.InferenceSession(onnx_bytes, session_options(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)  # type: ignore[no-any-return]


def assert_parity(name: str, got: np.ndarray, want: np.ndarray, atol: float, rtol: float = 0.0) -> float:
    """Raise :class:`ParityError` unless ``|got - want| <= atol + rtol*|want|`` everywhere; return max abs error."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise ParityError(f"{name}: ONNX output shape {got.shape} != reference {want.shape}")
    err = np.abs(got - want)
    bad = err > atol + rtol * np.abs(want)
    if bad.any():
        i = int(np.argmax(err))
        raise ParityError(f"{name}: {int(bad.sum())} of {bad.size} values differ beyond atol={atol} rtol={rtol}; "
                          f"worst at flat index {i}: onnx {float(got.ravel()[i])!r} "
                          f"vs reference {float(want.ravel()[i])!r}")
    return float(err.max()) if err.size else 0.0
