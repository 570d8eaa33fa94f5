"""Shared by the retraining tests: tiny scenario plans, CLI arguments, judged alerts, drift events.

Every run uses the same tiny scenario plan (seed 3, one worker), so a model whose data a flag
does not touch keeps the baseline run's version exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

from models.artifact import ArtifactStore
from models.clusterer import ClustererModel
from models.detector import DetectorModel
from models.features import classifier_features
from models.forecaster import ForecasterModel
from training.candidates import build_candidates
from training.data import ScenarioSpec
from training.train import MODEL_NAMES, TrainConfig

SEED = 3
NAB_FILES = ["ec2_cpu_utilization_fe7f93", "elb_request_count_8c0756", "rds_cpu_utilization_e47b3b"]


def tiny_specs(self: TrainConfig) -> dict[str, list[ScenarioSpec]]:
    s = self.seed
    fc = ScenarioSpec(s + 2, 26.0, 1, 3)
    return {"det_train": [ScenarioSpec(s + 1, 1.5, 2, 4)], "det_val": [ScenarioSpec(s + 3, 1.5, 2, 4)],
            "cls_train": [ScenarioSpec(s + 5, 2.0, 3, 6)], "eval": [ScenarioSpec(s + 9, 1.5, 3, 5)],
            "fc_train": [fc], "fc_cal": [fc], "fc_eval": [fc]}


def train_args(store: Path, runs: Path, *extra: str) -> list[str]:
    return ["train", "--store", str(store), "--seed", str(SEED), "--quick", "--no-progress", "--workers", "1",
            "--runs-dir", str(runs), *extra]


def manifests(root: Path) -> dict[str, dict]:
    store = ArtifactStore(root)
    return {n: store.manifest(n, store.latest(n)) for n in MODEL_NAMES}  # type: ignore[arg-type]


def judged_alerts(root: Path) -> tuple[list[dict], list[dict]]:
    """Alerts as the job writes them (classifier input row included) for detector candidates of true
    incidents on a fresh scenario, and verdicts calling most of them false positives: what people
    say when the fleet's "incidents" of this shape are in fact routine."""
    store = ArtifactStore(root)
    det, fc, cl = (cls.from_store(store) for cls in (DetectorModel, ForecasterModel, ClustererModel))
    cands = build_candidates(ScenarioSpec(71, 2.0, 2, 6).build(), det, fc, cl, instances=2)
    true_det = [(c, lab) for c, lab in cands if lab["trigger"] == "detector" and lab["fp"] == 0]
    if len(true_det) < 12:
        raise AssertionError(f"only {len(true_det)} true detector candidates to judge")
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


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def drift_event(series: str, model: str = "detector") -> dict:
    svc, metric, _ = series.split("|")
    return {"schema": "vigil.drift/v1", "series": series, "service": svc, "metric": metric, "tags": {},
            "signal": "detector_score" if model == "detector" else "forecast_residual", "model": model,
            "model_version": "v-0", "detector": "page_hinkley", "event_time": "2026-03-01T09:00:00Z",
            "detected_at": "2026-03-01T09:00:05Z", "stats": {}}
