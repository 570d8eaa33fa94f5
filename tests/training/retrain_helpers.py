"""Shared by the retraining tests: tiny scenario plans, CLI arguments, judged alerts, drift events.

Every run uses the same tiny scenario plan (seed 3, one worker), so a model whose data a flag
does not touch keeps the baseline run's version exactly.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from models.artifact import ArtifactStore
from models.catalog import MODEL_NAMES
from training.base import TrainConfig
from training.data import ScenarioSpec
from udfs.records import DriftRecord, FeedbackRecord

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


def judged_alerts(root: Path, seed: int = 71) -> tuple[list[dict], list[dict]]:
    """Alerts the job's own logic writes (every revision) over a fresh scenario with the models in
    ``root``, and people's verdicts on them: detector-triggered alerts on the scenario's true
    incidents are called false positives (routine for this fleet), all but every fourth, which is
    resolved; the other alerts are left unjudged. Verdicts that contradict the simulator's labels
    are what the fp head must learn from."""
    from models.config import AlertConfig, ScoringConfig
    from models.pipeline import EntityLogic, ModelBundle, SeriesLogic
    from training.candidates import REPLAY_LIMITS, service_context
    from training.data import IncidentIndex
    from udfs.parse import parse_record

    bundle = ModelBundle.load(root)
    sc = ScenarioSpec(seed, 4.0, 4, 16).build()
    scoring = ScoringConfig()
    # the scenario's incidents start 36 minutes in, inside the learning period: it is off, so that
    # the verdicts fall on the revisions the candidates themselves raise
    series = SeriesLogic(scoring, bundle)
    entity = EntityLogic(scoring, AlertConfig(learning_scores=0), bundle, service_context)
    s_state: dict = {}
    e_state: dict = {}
    alerts: list[dict] = []
    for e in sc.events:
        for ev in parse_record(json.dumps(e).encode(), sc.start_ms, REPLAY_LIMITS):  # type: ignore[union-attr]
            s_state[ev.series], scored, _ = series.on_record(s_state.get(ev.series), ev, scoring.entity_tag)
            e_state[ev.service], out, _ = entity.on_record(e_state.get(ev.service), scored, ev.ts_ms)
            alerts += [json.loads(a) for a in out]
    index = IncidentIndex(sc.incidents, 4)
    latest = {a["alert_id"]: a for a in alerts}
    verdicts = []
    for a in latest.values():
        ts = int(datetime.fromisoformat(a["event_time"]).timestamp() * 1000)
        if a["trigger"] != "detector" or index.series_incident(a["series"]["key"], ts) is None:
            continue
        verdicts.append(FeedbackRecord(a["alert_id"], a["series"]["key"], a["category"],
                                       verdict="resolved" if len(verdicts) % 4 == 0 else "false_positive",
                                       by="oncall", at=f"2026-03-01T10:{len(verdicts):02d}:00Z",
                                       reason="routine batch job").to_dict())
    if len(verdicts) < 6:
        raise AssertionError(f"only {len(verdicts)} detector alerts on true incidents to judge")
    return alerts, verdicts


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def drift_event(series: str, model: str = "detector") -> dict:
    svc, metric, _ = series.split("|")
    return DriftRecord(series, svc, metric, {}, signal="detector_score" if model == "detector" else "forecast_residual",
                       model=model, model_version="v-0", detector="page_hinkley", event_time="2026-03-01T09:00:00Z",
                       detected_at="2026-03-01T09:00:05Z", stats={}).to_dict()
