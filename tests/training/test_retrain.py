"""Retraining end to end on tiny scenarios: feedback and drift files, NAB, and (integration) the topics themselves.

Every run here uses the same tiny scenario plan (seed 3, one worker), so a model whose data a
flag does not touch keeps the baseline run's version exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.artifact import ArtifactStore
from models.classifier import ClassifierModel
from models.clusterer import ClustererModel
from models.detector import DetectorModel
from models.features import classifier_features
from models.forecaster import ForecasterModel
from training.__main__ import main
from training.candidates import build_candidates
from training.data import ScenarioSpec
from training.feedback import read_feedback, threshold_floors
from training.nab import DEFAULT_NAB_ROOT
from training.sources import DataConfig, trained_on_nab
from training.train import MODEL_NAMES, RetrainInputs, TrainConfig, fit_detector, prepare, run_training

SEED = 3
NAB_FILES = ["ec2_cpu_utilization_fe7f93", "elb_request_count_8c0756", "rds_cpu_utilization_e47b3b"]


def _tiny_specs(self: TrainConfig) -> dict[str, list[ScenarioSpec]]:
    s = self.seed
    fc = ScenarioSpec(s + 2, 26.0, 1, 3)
    return {"det_train": [ScenarioSpec(s + 1, 1.5, 2, 4)], "det_val": [ScenarioSpec(s + 3, 1.5, 2, 4)],
            "cls_train": [ScenarioSpec(s + 5, 2.0, 3, 6)], "eval": [ScenarioSpec(s + 9, 1.5, 3, 5)],
            "fc_train": [fc], "fc_cal": [fc], "fc_eval": [fc]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):  # type: ignore[no-untyped-def]
    """Tiny scenarios for every run of this module, and the baseline run (no flags) they compare with."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TrainConfig, "specs", _tiny_specs)
        root = tmp_path_factory.mktemp("baseline")
        run = run_training(root, seed=SEED, quick=True, runs_dir=None, progress=False, workers=1)
        yield root, run


def _args(store: Path, runs: Path, *extra: str) -> list[str]:
    return ["train", "--store", str(store), "--seed", str(SEED), "--quick", "--no-progress", "--workers", "1",
            "--runs-dir", str(runs), *extra]


def _manifests(root: Path) -> dict[str, dict]:
    store = ArtifactStore(root)
    return {n: store.manifest(n, store.latest(n)) for n in MODEL_NAMES}  # type: ignore[arg-type]


def _judged_alerts(root: Path) -> tuple[list[dict], list[dict]]:
    """Alerts as the job writes them (classifier input row included) for detector candidates of true
    incidents on a fresh scenario, and verdicts calling most of them false positives: what people
    say when the fleet's "incidents" of this shape are in fact routine."""
    store = ArtifactStore(root)
    det, fc, cl = (cls.from_store(store) for cls in (DetectorModel, ForecasterModel, ClustererModel))
    cands = build_candidates(ScenarioSpec(71, 2.0, 2, 6).build(), det, fc, cl, instances=2)
    true_det = [(c, lab) for c, lab in cands if lab["trigger"] == "detector" and lab["fp"] == 0]
    assert len(true_det) >= 12, len(true_det)
    alerts, verdicts = [], []
    for i, (c, lab) in enumerate(true_det[:16]):
        aid = f"al-{i}"
        alerts.append({"schema": "vigil.alert/v1", "alert_id": aid, "revision": 0, "trigger": "detector",
                       "series": {"key": lab["series"]}, "category": lab["category"],
                       "anomaly": {"score": round(c["score"], 4), "threshold": round(c["threshold"], 4),
                                   "detector_score": round(c["score"], 4)},
                       "false_positive_probability": 0.05, "classifier": {"features": classifier_features(c)}})
        verdicts.append({"schema": "vigil.feedback/v1", "alert_id": aid, "series": lab["series"],
                         "category": lab["category"], "verdict": "false_positive" if i % 4 else "resolved",
                         "by": "oncall", "reason": "routine batch job", "at": f"2026-03-01T10:{i:02d}:00Z"})
    return alerts, verdicts


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def drift_event(series: str, model: str = "detector") -> dict:
    svc, metric, _ = series.split("|")
    return {"schema": "vigil.drift/v1", "series": series, "service": svc, "metric": metric, "tags": {},
            "signal": "detector_score" if model == "detector" else "forecast_residual", "model": model,
            "model_version": "v-0", "detector": "page_hinkley", "event_time": "2026-03-01T09:00:00Z",
            "detected_at": "2026-03-01T09:00:05Z", "stats": {}}


def test_feedback_and_drift_files_teach_the_fp_head_set_floors_and_are_the_runs_reason(
        tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base_root, base = tiny
    alerts, verdicts = _judged_alerts(base_root)
    fb_file = _jsonl(tmp_path / "feedback.jsonl", [*verdicts, "not json", {"schema": "vigil.feedback/v1"}])
    al_file = _jsonl(tmp_path / "alerts.jsonl", alerts)
    drifted = ["search|latency_p99_ms|instance=i-1", "payments|error_rate|instance=i-0"]
    dr_file = _jsonl(tmp_path / "drift.jsonl", [drift_event(drifted[0]), drift_event(drifted[1], "forecaster")])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TrainConfig, "specs", _tiny_specs)
        assert main(_args(tmp_path / "store", tmp_path / "runs", "--feedback-file", str(fb_file), "--alerts-file",
                          str(al_file), "--drift-file", str(dr_file))) == 0
    out = capsys.readouterr().out
    assert "feedback: 16 records (false_positive 12, resolved 4, ack 0), 16 classifier rows; 2 bad records" in out
    assert "drift: 2 events on 2 series" in out and "reason: drift on 2 series from 2 events" in out
    m = _manifests(tmp_path / "store")

    # the fp head listened: the rows people called false positives now look like false positives
    f = m["classifier"]["evaluation"]["feedback"]
    p = f["fp_probability_on_feedback_rows"]
    assert f["rows"] == 16 and f["false_positive"] == 12 and f["weight_per_row"] == 5.0
    assert p["without_feedback"]["false_positive"] < 0.2 < 0.5 < p["with_feedback"]["false_positive"]
    assert p["with_feedback"]["resolved"] < 0.5 and p["job"]["false_positive"] == pytest.approx(0.05)
    assert p["with_feedback"]["agreement"] > p["without_feedback"]["agreement"]
    # these verdicts contradict the simulator's labels (they call its true incidents routine): that costs
    # figures on the simulator's held-out candidates, and the report shows how much
    auc = f["synthetic_test_fp_auc"]
    assert auc["without_feedback"] > 0.9 and auc["with_feedback"] < auc["without_feedback"]
    assert 0 < f["weight_share"] < 0.5
    # ... and the published ONNX says so too, on the alerts' own rows
    clf = ClassifierModel.from_store(ArtifactStore(tmp_path / "store"))
    rows = np.asarray([a["classifier"]["features"] for a in alerts], dtype=np.float32)
    is_fp = np.asarray([v["verdict"] == "false_positive" for v in verdicts])
    new_fp = clf.predict_proba_batch(rows)["fp"][:, 1]
    old_fp = ClassifierModel.from_store(ArtifactStore(base_root)).predict_proba_batch(rows)["fp"][:, 1]
    assert new_fp[is_fp].mean() > old_fp[is_fp].mean() + 0.3

    # floors: exactly the rule's, for the series with false positives and no lower resolved alert
    fb = read_feedback([(str(i), json.dumps(v).encode()) for i, v in enumerate(verdicts)],
                       [(str(i), json.dumps(a).encode()) for i, a in enumerate(alerts)])
    want, why = threshold_floors(fb)
    post = m["detector"]["postprocessing"]
    assert want and post["series_threshold_floor"] == want
    assert all(want[s] > max(a["anomaly"]["detector_score"] for a, v in zip(alerts, verdicts, strict=True)
                             if a["series"]["key"] == s and v["verdict"] == "false_positive") for s in want)
    assert m["detector"]["evaluation"]["feedback"]["series"] == json.loads(json.dumps(why))
    assert "series_threshold_floor" not in _manifests(base_root)["detector"]["postprocessing"]

    # lineage: the reason on every model, feedback where it was learned from, and in the fingerprint
    for name in MODEL_NAMES:
        lin = m[name]["training_data"]["lineage"]
        assert lin["reason"] == {"drift": sorted(drifted), "events": 2, "by_model": {"detector": 1, "forecaster": 1}}
        assert lin["data"] == {"requested": "generator", "used": "generator"}
        assert ("feedback" in lin) == (name in ("detector", "classifier"))
    assert m["classifier"]["training_data"]["lineage"]["feedback"] == {"records": 16, "false_positive": 12,
                                                                       "resolved": 4, "ack": 0}
    assert any(s.get("source") == "alert-feedback" for s in m["classifier"]["training_data"]["sources"])
    # drift weighted the drifted metric kinds in the detector's and forecaster's data: new versions
    sel = [s for s in m["forecaster"]["training_data"]["sources"] if s.get("role") == "selection"]
    assert sel == [{"role": "selection", "drift_metric_kinds": ["error_rate", "latency_p99_ms"], "weight": 3.0}]
    for name in MODEL_NAMES:
        changed = m[name]["version"] != base.versions[name]
        assert changed == (name != "clusterer"), name
    report = next((tmp_path / "runs").glob("train-*/report.md")).read_text()
    assert "not_json" in report and "missing_field" in report and "fp_probability_on_feedback_rows" in report


@pytest.mark.skipif(not (DEFAULT_NAB_ROOT / "labels").exists(),
                    reason="no NAB corpus beside the project")
def test_nab_trains_the_detector_and_forecaster_and_the_lineage_says_so(tiny, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    base_root, base = tiny
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TrainConfig, "specs", _tiny_specs)
        assert main(_args(tmp_path / "store", tmp_path / "runs", "--data", "nab", "--nab-files", *NAB_FILES,
                          "--nab-limit", "1500")) == 0
        out = capsys.readouterr().out
        m = _manifests(tmp_path / "store")
        # same data, code and parameters: the same detector version, computed again from scratch
        inputs = RetrainInputs(DataConfig(kind="nab", nab_files=tuple(NAB_FILES), nab_limit=1500))
        cfg = TrainConfig(seed=SEED, quick=True, progress=False, workers=1)
        again = fit_detector(cfg, prepare(cfg, None, inputs))
    assert "data: nab" in out and "data: generator (needs a fleet of entities" in out
    base_m = _manifests(base_root)
    for name in ("detector", "forecaster"):
        td = m[name]["training_data"]
        assert td["lineage"]["data"]["used"] == "nab" and "make bench-nab" in td["lineage"]["data"]["benchmark"]
        assert {s["source"] for s in td["sources"]} == {"nab"} and trained_on_nab(m[name])
        assert td["fingerprint"] != base_m[name]["training_data"]["fingerprint"]
    assert m["detector"]["evaluation"]["test_scenario"]["source"] == "nab"
    assert m["detector"]["evaluation"]["generator_test"]["test_scenario"]["generator"] == "training.simulate.generate"
    assert m["detector"]["evaluation"]["per_kind"]["nab_window"]["incidents"] >= 1
    # the clusterer keeps the generator, so the very same version; the classifier learned behind a new detector
    assert m["clusterer"]["version"] == base.versions["clusterer"] and not trained_on_nab(m["clusterer"])
    assert m["clusterer"]["training_data"]["lineage"]["data"]["used"] == "generator"
    assert m["classifier"]["training_data"]["upstream"]["detector"] == m["detector"]["version"]
    assert again.fields["training_data"]["fingerprint"] == m["detector"]["training_data"]["fingerprint"]
    assert again.onnx_bytes == (tmp_path / "store" / "detector" / m["detector"]["version"] / "model.onnx").read_bytes()


def test_every_training_flag_is_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("train", "ensure"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        for flag in ("--data", "--nab-root", "--nab-files", "--nab-limit", "--config", "--bootstrap", "--topic",
                     "--max-records", "--read-timeout", "--background", "--drift-topic", "--drift-file",
                     "--drift-since", "--drift-weight", "--feedback-topic", "--alerts-topic", "--feedback-file",
                     "--alerts-file", "--feedback-weight"):
            assert flag in out, (command, flag)
        assert "../shared/datasets/nab" in out and "bench-nab" in out


def test_bad_retraining_inputs_exit_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fb = _jsonl(tmp_path / "f.jsonl", [])
    assert main(_args(tmp_path / "s", tmp_path / "r", "--feedback-file", str(fb))) == 2
    assert "--feedback-file needs the alerts it refers to" in capsys.readouterr().err
    assert main(_args(tmp_path / "s", tmp_path / "r", "--drift-file", str(fb), "--drift-since", "yesterday")) == 2
    assert "--drift-since must be ISO-8601 with a zone" in capsys.readouterr().err
    assert main(_args(tmp_path / "s", tmp_path / "r", "--drift-file", str(tmp_path / "missing.jsonl"))) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(_args(tmp_path / "s", tmp_path / "r", "--feedback-file", str(fb), "--alerts-file", str(fb),
                      "--feedback-weight", "0.5")) == 2
    assert "The 'feedback_weight' parameter of RetrainInputs must be a number >= 1" in capsys.readouterr().err
    assert main(_args(tmp_path / "s", tmp_path / "r", "--data", "nab", "--nab-root", str(tmp_path))) == 2
    assert "No NAB corpus at" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
