"""Alert feedback (``vigil.feedback/v1``) as training data: fp labels for the classifier, threshold floors
for the detector.

People acknowledge, resolve or reject alerts; each verdict is one record on the feedback topic::

    {"schema": "vigil.feedback/v1", "alert_id": "...", "series": "<alert.series.key>",
     "category": "<alert.category>", "verdict": "ack" | "resolved" | "false_positive",
     "by": "who", "reason": "why", "at": "<ISO-8601 UTC>"}

:func:`parse_feedback` reads them, :func:`parse_alerts` reads the alerts topic, and :func:`join`
joins each verdict to its alert on ``alert_id``. Bad records are counted and listed with a reason,
never raised. What the join gives:

* One **effective verdict per alert**: the latest by ``at`` (a later ``resolved`` overrules an
  earlier ``false_positive``: someone looked again). ``false_positive`` means fp = 1,
  ``resolved`` fp = 0; ``ack`` is not a verdict and labels nothing.
* **Classifier rows**: the alert's *latest revision* carries the classifier's input row
  (``alert["classifier"]["features"]``, ``CLASSIFIER_FEATURES`` order); labelled alerts without it
  are skipped and counted. The false-positive head trains on these rows beside the synthetic
  candidates, each weighing :data:`HUMAN_WEIGHT` (5) synthetic ones: a verdict is ground truth
  about the real fleet, where synthetic labels are ground truth about the simulator; yet a
  handful of verdicts must not outvote thousands of candidates on everything else (the share of
  weight they hold is reported). The other heads learn nothing from feedback (a verdict says
  whether the alert was real, not its priority, category or team).
* **Per-series threshold floors** for the detector (:func:`threshold_floors`): for a series with
  false-positive verdicts on detector-triggered alerts, a floor just above (:data:`FLOOR_MARGIN`)
  the highest ``anomaly.detector_score`` those alerts reached (over their revisions on that
  series), capped at :data:`FLOOR_CAP`; but no floor when a ``resolved`` detector-triggered alert
  of that series scored at or below it (its lowest revision): a floor must never hide a real
  incident. Alerts the forecaster or the clusterer raised do not move detector floors. The job
  applies ``max(surprise bar, floor)`` (:mod:`models.surprise`).

Only what the topics hold when retraining starts is used: floors are recomputed from the
verdicts each time, not carried over from the previous version.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.features import CLASSIFIER_FEATURES
from training.drift import MAX_LISTED
from udfs.records import AlertRecord

HUMAN_WEIGHT = 5.0
FLOOR_MARGIN = 0.001  # alert scores carry 4 decimals: the floor clears the rejected score by 10 of them
FLOOR_CAP = 0.999


@dataclass(frozen=True)
class Verdict:
    """One valid feedback record."""

    alert_id: str
    series: str
    category: str
    verdict: str
    by: str
    reason: str
    at_ms: int
    seq: int  # read order, to break ties of ``at``
    where: str


@dataclass(frozen=True)
class Revision:
    """What retraining needs of one alert revision."""

    alert_id: str
    revision: int
    seq: int
    series: str
    trigger: str
    detector_score: float | None
    fp_probability: float | None  # what the alert said (the job's, after its online feedback)
    model_fp: float | None  # the serving classifier's own estimate (alert.classifier.fp), if written
    features: tuple[float, ...] | None
    features_problem: str | None


@dataclass
class Feedback:
    """Verdicts joined to their alerts: labelled classifier rows, floors, and everything refused."""

    records: Counter = field(default_factory=Counter)  # valid feedback records by verdict
    bad: list[dict[str, str]] = field(default_factory=list)
    alerts_read: int = 0
    alerts_bad: list[dict[str, str]] = field(default_factory=list)
    effective: dict[str, tuple[Verdict, list[Revision]]] = field(default_factory=dict)  # alert_id -> ...
    skipped: Counter = field(default_factory=Counter)
    X: np.ndarray = field(default_factory=lambda: np.zeros((0, len(CLASSIFIER_FEATURES)), dtype=np.float32))
    y: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    alert_ids: list[str] = field(default_factory=list)
    job_fp: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    model_fp: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    origin: dict[str, Any] = field(default_factory=dict)

    def lineage(self) -> dict[str, int]:
        """The manifests' ``lineage.feedback``: valid records read, by verdict."""
        return {"records": sum(self.records.values()), **{v: int(self.records[v]) for v in
                                                          ("false_positive", "resolved", "ack")}}

    def digest(self) -> str:
        """SHA-256 of the labelled classifier rows (what the fp head learns from)."""
        h = hashlib.sha256()
        for aid, x, y in zip(self.alert_ids, self.X, self.y, strict=True):
            h.update(aid.encode() + b"\x00" + np.asarray(x, dtype=np.float32).tobytes() + bytes([int(y)]))
        return "sha256:" + h.hexdigest()

    def summary(self) -> dict[str, Any]:
        """For the run report: what was read, joined, used, skipped and refused."""
        eff = Counter(v.verdict for v, _ in self.effective.values())
        return {**self.lineage(), "read": self.origin, "alerts_read": self.alerts_read,
                "alerts_with_verdict": len(self.effective), "effective_verdicts": dict(eff),
                "classifier_rows": len(self.y), "classifier_rows_fp": int(self.y.sum()),
                "skipped": dict(self.skipped), "bad": len(self.bad),
                "bad_by_reason": dict(Counter(b["reason"] for b in self.bad)), "bad_records": self.bad[:MAX_LISTED],
                "bad_alerts": len(self.alerts_bad), "bad_alert_records": self.alerts_bad[:MAX_LISTED]}


def _bad(where: str, reason: str, detail: str) -> dict[str, str]:
    return {"where": where, "reason": reason, "detail": detail[:200]}


def _json_object(where: str, raw: bytes, bad: list[dict[str, str]]) -> dict | None:
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        bad.append(_bad(where, "not_json", str(exc)))
        return None
    if not isinstance(obj, dict):
        bad.append(_bad(where, "not_object", type(obj).__name__))
        return None
    return obj


def parse_feedback(records: Iterable[tuple[str, bytes]]) -> tuple[list[Verdict], list[dict[str, str]]]:
    """Valid feedback records of ``records`` (``(where, raw)`` pairs) and the refused ones with reasons.

    Validation is the job's own (:func:`udfs.parse.parse_feedback`), so retraining learns from
    exactly the verdicts the running job accepts; its dead-letter reasons are the reasons here.
    """
    from udfs.parse import DeadLetter
    from udfs.parse import parse_feedback as parse_one

    out: list[Verdict] = []
    bad: list[dict[str, str]] = []
    for seq, (where, raw) in enumerate(records):
        fb = parse_one(raw)
        if isinstance(fb, DeadLetter):
            bad.append(_bad(where, fb.reason, fb.detail))
            continue
        out.append(Verdict(fb.alert_id, fb.series, fb.category, fb.verdict, fb.by, fb.reason, fb.at_ms, seq, where))
    return out, bad


def _features(alert: dict) -> tuple[tuple[float, ...] | None, str | None]:
    cls = alert.get("classifier")
    feats = cls.get("features") if isinstance(cls, dict) else None
    if feats is None:
        return None, "no_classifier_features"
    if not isinstance(feats, list) or len(feats) != len(CLASSIFIER_FEATURES):
        n = len(feats) if isinstance(feats, list) else type(feats).__name__
        return None, f"classifier_features_wrong_length ({n}, expected {len(CLASSIFIER_FEATURES)})"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in feats):
        return None, "classifier_features_not_finite_numbers"
    return tuple(float(v) for v in feats), None


def _number(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def parse_alerts(records: Iterable[tuple[str, bytes]], wanted: set[str] | None = None
                 ) -> tuple[dict[str, list[Revision]], int, list[dict[str, str]]]:
    """Revisions of each alert (``alert_id`` -> revisions in read order), records read, refused ones.

    With ``wanted``, only those alert ids are kept (the alerts topic can be long).
    """
    out: dict[str, list[Revision]] = {}
    bad: list[dict[str, str]] = []
    n = 0
    for seq, (where, raw) in enumerate(records):
        n += 1
        obj = _json_object(where, raw, bad)
        if obj is None:
            continue
        aid = obj.get("alert_id")
        if obj.get("schema") != AlertRecord.SCHEMA or not isinstance(aid, str) or not aid:
            bad.append(_bad(where, "not_an_alert", f"schema {obj.get('schema')!r}, alert_id {aid!r}"))
            continue
        if wanted is not None and aid not in wanted:
            continue
        series: dict = obj["series"] if isinstance(obj.get("series"), dict) else {}
        anomaly: dict = obj["anomaly"] if isinstance(obj.get("anomaly"), dict) else {}
        feats, problem = _features(obj)
        rev = obj.get("revision")
        cls = obj["classifier"] if isinstance(obj.get("classifier"), dict) else {}
        out.setdefault(aid, []).append(Revision(
            aid, rev if isinstance(rev, int) and not isinstance(rev, bool) else 0, seq, str(series.get("key") or ""),
            str(obj.get("trigger") or ""), _number(anomaly.get("detector_score")),
            _number(obj.get("false_positive_probability")), _number(cls.get("fp")), feats, problem))
    return out, n, bad


def latest(revisions: Sequence[Revision]) -> Revision:
    """The latest revision (highest ``revision``; of equals, the last read)."""
    return max(revisions, key=lambda r: (r.revision, r.seq))


def join(verdicts: Sequence[Verdict], alerts: dict[str, list[Revision]], bad: list[dict[str, str]] | None = None,
         alerts_read: int = 0, alerts_bad: list[dict[str, str]] | None = None) -> Feedback:
    """Join verdicts to alerts: effective verdict per alert, labelled classifier rows, skip counts."""
    fb = Feedback(records=Counter(v.verdict for v in verdicts), bad=list(bad or []), alerts_read=alerts_read,
                  alerts_bad=list(alerts_bad or []))
    per_alert: dict[str, Verdict] = {}
    for v in verdicts:
        cur = per_alert.get(v.alert_id)
        if cur is None or (v.at_ms, v.seq) >= (cur.at_ms, cur.seq):
            per_alert[v.alert_id] = v
    rows, ys, ids, job, model = [], [], [], [], []
    for aid in sorted(per_alert):
        v = per_alert[aid]
        revs = alerts.get(aid)
        if not revs:
            fb.skipped["alert_not_found"] += 1
            fb.bad.append(_bad(v.where, "alert_not_found", f"no alert {aid!r} on the alerts topic (expired or "
                                                           f"not yet written)"))
            continue
        fb.effective[aid] = (v, revs)
        if v.series and all(r.series != v.series for r in revs):
            fb.skipped["series_differs_from_alert"] += 1  # still used: the alert id is authoritative
        if v.verdict == "ack":
            fb.skipped["ack_no_label"] += 1
            continue
        last = latest(revs)
        if last.features is None:
            fb.skipped[(last.features_problem or "no_classifier_features").split(" ")[0]] += 1
            continue
        rows.append(last.features)
        ys.append(1 if v.verdict == "false_positive" else 0)
        ids.append(aid)
        job.append(last.fp_probability if last.fp_probability is not None else float("nan"))
        model.append(last.model_fp if last.model_fp is not None else float("nan"))
    fb.X = np.asarray(rows, dtype=np.float32).reshape(-1, len(CLASSIFIER_FEATURES))
    fb.y = np.asarray(ys, dtype=np.int64)
    fb.alert_ids = ids
    fb.job_fp = np.asarray(job, dtype=np.float64)
    fb.model_fp = np.asarray(model, dtype=np.float64)
    return fb


def read_feedback(feedback_records: Iterable[tuple[str, bytes]], alert_records: Iterable[tuple[str, bytes]],
                  origin: dict[str, Any] | None = None) -> Feedback:
    """Parse both streams and join them (the alerts kept are only those a verdict names)."""
    verdicts, bad = parse_feedback(feedback_records)
    alerts, n, alerts_bad = parse_alerts(alert_records, {v.alert_id for v in verdicts})
    fb = join(verdicts, alerts, bad, n, alerts_bad)
    fb.origin = dict(origin or {})
    return fb


def threshold_floors(fb: Feedback, margin: float = FLOOR_MARGIN, cap: float = FLOOR_CAP
                     ) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """Per-series detector threshold floors from false-positive verdicts (see the module docstring).

    Returns ``({series: floor}, {series: why})``; the second holds every series considered,
    including those left without a floor and the reason.
    """
    fp_max: dict[str, float] = {}
    fp_alerts: Counter = Counter()
    true_min: dict[str, float] = {}
    for v, revs in fb.effective.values():
        if v.verdict not in ("false_positive", "resolved"):
            continue
        last = latest(revs)
        key = v.series if any(r.series == v.series for r in revs) else last.series
        scores = [r.detector_score for r in revs if r.series == key and r.trigger == "detector"
                  and r.detector_score is not None]
        if not key or not scores:
            continue
        if v.verdict == "false_positive":
            fp_max[key] = max(fp_max.get(key, -math.inf), max(scores))
            fp_alerts[key] += 1
        else:
            true_min[key] = min(true_min.get(key, math.inf), min(scores))
    floors: dict[str, float] = {}
    why: dict[str, dict[str, Any]] = {}
    for key in sorted(fp_max):
        floor = min(math.ceil((fp_max[key] + margin) * 1e4) / 1e4, cap)
        info: dict[str, Any] = {"false_positive_alerts": fp_alerts[key], "highest_false_positive_score": fp_max[key],
                                "floor": floor}
        t = true_min.get(key)
        if t is not None and t <= floor:
            info.update({"floor": None, "lowest_resolved_score": t,
                         "why_none": f"a resolved alert of this series scored {t:.4g} <= {floor:.4g}"})
        else:
            floors[key] = floor
        why[key] = info
    return floors, why
