"""Candidate alerts for the classifier: the three upstream models replayed over a labelled scenario.

:func:`build_candidates` does, offline, what the job does online: per series a
:class:`~models.features.SeriesWindow` and an :class:`~models.detector.AdaptiveThreshold`, per
entity (service instance) its latest metric values through the clusterer, and for every score at
or above its series' threshold one candidate dict shaped exactly as
:func:`models.features.classifier_features` documents, labelled from the injected incidents.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.clusterer import ClustererModel
from models.detector import AdaptiveThreshold, DetectorModel
from models.features import ENTITY_METRICS, SeriesWindow, entity_vector
from models.forecaster import ForecasterModel
from training.data import LABEL_MARGIN_MS, IncidentIndex, iter_steps
from training.simulate import LIMITS, SERVICES, Scenario, _category

RELATED_WINDOW_MS = 5 * 60_000
SRE_METRICS = ("disk_util", "memory_util")


def label_candidate(service: str, metric: str, key: str, ts_ms: int, index: IncidentIndex) -> dict[str, Any]:
    """Ground truth of a candidate on series ``key`` at ``ts_ms``.

    ``fp`` = 1 unless an incident touching the series covers ``[start, end + 10 min]``;
    ``category`` = the incident's, else the metric's natural one; ``team`` = "sre" for saturation
    of disk or memory, else the service owner; ``priority`` P1/P2 for real incidents on
    critical (>= 0.9) / other services, P3/P4 for false positives likewise.
    """
    inc = index.series_incident(key, ts_ms)
    spec = SERVICES.get(service, {})
    crit = float(spec.get("criticality", 0.5))
    category = inc.category if inc else _category(metric)
    team = "sre" if category == "saturation" and metric in SRE_METRICS else spec.get("owner", "sre")
    critical = crit >= 0.9
    priority = ("P1" if critical else "P2") if inc is not None else ("P3" if critical else "P4")
    return {"fp": 0 if inc else 1, "category": category, "team": team, "priority": priority,
            "incident": inc.id if inc else None, "incident_kind": inc.kind if inc else None,
            "service": service, "series": key}


def _instances(scenario: Scenario) -> int:
    insts = set()
    for e in scenario.events[:5000]:
        inst = (e.get("tags") or {}).get("instance")
        if inst is not None:
            insts.add(inst)
    return max((int(i.split("-")[1]) + 1 for i in insts if i.startswith("i-") and i[2:].isdigit()), default=8)


def build_candidates(scenario: Scenario, detector: DetectorModel, forecaster: ForecasterModel,
                     clusterer: ClustererModel, instances: int | None = None) -> list[tuple[dict, dict]]:
    """Replay ``scenario`` through the models; one ``(candidate, labels)`` per score >= its threshold.

    Deterministic: same scenario and models, same candidates in the same order. The clusterer
    uses its trained centroids (no online adaptation) so candidates do not depend on history
    outside the scenario.
    """
    index = IncidentIndex(scenario.incidents, instances or _instances(scenario), LABEL_MARGIN_MS)
    windows: dict[str, SeriesWindow] = {}
    thresholds: dict[str, AdaptiveThreshold] = {}
    latest: dict[tuple[str, str], dict[str, float]] = {}
    recent: dict[str, list[tuple[int, str]]] = {}
    out: list[tuple[dict, dict]] = []
    for ts, samples in iter_steps(scenario.events):
        for s in samples:
            if s.instance is not None and s.metric in ENTITY_METRICS:
                latest.setdefault((s.service, s.instance), {})[s.metric] = s.value
        outlier = _entity_outliers(latest, clusterer)

        warm, rows = [], []
        for s in samples:
            w = windows.get(s.key)
            if w is None:
                w = windows[s.key] = SeriesWindow()
            if w.warm:
                warm.append(s)
                rows.append(w.detector_features(s.value))
        scores = detector.score(np.asarray(rows, dtype=np.float32)) if rows else np.empty(0)
        fired = []
        for s, row, sc in zip(warm, rows, scores.tolist(), strict=True):
            th = thresholds.get(s.key)
            if th is None:
                th = thresholds[s.key] = detector.new_threshold()
            thr = th.threshold
            if sc >= thr:
                fired.append((s, row, sc, thr))
            th.update(sc)
        for s in samples:
            windows[s.key].update(ts, s.value)

        for s, row, sc, thr in fired:
            # as the job counts them (models.pipeline.EntityLogic): distinct other series of the
            # service with a candidate in the last 5 minutes, earlier candidates of this step included
            q = [r for r in recent.get(s.service, []) if ts - r[0] <= RELATED_WINDOW_MS]
            related = len({r[1] for r in q if r[1] != s.key})
            q.append((ts, s.key))
            recent[s.service] = q
            ttb = None
            if s.metric in LIMITS:
                rows_f, anchor, scale = windows[s.key].forecaster_rows()
                fc = forecaster.forecast(rows_f, anchor, scale)
                ttb = forecaster.time_to_breach(fc, s.value, LIMITS[s.metric])
            spec = SERVICES.get(s.service, {})
            cand = {
                "score": float(sc),
                "threshold": float(thr),
                "det": [float(v) for v in row],
                "cluster_outlier": outlier.get((s.service, s.instance or ""), 0.0),
                "time_to_breach_s": ttb,
                "criticality": float(spec.get("criticality", 0.5)),
                "owner": spec.get("owner"),
                "related_anomalies": related,
                "ts_ms": int(ts),
                "metric": s.metric,
                "text": f"{s.service} {s.metric} {spec.get('description', '')}",
            }
            out.append((cand, label_candidate(s.service, s.metric, s.key, ts, index)))
    return out


def _entity_outliers(latest: dict[tuple[str, str], dict[str, float]],
                     clusterer: ClustererModel) -> dict[tuple[str, str], float]:
    ents = [e for e, v in latest.items() if len(v) == len(ENTITY_METRICS)]
    if not ents:
        return {}
    X = np.asarray([entity_vector(latest[e]) for e in ents], dtype=np.float32)
    d = clusterer.distances(X)
    cid = d.argmin(axis=1)
    sc = clusterer.outlier_scores(cid, d[np.arange(len(ents)), cid].astype(np.float64))
    return dict(zip(ents, sc.tolist(), strict=True))
