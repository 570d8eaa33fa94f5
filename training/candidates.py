"""Candidate alerts for the classifier: the job's own scoring logic replayed over a labelled scenario.

:func:`build_candidates` does not re-implement what the job does; it runs it. Every generated
event goes through the job's parser (:func:`udfs.parse.parse_record`, time bounds off), then
:class:`models.pipeline.SeriesLogic` keyed by series and :meth:`models.pipeline.EntityLogic.candidate`
keyed by service, with the default :class:`~models.config.ScoringConfig` and the service context
of :data:`training.simulate.SERVICES`. So candidates of all three triggers (detector, forecast,
cluster) appear, with exactly the classifier input the job would classify, and each is labelled
from the incidents the scenario injected (:func:`label_candidate`).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from models.clusterer import ClustererModel
from models.config import AlertConfig, ScoringConfig
from models.detector import DetectorModel
from models.features import ENTITY_METRICS
from models.forecaster import ForecasterModel
from models.pipeline import Candidate, EntityLogic, EntityState, ModelBundle, SeriesLogic, SeriesState
from training.data import LABEL_MARGIN_MS, IncidentIndex
from training.simulate import SERVICES, Scenario, _category
from udfs.parse import DeadLetter, ParseLimits, parse_record

SRE_METRICS = ("disk_util", "memory_util")
TRIGGERS = ("detector", "forecast", "cluster")
CONTEXT_FIELDS = ("owner", "criticality", "revenue_per_min", "users", "description")
REPLAY_LIMITS = ParseLimits(max_past_s=None, max_future_s=None)


def service_context(service: str) -> dict[str, Any]:
    """The context the job reads from Redis for ``service`` (what ``models.context.seed`` writes)."""
    spec = SERVICES.get(service, {})
    return {k: spec[k] for k in CONTEXT_FIELDS if k in spec}


def label_candidate(service: str, metric: str, key: str, ts_ms: int, index: IncidentIndex,
                    trigger: str = "detector", instance: str | None = None) -> dict[str, Any]:
    """Ground truth of a candidate on series ``key`` at ``ts_ms``.

    A candidate belongs to the earliest incident touching its series whose window
    ``[start, end + 10 min]`` holds ``ts_ms``; a cluster-triggered one, failing that, to the
    earliest such incident that moves its entity's vector (touches one of ``ENTITY_METRICS`` of
    ``instance``, or of the whole service): the clusterer fires on the entity, not on the series
    whose sample happened to carry the evaluation. ``fp`` = 0 when it belongs to an incident;
    ``category`` = the incident's, else the metric's natural one; ``team`` = "sre" for
    saturation of disk or memory, else the service owner; ``priority`` P1/P2 for real incidents
    on critical (>= 0.9) / other services, P3/P4 for false positives likewise.
    """
    inc = index.series_incident(key, ts_ms)
    if inc is None and trigger == "cluster" and instance is not None:
        inc = next((i for i in index.entity_incidents(service, instance, ts_ms)
                    if set(i.metrics) & set(ENTITY_METRICS)), None)
    spec = SERVICES.get(service, {})
    crit = float(spec.get("criticality", 0.5))
    category = inc.category if inc else _category(metric)
    team = "sre" if category == "saturation" and metric in SRE_METRICS else spec.get("owner", "sre")
    critical = crit >= 0.9
    priority = ("P1" if critical else "P2") if inc is not None else ("P3" if critical else "P4")
    return {"fp": 0 if inc else 1, "category": category, "team": team, "priority": priority,
            "incident": inc.id if inc else None, "incident_kind": inc.kind if inc else None,
            "service": service, "series": key, "entity": instance, "trigger": trigger}


def _instances(scenario: Scenario) -> int:
    insts = set()
    for e in scenario.events[:5000]:
        inst = (e.get("tags") or {}).get("instance")
        if inst is not None:
            insts.add(inst)
    return max((int(i.split("-")[1]) + 1 for i in insts if i.startswith("i-") and i[2:].isdigit()), default=8)


def replay_candidates(scenario: Scenario, models: ModelBundle, scoring: ScoringConfig | None = None) -> list[Candidate]:
    """Every candidate the job's logic raises over ``scenario``, in arrival order.

    ``models`` needs no classifier. Keyed state stays as objects between records (the job
    encodes it between records; the encodings round-trip exactly, which tests/pipeline checks).
    """
    scoring = scoring or ScoringConfig()
    series = SeriesLogic(scoring, models)
    entity = EntityLogic(scoring, AlertConfig(), models, service_context)
    tag = scoring.entity_tag
    s_state: dict[str, SeriesState] = {}
    e_state: dict[str, EntityState] = {}
    out: list[Candidate] = []
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    for e in scenario.events:
        parsed = parse_record(dumps(e).encode(), scenario.start_ms, REPLAY_LIMITS)
        if isinstance(parsed, DeadLetter):
            raise ValueError(f"the parser refused a generated event ({parsed.reason}: {parsed.detail}): {e}")
        for ev in parsed:
            st, scored, _ = series.on_record(s_state.get(ev.series), ev, tag)
            s_state[ev.series] = st
            est = e_state.get(ev.service)
            if est is None:
                est = e_state[ev.service] = EntityState()
            c = entity.candidate(est, scored)
            if c is not None:
                out.append(c)
    return out


def build_candidates(scenario: Scenario, detector: DetectorModel, forecaster: ForecasterModel,
                     clusterer: ClustererModel, instances: int | None = None,
                     scoring: ScoringConfig | None = None) -> list[tuple[dict, dict]]:
    """Replay ``scenario`` through the job's logic; one ``(classifier input, labels)`` per candidate.

    The classifier input is :attr:`models.pipeline.Candidate.inputs` unchanged; the labels are
    :func:`label_candidate`'s, including the ``trigger``. Deterministic: same scenario and
    models, same candidates in the same order. The clusterer's centroids start from the trained
    ones and adapt online as in the job, so candidates depend only on the scenario.
    """
    index = IncidentIndex(scenario.incidents, instances or _instances(scenario), LABEL_MARGIN_MS)
    bundle = ModelBundle(detector, forecaster, clusterer)
    out = []
    for c in replay_candidates(scenario, bundle, scoring):
        s = c.scored
        out.append((c.inputs, label_candidate(s.service, s.metric, s.series, s.ts_ms, index, c.trigger, s.entity)))
    return out


def sample_weights(cands: list[tuple[dict, dict]]) -> list[float]:
    """Training weight of each candidate: a cluster evaluation counts once, however many candidates it raised.

    One evaluation of an outlying entity raises a cluster candidate on each of its metric samples
    of that minute (up to one per ``ENTITY_METRICS``), all carrying the same entity evidence; each
    of those gets ``1 / k``. Detector and forecast candidates weigh 1. Without this, a handful of
    drifting entities outweigh every detector candidate and the heads learn their incidents by
    heart (worse category and priority on held-out scenarios of every trigger).
    """
    per_eval = Counter((lab["service"], lab["entity"], c["ts_ms"]) for c, lab in cands if lab["trigger"] == "cluster")
    return [1.0 / per_eval[(lab["service"], lab["entity"], c["ts_ms"])] if lab["trigger"] == "cluster" else 1.0
            for c, lab in cands]


def trigger_counts(cands: list[tuple[dict, dict]]) -> dict[str, dict[str, int]]:
    """Per trigger: candidates, and how many of them are true incidents (``fp`` = 0)."""
    n = Counter(lab["trigger"] for _, lab in cands)
    tp = Counter(lab["trigger"] for _, lab in cands if lab["fp"] == 0)
    return {t: {"candidates": n[t], "true_incident": tp[t]} for t in TRIGGERS}
