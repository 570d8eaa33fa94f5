"""End-to-end training: published manifests, determinism, report, and nothing written on a parity failure."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import onnx
import pytest

import training.specs.forecaster as forecaster_mod
import training.train as train_mod
from models.artifact import ArtifactStore
from models.catalog import MODEL_NAMES
from models.features import CLASSIFIER_FEATURES, CLUSTERER_FEATURES, DETECTOR_FEATURES, FORECASTER_FEATURES
from training.base import TrainConfig, Workers
from training.data import ScenarioSpec
from training.export import ParityError
from training.specs import TRAINERS
from training.specs.classifier import UPSTREAM, _candidates_job
from training.train import publish, run_training

SCHEMAS = {"detector": DETECTOR_FEATURES, "forecaster": FORECASTER_FEATURES, "clusterer": CLUSTERER_FEATURES,
           "classifier": CLASSIFIER_FEATURES}


def _manifests(root: Path) -> dict[str, dict]:
    store = ArtifactStore(root)
    return {n: store.manifest(n, store.latest(n)) for n in MODEL_NAMES}  # type: ignore[arg-type]


def test_every_model_has_one_trainer_in_the_catalog_order() -> None:
    # fit_all runs them in this order: the classifier, last, needs the three before it
    assert tuple(TRAINERS) == MODEL_NAMES
    for name, fit in TRAINERS.items():
        assert fit.__module__ == f"training.specs.{name}"
        assert list(inspect.signature(fit).parameters) == ["cfg", "data", "ctx"]
    assert set(UPSTREAM) == set(MODEL_NAMES[:-1])


def test_every_model_is_published_with_held_out_figures(trained_store: Path) -> None:
    m = _manifests(trained_store)
    for name, man in m.items():
        assert [e["name"] for e in man["feature_schema"]] == list(SCHEMAS[name])
        assert man["training_data"]["fingerprint"].startswith("sha256:")
        # within the tolerance the export checks (1e-4 + 1e-5 * |y|): the forecaster's targets span
        # tens of scale units, where float32 sums of its 60 trees differ from float64 by ~1e-4
        assert man["evaluation"]["parity_max_abs_error"] <= (1e-3 if name == "forecaster" else 1e-4)
        ArtifactStore(trained_store).load(name, man["version"], SCHEMAS[name])  # verifies hash, schema, smoke run
    det = m["detector"]["evaluation"]
    assert det["roc_auc"] > 0.85 and det["alert_precision"] > 0.6 and det["incident_recall"] > 0.6
    assert det["average_precision"] > det["incident_points"] / det["points"] * 5  # far above chance
    fc = m["forecaster"]["evaluation"]
    # the intervals are calibrated on the scenarios' and the corpus' held-out rows pooled: each source
    # alone is covered near 80%, the pooled calibration rows exactly so
    for h in ("5", "30", "60", "360"):
        assert fc["per_horizon"][h]["mae"] < fc["per_horizon"][h]["naive_mae"]
        assert 0.65 < fc["per_horizon"][h]["coverage_80"] < 0.9
        assert 0.85 < fc["per_horizon"][h]["coverage_95"] <= 1.0
    assert fc["corpus_test"]["mae"] < fc["corpus_test"]["naive_mae"]
    assert 0.7 < fc["corpus_test"]["coverage_80"] < 0.9
    cl = m["clusterer"]["evaluation"]
    assert cl["peer_drift_auc"] > 0.9 and cl["k"] == 5
    clf = m["classifier"]["evaluation"]
    for head in ("priority", "team", "fp"):
        assert clf[head]["accuracy"] > clf[head]["majority_accuracy"]
        assert clf[head]["macro_f1"] > clf[head]["majority_macro_f1"]
    assert clf["category"]["macro_f1"] > clf["category"]["majority_macro_f1"]
    assert clf["fp"]["auc"] > 0.85
    # trained and evaluated on the job's own candidates: every trigger, counted, with figures per trigger
    per = clf["candidates_per_trigger"]
    for split in ("train", "test"):
        assert all(per[split][t]["candidates"] > 0 for t in ("detector", "forecast", "cluster")), per
    assert sum(v["candidates"] for v in per["train"].values()) == clf["train_candidates"]
    assert m["classifier"]["training_data"]["per_trigger"] == per["train"]
    det = clf["per_trigger"]["detector"]
    assert det["fp"]["auc"] > 0.9 and det["category"]["accuracy"] > 0.75
    assert clf["per_trigger"]["forecast"]["fp"]["accuracy"] > 0.9  # true forecast alerts are not called false
    assert [o["name"] for o in m["classifier"]["outputs"]] == ["probabilities"]
    assert set(m["classifier"]["postprocessing"]["slices"]) == {"priority", "category", "team", "fp"}
    # the classifier records the exact upstream versions it learned from
    assert m["classifier"]["training_data"]["upstream"] == {n: m[n]["version"] for n in MODEL_NAMES[:3]}
    # detector post-processing carries everything the runtime needs
    post = m["detector"]["postprocessing"]
    assert set(post) >= {"calibration", "ensemble", "threshold", "severity_bands", "explain"}
    assert 0 < post["threshold"]["base"] <= 1 and post["threshold"]["k"] >= 0


def test_detector_graph_is_one_tree_ensemble(trained_store: Path) -> None:
    store = ArtifactStore(trained_store)
    v = store.latest("detector")
    graph = onnx.load(str(trained_store / "detector" / v / "model.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert ops[0] == "TreeEnsembleRegressor" and ops.count("TreeEnsembleRegressor") == 1 and len(ops) <= 5


def test_same_seed_gives_the_same_versions_and_bytes_and_a_report(trained_store: Path, tmp_path: Path) -> None:
    run = run_training(tmp_path / "store", seed=1, quick=True, runs_dir=tmp_path / "runs", progress=False)
    first = _manifests(trained_store)
    assert run.versions == {n: first[n]["version"] for n in MODEL_NAMES}
    for n, v in run.versions.items():
        assert (tmp_path / "store" / n / v / "model.onnx").read_bytes() == \
            (trained_store / n / v / "model.onnx").read_bytes()
    # publishing the same models again changes nothing
    assert publish(ArtifactStore(tmp_path / "store"), run.trained) == run.versions
    assert all(ArtifactStore(tmp_path / "store").versions(n) == [v] for n, v in run.versions.items())
    report = run.report_path
    assert report is not None and report.parent.name.startswith("train-") and report.parent.parent == tmp_path / "runs"
    text = report.read_text()
    for n, v in run.versions.items():
        assert f"{n}: {v}" in text
        assert (report.parent / f"{n}.png").stat().st_size > 10_000
    assert "alert_f1" in text and "coverage_80" in text and "peer_drift_auc" in text


def test_results_do_not_depend_on_the_number_of_workers(trained_store: Path) -> None:
    store = ArtifactStore(trained_store)
    blobs = {n: ((trained_store / n / store.latest(n) / "model.onnx").read_bytes(),  # type: ignore[operator]
                 store.manifest(n, store.latest(n))["postprocessing"]) for n in UPSTREAM}  # type: ignore[arg-type]
    jobs = [(ScenarioSpec(seed, 1.5, 2, 4), blobs) for seed in (61, 62, 63)]
    with Workers(1) as one, Workers(2) as two:
        here = one.map(_candidates_job, jobs, "candidates", False)
        spawned = two.map(_candidates_job, jobs, "candidates", False, cost=lambda j: -j[0].seed)
    assert here == spawned and all(here)


def _tiny_specs(self: TrainConfig) -> dict[str, list[ScenarioSpec]]:
    small = ScenarioSpec(self.seed + 1, 1.0, 2, 3)
    fc = ScenarioSpec(self.seed + 2, 26.0, 1, 3)
    return {"det_train": [small], "det_val": [small], "cls_train": [small], "eval": [small],
            "fc_train": [fc], "fc_cal": [fc], "fc_eval": [fc]}


def test_a_parity_failure_writes_no_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = forecaster_mod.hist_gradient_boosting_regressor_to_onnx

    def off_by_a_bit(reg, n_features):  # type: ignore[no-untyped-def]
        m = onnx.load_from_string(real(reg, n_features))
        attr = next(a for a in m.graph.node[0].attribute if a.name == "base_values")
        attr.floats[0] += 1e-3
        return m.SerializeToString()

    monkeypatch.setattr(TrainConfig, "specs", _tiny_specs)
    monkeypatch.setattr(forecaster_mod, "hist_gradient_boosting_regressor_to_onnx", off_by_a_bit)
    with pytest.raises(ParityError, match=r"forecaster: .* values differ beyond atol=0\.0001"):
        train_mod.train_all(tmp_path / "store", seed=3, quick=True, runs_dir=None, progress=False)
    assert not (tmp_path / "store").exists() or all(
        ArtifactStore(tmp_path / "store").latest(n) is None for n in MODEL_NAMES)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match=r"The 'seed' parameter of TrainConfig must be an integer in \[0, 2\*\*20\). "
                                         r"Got -1."):
        TrainConfig(seed=-1)
    with pytest.raises(ValueError, match=r"The 'quick' parameter of TrainConfig must be a bool\. Got 'yes'\."):
        TrainConfig(quick="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"The 'workers' parameter of TrainConfig must be a positive integer or None\. "
                                         r"Got 0\."):
        TrainConfig(workers=0)
    assert TrainConfig(workers=3).n_workers == 3 and TrainConfig().n_workers >= 1
    full, quick = TrainConfig().specs(), TrainConfig(quick=True).specs()
    eval_seeds = {s.seed for s in full["eval"] + full["fc_eval"]}
    train_seeds = {s.seed for role in ("det_train", "det_val", "cls_train", "fc_train", "fc_cal") for s in full[role]}
    assert not eval_seeds & train_seeds
    assert sum(s.hours * s.instances for r in quick.values() for s in r) < \
        sum(s.hours * s.instances for r in full.values() for s in r)
    assert json.dumps(full["eval"][0].source())
