"""The classifier: one gradient-boosted head per question (priority, category, team, false positive).

:func:`fit` trains on the candidates the job's own logic raises with the just-trained detector,
forecaster and clusterer (:mod:`training.candidates`, replayed in worker processes), exports the
four heads side by side in one ONNX graph, and reports each head's figures overall and per
trigger. With alert feedback the false-positive head also learns from people's verdicts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from models.classifier import HEADS, LABELS, OUTPUT, ClassifierModel
from models.clusterer import ClustererModel
from models.detector import DetectorModel
from models.features import (
    CLASSIFIER_FEATURES,
    CLUSTERER_FEATURES,
    DETECTOR_FEATURES,
    FORECASTER_FEATURES,
    classifier_features,
)
from models.forecaster import ForecasterModel
from training import evaluate as ev
from training.base import (
    PARITY_ROWS,
    Datasets,
    FitContext,
    TrainConfig,
    Trained,
    data_sources,
    runtime,
    scenario_cost,
    using_workers,
)
from training.candidates import TRIGGERS, build_candidates, sample_weights, trigger_counts
from training.data import ScenarioSpec, fingerprint
from training.export import assert_parity, head_slices, hist_gradient_boosting_heads_to_onnx, run_onnx
from training.feedback import Feedback

# Boosting iterations per classifier head (trees = iterations x classes, 1 for the binary fp head).
# Sized for a ~10 us batch-of-one call: each tree walk costs ~20 ns, each output ~1 us.
CLASSIFIER_ITERATIONS = {"priority": 12, "category": 12, "team": 4, "fp": 30}


def _candidate_rows(cands: list[tuple[dict, dict]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    X = np.asarray([classifier_features(c) for c, _ in cands], dtype=np.float32).reshape(-1, len(CLASSIFIER_FEATURES))
    y = {h: np.asarray([str(lab[h]) for _, lab in cands], dtype=object) for h in (*HEADS, "trigger")}
    return X, y


UPSTREAM: dict[str, tuple[type, tuple[str, ...]]] = {
    "detector": (DetectorModel, DETECTOR_FEATURES), "forecaster": (ForecasterModel, FORECASTER_FEATURES),
    "clusterer": (ClustererModel, CLUSTERER_FEATURES)}


def _candidates_job(job: tuple[ScenarioSpec, dict[str, tuple[bytes, dict[str, Any]]]]) -> list[tuple[dict, dict]]:
    """Candidates of one scenario, in a worker: the upstream models rebuilt from their bytes."""
    spec, upstream = job
    m = {name: runtime(UPSTREAM[name][0], name, b, UPSTREAM[name][1], post) for name, (b, post) in upstream.items()}
    return build_candidates(spec.build(), m["detector"], m["forecaster"], m["clusterer"], instances=spec.instances)


def _head_metrics(h: str, truth: np.ndarray, pred: np.ndarray, p1: np.ndarray | None,
                  train_labels: np.ndarray) -> dict[str, Any]:
    out = ev.classification_metrics(truth, pred, train_labels)
    if p1 is not None:
        fp_true = truth.astype(int)
        out.update({"auc": ev.roc_auc(fp_true, p1), "brier": float(np.mean((p1 - fp_true) ** 2)),
                    "base_rate": float(fp_true.mean())})
    return out


def _classifier_head(cfg: TrainConfig, head: str) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=CLASSIFIER_ITERATIONS[head], learning_rate=0.3, max_leaf_nodes=15,
                                          min_samples_leaf=10, l2_regularization=1.0, early_stopping=False,
                                          random_state=cfg.seed)


def _feedback_figures(fb: Feedback, before: Any, after: Any, Xt: np.ndarray, fp_test: np.ndarray,
                      synthetic_weight: float, human_weight: float) -> dict[str, Any]:
    """How the fp head moved on the rows people judged, and what it cost on the synthetic held-out set.

    ``job`` is the probability the alert carried (the job's, after its online feedback),
    ``serving_model`` the serving classifier's own (``alert.classifier.fp``); ``without_feedback`` the
    head this run trains without the verdicts (what a run without feedback would publish);
    ``with_feedback`` the published head. On the feedback rows these figures are in-sample (the
    head trained on them): they show that it listened, not how well it generalises.
    """
    col_b, col_a = list(before.classes_).index("1"), list(after.classes_).index("1")
    p_before = before.predict_proba(fb.X)[:, col_b]
    p_after = after.predict_proba(fb.X)[:, col_a]

    def by_verdict(p: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, lab in (("false_positive", 1), ("resolved", 0)):
            m = fb.y == lab
            out[name] = float(np.nanmean(p[m])) if m.any() and np.isfinite(p[m]).any() else None
        out["agreement"] = float(((p >= 0.5) == (fb.y == 1))[np.isfinite(p)].mean()) if np.isfinite(p).any() else None
        return out

    human_total = human_weight * len(fb.y)
    return {
        "rows": len(fb.y), "false_positive": int(fb.y.sum()), "resolved": int((fb.y == 0).sum()),
        "weight_per_row": human_weight, "weight_share": human_total / (human_total + synthetic_weight),
        "fp_probability_on_feedback_rows": {"job": by_verdict(fb.job_fp), "serving_model": by_verdict(fb.model_fp),
                                            "without_feedback": by_verdict(p_before),
                                            "with_feedback": by_verdict(p_after)},
        "on_feedback_rows": "in-sample: the head trained on these rows",
        "synthetic_test_fp_auc": {"without_feedback": ev.roc_auc(fp_test, before.predict_proba(Xt)[:, col_b]),
                                  "with_feedback": ev.roc_auc(fp_test, after.predict_proba(Xt)[:, col_a])},
    }


def fit(cfg: TrainConfig, data: Datasets, ctx: FitContext | None = None) -> Trained:
    """One gradient-boosted classifier per head on the candidates the job's own logic raises.

    Candidates come from :func:`training.candidates.build_candidates` (SeriesLogic +
    EntityLogic.candidate with the just-trained detector, forecaster and clusterer, from
    ``ctx.trained``), so all three triggers are in the training data exactly as the job will
    present them. With feedback in ``ctx.inputs``, the false-positive head also learns from the
    alerts people judged (``false_positive`` = 1, ``resolved`` = 0), each weighing
    ``ctx.inputs.feedback_weight`` candidates (see :mod:`training.feedback`);
    ``evaluation.feedback`` compares the head with and without them. ``training_data.upstream``
    names the upstream models, whose versions the driver fills in once their manifests are final.
    """
    ctx = ctx or FitContext()
    missing = [n for n in UPSTREAM if n not in ctx.trained]
    if missing:
        raise ValueError(f"the classifier learns from the candidates of the trained {', '.join(UPSTREAM)}; "
                         f"ctx.trained lacks {', '.join(missing)}")
    upstream, feedback, feedback_weight = ctx.trained, ctx.inputs.feedback, ctx.inputs.feedback_weight
    t0 = time.perf_counter()
    blobs = {n: (upstream[n].onnx_bytes, upstream[n].fields["postprocessing"]) for n in UPSTREAM}
    specs = [*data.cls_train, data.test.spec]
    with using_workers(cfg, ctx.workers) as pool:
        per_spec = pool.map(_candidates_job, [(spec, blobs) for spec in specs], "building candidates", cfg.progress,
                            scenario_cost)
    train = [c for cands in per_spec[:-1] for c in cands]
    test_c = per_spec[-1]
    X, y = _candidate_rows(train)
    Xt, yt = _candidate_rows(test_c)
    weight = np.asarray(sample_weights(train))
    human = feedback is not None and len(feedback.y) > 0
    without_feedback: Any = None
    heads = []
    with threadpool_limits(1):
        for h in HEADS:
            if len(set(y[h].tolist())) < 2:
                raise ValueError(f"classifier head {h!r} has a single class {set(y[h].tolist())} in the training "
                                 f"candidates; generate more scenarios")
            clf = _classifier_head(cfg, h).fit(X, y[h], sample_weight=weight)
            if h == "fp" and human:
                assert feedback is not None
                without_feedback = clf
                clf = _classifier_head(cfg, h).fit(
                    np.concatenate([X, feedback.X]), np.concatenate([y[h], feedback.y.astype(str).astype(object)]),
                    sample_weight=np.concatenate([weight, np.full(len(feedback.y), float(feedback_weight))]))
            heads.append((h, clf))
    onnx_bytes = hist_gradient_boosting_heads_to_onnx(heads, len(CLASSIFIER_FEATURES), OUTPUT)
    slices = head_slices(heads)
    Xp = np.concatenate([feedback.X, Xt, X] if human else [Xt, X])[:PARITY_ROWS]  # type: ignore[union-attr]
    out = run_onnx(onnx_bytes, {"X": Xp})[0]
    parity = max(assert_parity(f"classifier/{h}", out[:, slices[h][0]:slices[h][1]], clf.predict_proba(Xp),
                               atol=1e-5) for h, clf in heads)
    post: dict[str, Any] = {"classes": {h: [str(c) for c in clf.classes_] for h, clf in heads},
                            "slices": slices,
                            "fp_positive_class": "1",
                            "labels": {h: list(v) for h, v in LABELS.items()}}
    model = runtime(ClassifierModel, "classifier", onnx_bytes, CLASSIFIER_FEATURES, post)

    probs = model.predict_proba_batch(Xt)
    fp_col = post["classes"]["fp"].index("1")
    counts = {"train": trigger_counts(train), "test": trigger_counts(test_c)}
    evaluation: dict[str, Any] = {"test_scenario": data.test.spec.source(), "train_candidates": len(X),
                                  "test_candidates": len(Xt), "candidates_per_trigger": counts}
    per_trigger: dict[str, Any] = {}
    for h, clf in heads:
        pred = np.asarray(clf.classes_)[probs[h].argmax(axis=1)].astype(str)
        p1 = probs["fp"][:, fp_col] if h == "fp" else None
        evaluation[h] = _head_metrics(h, yt[h].astype(str), pred, p1, y[h].astype(str))
        for trig in TRIGGERS:
            m = yt["trigger"] == trig
            if m.any():
                r = _head_metrics(h, yt[h][m].astype(str), pred[m], None if p1 is None else p1[m], y[h].astype(str))
                per_trigger.setdefault(trig, {"candidates": int(m.sum())})[h] = {
                    k: r[k] for k in ("accuracy", "macro_f1", "majority_accuracy", "auc") if k in r}
    evaluation["per_trigger"] = per_trigger
    evaluation["parity_max_abs_error"] = parity
    evaluation["parity_tolerance"] = 1e-5
    fp_sources: list[dict] = []
    fp_arrays: list[np.ndarray] = []
    if human:
        assert feedback is not None
        fp_head = dict(heads)["fp"]
        evaluation["feedback"] = _feedback_figures(feedback, without_feedback, fp_head, Xt, yt["fp"].astype(int),
                                                   float(weight.sum()), feedback_weight)
        fp_sources = [{"role": "fp head: human verdicts", "source": "alert-feedback", **feedback.lineage(),
                       "rows": len(feedback.y), "weight": float(feedback_weight), "sha256": feedback.digest()}]
        fp_arrays = [feedback.X, feedback.y]
    width = slices[heads[-1][0]][1]
    fields = {
        "description": "Four HistGradientBoostingClassifier heads, one TreeEnsembleRegressor (softmax) each, "
                       "concatenated into one output",
        "feature_schema": CLASSIFIER_FEATURES,
        "inputs": [{"name": "X", "shape": [None, len(CLASSIFIER_FEATURES)], "dtype": "float32",
                    "meaning": "classifier_features(Candidate.inputs) rows"}],
        "outputs": [{"name": OUTPUT, "shape": [None, width], "dtype": "float32",
                     "meaning": "every head's class probabilities side by side: columns "
                                "postprocessing.slices[head] hold P(head = c) for c in postprocessing.classes[head]"}],
        "training_data": {"fingerprint": fingerprint(X, *[y[h] for h in HEADS], *fp_arrays,
                                                     sources=data_sources(data.cls_train, "train") + fp_sources),
                          "sources": data_sources(data.cls_train, "candidates") + fp_sources, "rows": len(X),
                          "candidates": "training.candidates.build_candidates: the job's SeriesLogic and "
                                        "EntityLogic.candidate (default ScoringConfig), all triggers",
                          "per_trigger": counts["train"],
                          "sample_weights": "1 per detector/forecast candidate; 1/k for each of the k cluster "
                                            "candidates one entity evaluation raised",
                          "upstream": dict.fromkeys(UPSTREAM)},
        "postprocessing": post,
        "evaluation": evaluation,
    }

    def plot(path: Path) -> None:
        ev.plot_classifier(path, yt["fp"].astype(int), probs["fp"][:, fp_col])

    return Trained("classifier", onnx_bytes, fields, model, evaluation, plot, time.perf_counter() - t0,
                   {"heads": heads, "parity_X": Xp}, {"feedback": feedback.lineage()} if feedback is not None else {})

