"""The scoring logic of the job, free of Flink: what happens to one record of one key.

Two logic classes, each with ``on_record`` and explicit, versioned state encodings, so that the
Flink operators in ``operators/`` only move state in and out and can be tested without a JVM:

- :class:`SeriesLogic`, keyed by series: rolling features, detector with a per-series adaptive
  threshold (or, with ``scoring.surprise`` on and once a series has learned, its score normalised
  against the series' own past: :mod:`models.surprise`), forecaster (every ``forecast_every``
  samples and on every candidate) with time-to-breach; it emits a :class:`Scored` record per
  sample and, now and then, a forecast.
- :class:`EntityLogic`, keyed by service, in two steps: :meth:`EntityLogic.candidate` keeps the
  latest metric vector of each entity (service instance), runs the clusterer with centroids
  adapted online and decides whether a sample is a :class:`Candidate` (detector, forecast or
  cluster trigger); :meth:`EntityLogic.on_record` then classifies it, weighs severity and business
  impact, recommends actions, and groups (dedups) candidates into alerts. Training builds the
  classifier's data with :meth:`EntityLogic.candidate` itself, so what it learns from is what the
  job asks it about.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from models.artifact import ArtifactStore, resolve_version
from models.catalog import BY_NAME, MODEL_NAMES
from models.classifier import ClassifierModel
from models.clusterer import ClustererModel
from models.config import AlertConfig, ScoringConfig, StateConfig
from models.detector import DetectorModel
from models.drift import PH_EMPTY, PH_STRUCT, DriftTest, PHState
from models.features import (
    DETECTOR_FEATURES,
    ENTITY_METRICS,
    HISTORY,
    PRIORITIES,
    SeriesWindow,
    classifier_features,
    detector_feature_rows,
    entity_vector,
    forecaster_rows,
    metric_kind,
    robust_rows,
    value_lattice,
)
from models.forecaster import ForecasterModel
from models.impact import DEFAULT_CONTEXT, business_impact, recommended_actions
from models.rules import NONE, Effects, Window, lowered
from models.season import SeasonalContext
from models.surprise import SurpriseState, surprise_round
from udfs.parse import Feedback, split_series_key
from udfs.records import AlertRecord, DriftRecord, ForecastRecord, ScoreRecord, ShadowRecord

SERIES_STATE = "series_state/v5"
ENTITY_STATE = "entity_state/v4"
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
RELATED_WINDOW_MS = 5 * 60_000
NEVER_MS = -(2**62)  # the event time of "nothing yet": far in the past, yet safe to subtract from


def iso(ts_ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


@dataclass
class ModelBundle:
    """One loaded, verified version of each of the four models."""

    detector: DetectorModel
    forecaster: ForecasterModel
    clusterer: ClustererModel
    classifier: ClassifierModel | None = None  # None: candidates only (training), no alerts
    shadow: dict[str, Any] = field(default_factory=dict)  # model name -> a version scoring beside, not alerting

    @classmethod
    def load(cls, root: str | Path, redis_client: Any | None = None) -> ModelBundle:
        """Load the serving version of every model (Redis ``production`` pointer, else the latest)."""
        store = ArtifactStore(root)
        got = {}
        for name, spec in BY_NAME.items():
            version = resolve_version(name, store, redis_client)
            if version is None:
                raise FileNotFoundError(f"no version of model '{name}' in {root}: run `make retrain` first")
            got[name] = spec.load(store, version)
        return cls(**got)

    def versions(self) -> dict[str, str]:
        return {n: getattr(self, n).version for n in MODEL_NAMES if getattr(self, n) is not None}

    def served(self) -> list[tuple[str, str, str]]:
        """``(model, version, alias)`` of every version scoring now, production and shadow."""
        return ([(n, v, "production") for n, v in self.versions().items()]
                + [(n, m.version, "shadow") for n, m in sorted(self.shadow.items())])

    def swap(self, root: str | Path, name: str, version: str | None, alias: str = "production") -> str | None:
        """Load and verify ``version`` of model ``name``, then serve it as ``alias``; return the version
        it replaced. ``alias`` is "production" (scores and alerts) or "shadow" (scores beside production,
        recorded, never alerted; ``version`` None stops shadowing).

        Raises :class:`~models.artifact.ArtifactError` (hash, schema, smoke inference) or
        ``ValueError`` (unknown model or alias) and leaves the bundle untouched when the version is refused.
        """
        if name not in BY_NAME:
            raise ValueError(f"Unknown model {name!r}. Known models: {list(BY_NAME)}.")
        if alias not in ("production", "shadow"):
            raise ValueError(f"Unknown alias {alias!r}. Known aliases: ['production', 'shadow'].")
        if alias == "shadow":
            old = self.shadow.get(name)
            if version is None:
                self.shadow.pop(name, None)
            else:
                self.shadow[name] = BY_NAME[name].load(ArtifactStore(root), version)
            return None if old is None else old.version
        if version is None:
            raise ValueError(f"a production version of {name!r} cannot be removed, only replaced")
        new = BY_NAME[name].load(ArtifactStore(root), version)
        old = getattr(self, name)
        setattr(self, name, new)  # one attribute write: records before use the old, after use the new
        return None if old is None else old.version



class Versions(NamedTuple):
    """The model versions that scored a sample."""

    detector: str
    forecaster: str


class Assignment(NamedTuple):
    """An entity's latest cluster assignment, as its service's state keeps it."""

    eval_ts_ms: float  # event time of the evaluation
    cluster_id: float
    distance: float
    outlier: float  # the clusterer's outlier score there
    streak: float  # evaluations in a row with ``outlier`` at or above ``cluster_alert_above``


class Scored(NamedTuple):
    """What the series operator tells the entity operator about one sample."""

    series: str
    service: str
    metric: str
    tags: tuple[tuple[str, str], ...]
    entity: str | None
    ts_ms: int
    value: float
    score: float
    threshold: float
    trigger: str  # "" | "detector" | "forecast"
    det: tuple[float, ...] | None
    expected: float
    forecast: tuple[dict, ...] | None
    time_to_breach_s: float | None
    limit: float | None
    versions: Versions
    evidence: float = 0.0  # the detector's own score, before the series' surprise (models.surprise)
    effects: Effects = NONE  # the business rules that applied to the sample (models.rules)
    base_threshold: float | None = None  # the bar before the rules moved it (None: they did not)
    scored_before: int = 0  # detector scores the series had before this sample (its adaptive threshold's count)


@dataclass
class SeriesState:
    """Everything kept per series (state name ``series_state/v5``).

    v5 added the series' seasonal context (:class:`models.season.SeasonalContext`, a week of coarse
    buckets); a series stored before v5 starts it empty and fills it as it goes. v4 added the
    series' surprise state (:class:`models.surprise.SurpriseState`). v3 added
    ``max_ts_ms``, the series' own event-time high mark: an event more than the out-of-orderness
    bound behind it is late. v2 added the drift tests, the pending one-step forecast they compare
    against, and the threshold tail that feedback narrows. Older versions are read and migrate on
    the next write: the adaptive threshold's (mean, variance, count) of the detector's score seed
    the surprise's statistics and the history's range its range (so that an upgraded series does
    not learn again from nothing); v2 takes ``max_ts_ms`` from the window's last timestamp; v1 has
    drift and feedback empty.
    """

    window: SeriesWindow = field(default_factory=SeriesWindow)
    threshold: tuple[float, float, float] | None = None  # the adaptive threshold (young series' bar)
    since_forecast: int = 0
    breach_streak: int = 0
    drift_score: PHState | None = None
    drift_residual: PHState | None = None
    pending: tuple[int, float, float] | None = None  # (due ts_ms, forecast value, scale) of the 5-min forecast
    fb_tail: float = 1.0  # the bar's tail (1 - bar) is multiplied by this
    max_ts_ms: int = NEVER_MS  # the latest event time folded in
    surprise: SurpriseState = field(default_factory=SurpriseState)
    season: SeasonalContext = field(default_factory=SeasonalContext)

    _V1 = struct.Struct("<BdddII")
    _V2 = struct.Struct("<BdddIIqddd")
    _V3 = struct.Struct("<BdddIIqdddq")  # v4, v5: the same head, then the drift tests, the surprise,
    # (v5) the season, the window

    def to_bytes(self) -> bytes:
        t = self.threshold or (0.0, 0.0, -1.0)
        p = self.pending or (-1, 0.0, 0.0)
        return b"".join((self._V3.pack(5, *t, self.since_forecast, self.breach_streak, *p, self.fb_tail,
                                       self.max_ts_ms),
                         PH_STRUCT.pack(*(self.drift_score or PH_EMPTY)),
                         PH_STRUCT.pack(*(self.drift_residual or PH_EMPTY)),
                         self.surprise.to_bytes(),
                         self.season.to_bytes(),
                         self.window.to_bytes()))

    @classmethod
    def peek_max_ts(cls, data: bytes) -> int:
        """``max_ts_ms`` of an encoded state, without decoding the rest (what a sweep needs)."""
        if data[0] in (3, 4, 5):
            return struct.unpack_from("<q", data, cls._V3.size - 8)[0]
        return cls.from_bytes(data).max_ts_ms

    @classmethod
    def from_bytes(cls, data: bytes) -> SeriesState:
        ver = data[0]
        if ver == 1:
            _, m, v, n, since, streak = cls._V1.unpack_from(data)
            w = SeriesWindow.from_bytes(data[cls._V1.size:])
            return cls(w, None if n < 0 else (m, v, n), since, streak, max_ts_ms=w.last_ts_ms if w.n else NEVER_MS,
                       surprise=_migrated_surprise(w, m, v, n))
        if ver not in (2, 3, 4, 5):
            raise ValueError(f"{SERIES_STATE}: cannot read state version {ver}")
        head = cls._V2 if ver == 2 else cls._V3
        fields = head.unpack_from(data)
        _, m, v, n, since, streak, due, pv, ps, tail = fields[:10]
        pos = head.size
        ds, dr = PH_STRUCT.unpack_from(data, pos), PH_STRUCT.unpack_from(data, pos + PH_STRUCT.size)
        pos += 2 * PH_STRUCT.size
        if ver >= 4:
            sp, pos = SurpriseState.from_bytes(data, pos)
        season = SeasonalContext()
        if ver == 5:
            season, pos = SeasonalContext.from_bytes(data, pos)
        w = SeriesWindow.from_bytes(data[pos:])
        if ver < 4:
            sp = _migrated_surprise(w, m, v, n)
        max_ts = fields[10] if ver >= 3 else (w.last_ts_ms if w.n else NEVER_MS)
        return cls(w, None if n < 0 else (m, v, n), since, streak,
                   None if ds[0] == 0 else ds, None if dr[0] == 0 else dr,  # type: ignore[arg-type]
                   None if due < 0 else (due, pv, ps), tail, max_ts, sp, season)


def _migrated_surprise(w: SeriesWindow, mean: float, var: float, n: float) -> SurpriseState:
    """A surprise state for a series stored before v4: the adaptive threshold's running statistics of
    the detector's score (count ``n``, negative when it had none) and the range of the history."""
    if n < 0 or not w.ring:
        return SurpriseState()
    return SurpriseState([], int(n), mean, var, min(w.ring), max(w.ring))


_WINDOW_FIELDS = ("var", "mean", "fast", "last", "absdelta", "trend")


def _window_columns(wins: list[SeriesWindow], names: tuple[str, ...]
                    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Fields ``names`` of windows with full histories as arrays, and their robust (median, scale)."""
    cols = {f: np.array([getattr(w, f) for w in wins]) for f in names}
    med, scale = robust_rows(np.array([w.ring for w in wins]), cols["var"])
    return cols, med, scale


class SeriesLogic:
    """Scores one sample of one series against that series' own history."""

    def __init__(self, cfg: ScoringConfig, models: ModelBundle) -> None:
        self.cfg = cfg
        self.models = models
        self.drift_score = DriftTest(cfg.drift_score)
        self.drift_residual = DriftTest(cfg.drift_residual)

    def limit_for(self, metric: str) -> float | None:
        lim = self.cfg.limits.get(metric)
        if lim is None:
            lim = self.cfg.limits.get(metric_kind(metric))
        return None if lim is None else float(lim)

    def threshold(self, st: SeriesState, series: str, bar: float) -> float:
        """The bar a score must reach (``bar``: ``surprise.alert_at`` for a series that has learned its
        own past, else its adaptive threshold), with its tail narrowed by feedback and never below the
        floor the detector's manifest learned for this series from feedback."""
        thr = bar if st.fb_tail == 1.0 else 1.0 - (1.0 - bar) * st.fb_tail
        floor = self.models.detector.threshold_floor(series)
        return thr if floor is None else max(thr, floor)

    def on_record(self, state: SeriesState | None, ev: Any, entity_tag: str,
                  now_ms: int | None = None) -> tuple[SeriesState, Scored, list[tuple[str, str]]]:
        """Fold event ``ev`` (a :class:`udfs.parse.MetricEvent`) into ``state``: :meth:`on_round`
        with one event. Returns the new state, the scored sample and its side records."""
        st = state or SeriesState()
        scored, side = self.on_round([st], [ev], entity_tag, now_ms)
        return st, scored[0], side[0]

    def on_round(self, states: list[SeriesState], events: list[Any], entity_tag: str,
                 now_ms: int | None = None, effects: list[Effects] | None = None
                 ) -> tuple[list[Scored], list[list[tuple[str, str]]]]:
        """Fold one event of each of several different series into their states (updated in place).

        A round holds at most one event per series, so its events are independent: the detector and
        the forecaster (and their shadows) are called once for the whole round. Returns, per event,
        the scored sample and its side records as ``(kind, JSON)`` pairs: ``"forecast"`` (every
        ``forecast_every`` samples), ``"drift"`` (a drift test fired) and ``"shadow"`` (a shadow
        version's answer beside production's). The result does not depend on how events are cut
        into rounds, as long as each series' events come in order. ``effects``, per event, are the
        business rules that apply to it (:mod:`models.rules`): their sensitivity moves the bar.
        """
        m = self.models
        det_m, fc_m = m.detector, m.forecaster
        sh_det, sh_fc = m.shadow.get("detector"), m.shadow.get("forecaster")
        warmup = self.cfg.warmup
        n = len(events)
        sides: list[list[tuple[str, str]]] = [[] for _ in range(n)]
        robs: list[tuple[float, float] | None] = [None] * n
        dets: list[list[float] | None] = [None] * n
        # series with a full history, vectorised; the few still filling theirs, one by one
        full = [i for i, st in enumerate(states) if len(st.window.ring) == HISTORY]
        if full:
            fields, med, scale = _window_columns([states[i].window for i in full], _WINDOW_FIELDS)
            for i, m_, s_ in zip(full, med.tolist(), scale.tolist(), strict=True):
                robs[i] = (m_, s_)
            if warmup <= HISTORY:  # a full history is past the warm-up
                x = np.array([events[i].value for i in full])
                for i, row in zip(full, detector_feature_rows(x, med, scale, fields).tolist(), strict=True):
                    dets[i] = row
        for i, (st, ev) in enumerate(zip(states, events, strict=True)):
            w = st.window
            if robs[i] is None and w.n:
                robs[i] = w.robust()
            if dets[i] is None and w.n >= warmup:
                dets[i] = w.detector_features(ev.value, robs[i])
        warm = [i for i in range(n) if dets[i] is not None]
        det_rows = np.asarray([dets[i] for i in warm], dtype=np.float32) if warm else None
        evidence = det_m.score(det_rows) if det_rows is not None else np.empty(0)
        sh_evidence = sh_det.score(det_rows) if (det_rows is not None and sh_det is not None) else None
        sup_cfg = self.cfg.surprise
        score_of: dict[int, float] = {}
        evidence_of: dict[int, float] = {}
        thr_of: dict[int, float] = {}
        base_of: dict[int, float] = {}
        scored_before: dict[int, int] = {}
        trig = [""] * n
        if warm:
            # a young series (and every series while the surprise is off) is scored as the detector
            # scores it, against the series' adaptive threshold (the rule in the detector's manifest)
            adaptive = [det_m.new_threshold(states[i].threshold) for i in warm]
            bars = [at.threshold for at in adaptive]
            raws = evidence.tolist()
            scores = raws
            sh_scores = sh_evidence.tolist() if sh_evidence is not None else []
            if sup_cfg.enabled:
                sup_states = [states[i].surprise for i in warm]
                values = np.array([events[i].value for i in warm])
                learned = np.array([st.n >= sup_cfg.learn for st in sup_states])
                prior = np.array(bars)
                if sh_evidence is not None:
                    sh_scores = np.where(learned, surprise_round(sup_states, sh_evidence, values, sup_cfg, False,
                                                                 prior), sh_evidence).tolist()
                scores = np.where(learned, surprise_round(sup_states, evidence, values, sup_cfg, True, prior),
                                  evidence).tolist()
                bars = [sup_cfg.alert_at if ok else b for ok, b in zip(learned.tolist(), bars, strict=True)]
                surprised = learned.tolist()
            else:
                surprised = None
            for j, (i, score, raw) in enumerate(zip(warm, scores, raws, strict=True)):
                st, ev = states[i], events[i]
                score_of[i], evidence_of[i] = score, raw
                thr = thr_of[i] = self.threshold(st, ev.series, bars[j])
                if effects is not None and effects[i].sensitivity != 1.0:
                    base_of[i] = thr
                    # relative to the series' usual score: its detector's running mean, 0 for a surprise
                    usual = 0.0 if (surprised is not None and surprised[j]) else adaptive[j].mean
                    thr = thr_of[i] = lowered(thr, effects[i].sensitivity, usual)
                scored_before[i] = adaptive[j].n
                adaptive[j].update(raw)
                st.threshold = adaptive[j].to_tuple()
                if score >= thr:
                    trig[i] = "detector"
                st.drift_score, drifted = self.drift_score.update(st.drift_score, raw)
                if drifted:
                    sides[i].append(("drift", self._drift(ev, "detector_score", det_m.name, det_m.version,
                                                          self.drift_score, st.drift_score, now_ms)))
                if sh_det is not None:
                    s_score = sh_scores[j]
                    sides[i].append(("shadow", _shadow(ev, "detector", det_m.version, {
                        "score": round(score, 6), "threshold": round(thr, 6), "alert": score >= thr}, sh_det.version, {
                        "score": round(s_score, 6), "threshold": round(thr, 6), "alert": s_score >= thr})))
        due = []
        for i, (st, ev) in enumerate(zip(states, events, strict=True)):
            x = ev.value
            if st.pending is not None and ev.ts_ms >= st.pending[0]:
                resid = max(min((x - st.pending[1]) / st.pending[2], 1e3), -1e3)
                st.pending = None
                st.drift_residual, drifted = self.drift_residual.update(st.drift_residual, resid)
                if drifted:
                    sides[i].append(("drift", self._drift(ev, "forecast_residual", fc_m.name, fc_m.version,
                                                          self.drift_residual, st.drift_residual, now_ms)))
            w = st.window
            w.update(ev.ts_ms, x)
            st.season.update(ev.ts_ms, x)
            st.max_ts_ms = max(st.max_ts_ms, ev.ts_ms)
            st.since_forecast += 1
            if w.n >= warmup and (trig[i] or st.since_forecast >= self.cfg.forecast_every):
                due.append(i)
        fc_of: dict[int, tuple[dict, ...]] = {}
        sh_fc_of: dict[int, list[dict]] = {}
        if due:
            wins = [states[i].window for i in due]
            rows, meds, scales = forecaster_rows(wins, [states[i].season for i in due], [events[i].ts_ms for i in due])
            anchors = list(zip(meds.tolist(), scales.tolist(), strict=True))
            lattice = value_lattice(wins)
            scale_of = {i: sc for i, (_, sc) in zip(due, anchors, strict=True)}
            fc_of = {i: tuple(p) for i, p in zip(due, fc_m.forecast_batch(rows, anchors, lattice=lattice), strict=True)}
            if sh_fc is not None:
                sh_fc_of = dict(zip(due, sh_fc.forecast_batch(rows, anchors, lattice=lattice), strict=True))
        out = []
        for i, (st, ev) in enumerate(zip(states, events, strict=True)):
            x = ev.value
            trigger = trig[i]
            forecast = fc_of.get(i)
            ttb = None
            limit = self.limit_for(ev.metric)
            if forecast is not None:
                if st.pending is None:
                    h0 = forecast[0]
                    st.pending = (ev.ts_ms + 60_000 * h0["horizon_min"], h0["value"], scale_of[i])
                if limit is not None:
                    ttb = fc_m.time_to_breach(forecast, x, limit)
                    soon = ttb is not None and ttb <= self.cfg.breach_alert_within_min * 60
                    st.breach_streak = st.breach_streak + 1 if soon else 0
                    if not trigger and st.breach_streak >= self.cfg.breach_streak:
                        trigger = "forecast"
                if st.since_forecast >= self.cfg.forecast_every:
                    st.since_forecast = 0
                    sides[i].append(("forecast", ForecastRecord(
                        ev.series, ev.service, ev.metric, dict(ev.tags), iso(ev.ts_ms), x,
                        horizons=[_round_fc(f) for f in forecast], interval=0.8,
                        time_to_breach_s=None if ttb is None else round(ttb, 1), limit=limit,
                        model_version=fc_m.version).to_json()))
                    if sh_fc is not None:
                        sides[i].append(("shadow", _shadow(ev, "forecaster", fc_m.version,
                                                           {"horizons": [_round_fc(f) for f in forecast]},
                                                           sh_fc.version,
                                                           {"horizons": [_round_fc(f) for f in sh_fc_of[i]]})))
            rob = robs[i]
            det = dets[i]
            out.append(Scored(ev.series, ev.service, ev.metric, ev.tags, ev.tag(entity_tag), ev.ts_ms, x,
                              score_of.get(i, 0.0), thr_of.get(i, 1.0), trigger,
                              tuple(det) if det is not None else None, rob[0] if rob else x, forecast, ttb, limit,
                              Versions(det_m.version, fc_m.version), evidence_of.get(i, 0.0),
                              NONE if effects is None else effects[i], base_of.get(i), scored_before.get(i, 0)))
        return out, sides

    def on_feedback(self, state: SeriesState | None, fb: Feedback) -> SeriesState:
        """A verdict on an alert of this series: "false_positive" narrows the alerting bar's tail and
        stretches the series' range to hold the value it flagged last (it was normal after all),
        "resolved" (a true alert) widens it back towards the model's own; "ack" changes nothing."""
        st = state or SeriesState()
        if fb.verdict == "false_positive":
            st.fb_tail = max(st.fb_tail * self.cfg.feedback_tail_factor, 1e-3)
            st.surprise.accept_flagged()
        elif fb.verdict == "resolved":
            st.fb_tail = min(st.fb_tail / self.cfg.feedback_tail_factor, 1.0)
        return st

    @staticmethod
    def _drift(ev: Any, signal: str, model: str, version: str, test: DriftTest, ph: PHState,
               now_ms: int | None) -> str:
        return DriftRecord(ev.series, ev.service, ev.metric, dict(ev.tags), signal=signal, model=model,
                           model_version=version, detector="page_hinkley", event_time=iso(ev.ts_ms),
                           detected_at=iso(ev.ts_ms if now_ms is None else now_ms), stats=test.stats(ph)).to_json()


def _shadow(ev: Any, model: str, prod_version: str, prod: dict, shadow_version: str, shadow: dict) -> str:
    """One shadow comparison record (``vigil.shadow/v1``): what production and shadow said of one input."""
    return ShadowRecord(model, ev.series, ev.service, iso(ev.ts_ms), production={"version": prod_version, **prod},
                        shadow={"version": shadow_version, **shadow}).to_json()


def score_json(s: Scored) -> str:
    """One scored sample as JSON (``vigil.score/v1``): what the detector said of every row."""
    return ScoreRecord(s.series, s.ts_ms, s.value, score=round(s.score, 6), threshold=round(s.threshold, 6),
                       trigger=s.trigger, evidence=round(s.evidence, 6)).to_json()


def _round_fc(f: dict) -> dict:
    return {"horizon_min": f["horizon_min"], "value": _r(f["value"]), "lower": _r(f["lower"]),
            "upper": _r(f["upper"])}


def _r(v: float) -> float:
    return float(f"{v:.6g}")


class Candidate(NamedTuple):
    """A scored sample the entity logic raised for classification: why, where, and the classifier input.

    ``inputs`` is the dict passed to :func:`models.features.classifier_features`, unchanged; the
    job classifies it and training labels it, so both see the same thing.
    """

    scored: Scored
    trigger: str  # "detector" | "forecast" | "cluster"
    cluster: Assignment | None  # the entity's cluster assignment
    related: tuple[str, ...]  # other series of the service with a candidate in the last 5 minutes
    context: dict[str, Any]  # service context, defaults filled in
    inputs: dict[str, Any]

    def features(self) -> list[float]:
        """The classifier's feature row (``CLASSIFIER_FEATURES`` order)."""
        return classifier_features(self.inputs)


class EntityState:
    """Per-service state (state name ``entity_state/v4``), in an explicit binary layout.

    It is read and written on every record, so its encoding is most of what the entity operator
    costs: the numbers are packed arrays (entities x ``ENTITY_METRICS`` latest values, entities x 5
    cluster assignments, k x d float32 centroids), and the small, irregular parts (``recent``
    candidates, open alert ``groups``, ``feedback`` verdict weights) are a JSON tail that is decoded
    only when the logic touches them (on a candidate or a verdict) and otherwise copied through as
    bytes. v3 added ``last_ts_ms``, the latest event time of a sample folded in (what says the
    service has gone quiet); v4 the service's rule ``windows`` (deployments and maintenance from the
    events topic, :mod:`models.rules`), a small JSON part read on every decode. v3, v2 and v1 (all
    JSON) are still read (no windows; ``last_ts_ms`` of v2 and v1 from the latest cluster
    evaluation): a restored state migrates on its first write.
    """

    _HEAD = struct.Struct("<BHHBHqH")  # version, entities, k, d, bytes of names, last_ts_ms, bytes of windows
    _HEAD_V3 = struct.Struct("<BHHBHq")
    _HEAD_V2 = struct.Struct("<BHHBH")
    VERSION = 4
    _NM = len(ENTITY_METRICS)
    _COLD = ("recent", "groups", "feedback")

    def __init__(self, latest: dict[str, dict[str, float]] | None = None,
                 clusters: dict[str, Assignment] | None = None, centroids: np.ndarray | None = None,
                 centroids_of: str | None = None, recent: list[list[Any]] | None = None,
                 groups: dict[str, dict[str, Any]] | None = None, feedback: dict[str, list[float]] | None = None,
                 tail: bytes | None = None, last_ts_ms: int = NEVER_MS, windows: list[Window] | None = None) -> None:
        self.last_ts_ms = last_ts_ms  # the latest event time of a sample folded in
        self.windows = windows if windows is not None else []  # open rule windows, by start
        self.latest = latest if latest is not None else {}
        self.clusters = clusters if clusters is not None else {}  # entity -> its latest assignment
        self.centroids = centroids  # (k, d) float32, adapted online
        self.centroids_of = centroids_of  # clusterer version the centroids were adapted from
        self._tail = tail  # the encoded cold part, while nobody has asked for it
        self._cold: dict[str, Any] = {}
        if tail is None:
            self._cold = {"recent": recent or [], "groups": groups or {}, "feedback": feedback or {}}

    def forget(self) -> None:
        """Become the state of a service never seen, but for its rule windows (announced, not learned)."""
        self.latest, self.clusters, self.centroids, self.centroids_of = {}, {}, None, None
        self._tail, self._cold = None, {"recent": [], "groups": {}, "feedback": {}}
        self.last_ts_ms = NEVER_MS

    def drop_peer(self, entity: str) -> None:
        """Forget one entity of the service: its latest values and cluster assignment."""
        self.clusters.pop(entity, None)
        self.latest.pop(entity, None)

    def has_cold(self) -> bool:
        """Whether the irregular part (candidates, groups, verdicts) holds anything."""
        return bool(self._tail) if self._tail is not None else any(self._cold.values())

    def _cold_part(self) -> dict[str, Any]:
        if self._tail is not None:
            recent, groups, feedback = json.loads(self._tail) if self._tail else ([], {}, {})
            self._cold = {"recent": recent, "groups": groups, "feedback": feedback}
            self._tail = None  # touched: re-encoded on the next write
        return self._cold

    @property
    def recent(self) -> list[list[Any]]:
        """``[ts_ms, series]`` of the service's recent candidates."""
        return self._cold_part()["recent"]

    @recent.setter
    def recent(self, v: list[list[Any]]) -> None:
        self._cold_part()["recent"] = v

    @property
    def groups(self) -> dict[str, dict[str, Any]]:
        """Open alert group per category."""
        return self._cold_part()["groups"]

    @property
    def feedback(self) -> dict[str, list[float]]:
        """Per category, decayed weights of ``[false_positive, true]`` verdicts from the feedback topic."""
        return self._cold_part()["feedback"]

    def to_bytes(self) -> bytes:
        names = list(self.latest) + [e for e in self.clusters if e not in self.latest]
        nm = self._NM
        nan = math.nan
        lat = [nan] * (len(names) * nm)
        clu = [nan] * (len(names) * 5)
        for i, e in enumerate(names):
            row = self.latest.get(e)
            if row:
                for j, m in enumerate(ENTITY_METRICS):
                    v = row.get(m)
                    if v is not None:
                        lat[i * nm + j] = v
            c = self.clusters.get(e)
            if c is not None:
                clu[i * 5:i * 5 + 5] = c
        name_b = "\x1f".join(names).encode()
        of_b = (self.centroids_of or "").encode()
        cents = b"" if self.centroids is None else np.ascontiguousarray(self.centroids, dtype=np.float32).tobytes()
        k, d = (0, 0) if self.centroids is None else self.centroids.shape
        win_b = json.dumps([list(w) for w in self.windows], separators=(",", ":")).encode() if self.windows else b""
        tail = self._tail
        if tail is None:
            cold = self._cold
            tail = json.dumps([cold["recent"], cold["groups"], cold["feedback"]], separators=(",", ":")).encode() \
                if (cold["recent"] or cold["groups"] or cold["feedback"]) else b""
        return b"".join((
            self._HEAD.pack(self.VERSION, len(names), k, d, len(name_b), self.last_ts_ms, len(win_b)), name_b,
            struct.pack("<B", len(of_b)), of_b,
            struct.pack(f"<{len(lat) + len(clu)}d", *lat, *clu), cents, win_b, tail,
        ))

    @classmethod
    def from_bytes(cls, data: bytes) -> EntityState:
        if data[:1] == b"{":
            return cls._from_v1(data)
        ver = data[0]
        nw = 0
        if ver == cls.VERSION:
            _, n, k, d, nb, last_ts, nw = cls._HEAD.unpack_from(data)
            pos = cls._HEAD.size
        elif ver == 3:
            _, n, k, d, nb, last_ts = cls._HEAD_V3.unpack_from(data)
            pos = cls._HEAD_V3.size
        elif ver == 2:
            _, n, k, d, nb = cls._HEAD_V2.unpack_from(data)
            last_ts, pos = None, cls._HEAD_V2.size
        else:
            raise ValueError(f"{ENTITY_STATE}: cannot read state version {ver}")
        names = data[pos:pos + nb].decode().split("\x1f") if n else []
        pos += nb
        lo = data[pos]
        of = data[pos + 1:pos + 1 + lo].decode() or None
        pos += 1 + lo
        nm = cls._NM
        nums = struct.unpack_from(f"<{n * (nm + 5)}d", data, pos)
        pos += 8 * n * (nm + 5)
        latest: dict[str, dict[str, float]] = {}
        clusters: dict[str, Assignment] = {}
        for i, e in enumerate(names):
            row = {m: v for m, v in zip(ENTITY_METRICS, nums[i * nm:i * nm + nm], strict=True) if v == v}
            if row:
                latest[e] = row
            c = nums[n * nm + i * 5:n * nm + i * 5 + 5]
            if c[0] == c[0]:
                clusters[e] = Assignment(*c)
        cents = None
        if k:
            cents = np.frombuffer(data, dtype=np.float32, count=k * d, offset=pos).reshape(k, d).copy()
            pos += 4 * k * d
        windows = [Window(*w) for w in json.loads(bytes(data[pos:pos + nw]))] if nw else []
        pos += nw
        if last_ts is None:
            last_ts = int(max((c[0] for c in clusters.values()), default=NEVER_MS))
        return cls(latest, clusters, cents, of, tail=bytes(data[pos:]), last_ts_ms=last_ts, windows=windows)

    @classmethod
    def _from_v1(cls, data: bytes) -> EntityState:
        d = json.loads(data)
        if d.get("v") != 1:
            raise ValueError(f"{ENTITY_STATE}: cannot read state version {d.get('v')}")
        cents = None if d["centroids"] is None else np.asarray(d["centroids"], dtype=np.float32)
        last_ts = int(max((c[0] for c in d["clusters"].values()), default=NEVER_MS))
        clusters = {e: Assignment(*c) for e, c in d["clusters"].items()}
        return cls(d["latest"], clusters, cents, d["centroids_of"], d["recent"], d["groups"], last_ts_ms=last_ts)


class EntityLogic:
    """Turns scored samples of one service into alerts: cluster, classify, weigh, group.

    Built without a classifier (``models.classifier is None``) it can only raise candidates.
    """

    def __init__(self, scoring: ScoringConfig, alerts: AlertConfig, models: ModelBundle,
                 context: Callable[[str], dict[str, Any]], ttl_s: int = StateConfig.series_ttl_s) -> None:
        self.scoring = scoring
        self.alerts = alerts
        self.models = models
        self.context = context
        self.ttl_ms = ttl_s * 1000  # a peer, or a whole service, quiet this long (event time) is forgotten

    def _cluster(self, st: EntityState, entity: str, s: Scored, side: list[tuple[str, str]] | None
                 ) -> Assignment | None:
        """Re-assign ``entity`` at most once per ``cluster_reassign_s`` of event time; adapt the centroids
        on points the clusterer finds normal (outlier score below ``cluster_adapt_below``)."""
        ts_ms = s.ts_ms
        cl = self.models.clusterer
        prev = st.clusters.get(entity)
        if prev is not None and ts_ms - prev.eval_ts_ms < self.scoring.cluster_reassign_s * 1000:
            return prev
        vec = entity_vector(st.latest.get(entity, {}))
        if all(v is None for v in vec):
            return None
        if st.centroids is None or st.centroids_of != cl.version:
            st.centroids, st.centroids_of = np.asarray(cl.centroids, dtype=np.float32), cl.version
        cents = st.centroids
        full = cl.impute(vec, cents)
        cid, dist, outlier = cl.assign(full, cents)
        shadow = self.models.shadow.get("clusterer")
        if shadow is not None and side is not None:
            s_cid, s_dist, s_out = shadow.assign(full)  # its trained centroids: nothing adapted them yet
            side.append(("shadow", _shadow(s, "clusterer", cl.version, {
                "cluster": cid, "distance": round(dist, 6), "outlier_score": round(outlier, 6),
                "alert": outlier >= self.scoring.cluster_alert_above}, shadow.version, {
                "cluster": s_cid, "distance": round(s_dist, 6), "outlier_score": round(s_out, 6),
                "alert": s_out >= self.scoring.cluster_alert_above})))
        if outlier < self.scoring.cluster_adapt_below and self.scoring.cluster_adapt_rate > 0:
            st.centroids = np.asarray(cl.adapt(cents, cid, full, self.scoring.cluster_adapt_rate), dtype=np.float32)
        high = outlier >= self.scoring.cluster_alert_above
        streak = (prev.streak + 1 if prev is not None else 1.0) if high else 0.0
        res = Assignment(float(ts_ms), float(cid), dist, outlier, streak)
        st.clusters[entity] = res
        return res

    def _moved(self, st: EntityState, entity: str | None, cluster: Assignment | None) -> list[float]:
        """How far each of the entity's metrics (``ENTITY_METRICS``, the clusterer's scale) lies from its
        cluster's centroid: which metric moved it (zeros without an entity or a cluster)."""
        if entity is None or cluster is None or st.centroids is None:
            return [0.0] * len(ENTITY_METRICS)
        cents = st.centroids
        full = self.models.clusterer.impute(entity_vector(st.latest.get(entity, {})), cents)
        centre = cents[int(cluster.cluster_id)]
        return [float(v - c) for v, c in zip(full, centre.tolist(), strict=True)]

    def candidate(self, state: EntityState, s: Scored, side: list[tuple[str, str]] | None = None
                  ) -> Candidate | None:
        """Fold scored sample ``s`` into ``state`` (updated in place); the candidate it raises, if any.

        This is the whole of candidate construction, shared by the job (:meth:`on_record`) and
        training (:func:`training.candidates.build_candidates`): the entity's latest metric values
        and cluster assignment (centroids adapted online), the trigger ("detector" or "forecast"
        from the series, else "cluster" when the entity's outlier score has stayed at or above
        ``cluster_alert_above`` for three evaluations), the related series, and the classifier
        input. It needs the clusterer but not the classifier. A shadow clusterer's assignment is
        appended to ``side`` when one is given.
        """
        st = state
        if st.last_ts_ms != NEVER_MS and s.ts_ms - st.last_ts_ms > self.ttl_ms:
            st.forget()  # the service was quiet past the ttl: start afresh, as after a sweep
        st.last_ts_ms = max(st.last_ts_ms, s.ts_ms)
        entity = s.entity
        cluster = None
        trigger = s.trigger
        if entity is not None:
            prev = st.clusters.get(entity)
            if prev is not None and s.ts_ms - prev.eval_ts_ms > self.ttl_ms:  # this peer was quiet past the ttl
                st.drop_peer(entity)
            if s.metric in ENTITY_METRICS:
                st.latest.setdefault(entity, {})[s.metric] = s.value
            cluster = self._cluster(st, entity, s, side)
            if (not trigger and cluster is not None and cluster.streak >= self.scoring.cluster_streak
                    and s.metric in ENTITY_METRICS and s.det is not None and cluster.eval_ts_ms == float(s.ts_ms)):
                trigger = "cluster"
        if not trigger:
            return None
        st.recent = [r for r in st.recent if s.ts_ms - r[0] <= RELATED_WINDOW_MS]
        related = sorted({r[1] for r in st.recent if r[1] != s.series})
        st.recent.append([s.ts_ms, s.series])
        ctx = {**DEFAULT_CONTEXT, **(self.context(s.service) or {})}
        det = list(s.det) if s.det is not None else [0.0] * len(DETECTOR_FEATURES)
        if trigger == "cluster":
            score, threshold = cluster.outlier, self.scoring.cluster_alert_above  # type: ignore[union-attr]
        else:
            score, threshold = s.score, s.threshold
        inputs = {
            "score": score, "threshold": threshold, "det": det,
            "moved": self._moved(st, entity, cluster),
            "cluster_outlier": cluster.outlier if cluster else 0.0, "time_to_breach_s": s.time_to_breach_s,
            "criticality": float(ctx["criticality"]), "related_anomalies": len(related), "ts_ms": s.ts_ms,
            "metric": s.metric, "owner": ctx["owner"], "text": f"{s.service} {s.metric} {ctx['description']}",
        }
        return Candidate(s, trigger, cluster, tuple(related), ctx, inputs)

    def on_record(self, state: EntityState | None, s: Scored, now_ms: int
                  ) -> tuple[EntityState, list[str], list[tuple[str, str]]]:
        """Fold one scored sample in; return the new state, the alerts (JSON) to emit, and side records
        as ``(kind, JSON)`` pairs (``"shadow"``: a shadow classifier's or clusterer's answer beside
        production's)."""
        if self.models.classifier is None:
            raise ValueError("EntityLogic.on_record needs a classifier: this EntityLogic was built from a "
                             "ModelBundle without one, which can only raise candidates (EntityLogic.candidate)")
        st = state or EntityState()
        side: list[tuple[str, str]] = []
        closed: list[str] = []
        if st.last_ts_ms != NEVER_MS and s.ts_ms - st.last_ts_ms > self.ttl_ms and st.has_cold():
            closed = self.close_quiet(st, s.ts_ms, now_ms)  # the service is forgotten next: resolve first
        cand = self.candidate(st, s, side)
        if cand is None:
            return st, closed, side
        return st, closed + self._alert(st, cand, now_ms, side), side

    def close_quiet(self, st: EntityState, clock_ms: int, now_ms: int) -> list[str]:
        """Resolve and drop the alert groups with no candidate for ``alerts.dedup_window_s`` by event time
        ``clock_ms``; the ``resolved`` revisions (JSON) to emit. What they say depends only on the group,
        never on when this runs (a sweep, or the service's next candidate)."""
        window = self.alerts.dedup_window_s * 1000
        out = []
        for cat in [c for c, g in st.groups.items() if clock_ms - g["last"] > window]:
            g = st.groups.pop(cat)
            last = g.get("alert")
            if last is None:  # a group from before alerts were kept in it (entity_state/v2): nothing to revise
                continue
            out.append(AlertRecord.revised_json(
                last, revision=g["revision"] + 1, status="resolved", severity=g["severity"],
                window={"start": iso(g["start"]), "end": iso(g["last"]), "candidates": g["count"]},
                endsAt=iso(g["last"] + window), emitted_at=iso(now_ms), related_series=g["related"]))
        return out

    def expire(self, st: EntityState, clock_ms: int, now_ms: int) -> tuple[str, list[str]]:
        """Drop what has gone quiet by the shard's clock ``clock_ms``: peers and the whole service past
        the ttl, alert groups past the grouping window (resolving them), candidates past the related
        window. Returns ``"gone"`` (delete the whole state), ``"changed"`` or ``"kept"``, and the
        ``resolved`` alerts to emit. Nothing it drops could still change an output: the logic treats
        all of it as absent already."""
        resolved = self.close_quiet(st, clock_ms, now_ms) if st.has_cold() else []
        windows = [w for w in st.windows if w.end_ms > clock_ms]  # a window still to come keeps the service
        if clock_ms - st.last_ts_ms > self.ttl_ms and not windows:
            return "gone", resolved
        changed = bool(resolved) or len(windows) != len(st.windows)
        st.windows = windows
        for e in [e for e, c in st.clusters.items() if clock_ms - c.eval_ts_ms > self.ttl_ms]:
            st.drop_peer(e)
            changed = True
        if st.has_cold():
            recent = [r for r in st.recent if clock_ms - r[0] <= RELATED_WINDOW_MS]
            if len(recent) != len(st.recent):
                st.recent = recent
                changed = True
        return ("changed" if changed else "kept"), resolved

    def on_feedback(self, state: EntityState | None, fb: Feedback) -> EntityState:
        """A verdict on an alert of this service: weigh it into the category's verdicts.

        "false_positive" and "resolved" (true) count, older verdicts decaying by ``feedback_decay``
        each time; "ack" is not a verdict on truth and changes nothing.
        """
        st = state or EntityState()
        if fb.verdict in ("false_positive", "resolved"):
            decay = self.alerts.feedback_decay
            w = st.feedback.get(fb.category, [0.0, 0.0])
            st.feedback[fb.category] = [w[0] * decay + (fb.verdict == "false_positive"),
                                        w[1] * decay + (fb.verdict == "resolved")]
        return st

    def fp_probability(self, st: EntityState, category: str, model_fp: float) -> float:
        """The classifier's false-positive probability, moved towards the share of "false positive"
        verdicts this service's alerts of ``category`` received (weighted as ``feedback_prior`` verdicts)."""
        w = st.feedback.get(category) if st.feedback else None
        if not w:
            return model_fp
        prior = self.alerts.feedback_prior
        return (model_fp * prior + w[0]) / (prior + w[0] + w[1])

    def _alert(self, st: EntityState, c: Candidate, now_ms: int, side: list[tuple[str, str]]) -> list[str]:
        """Classify, weigh and group candidate ``c``; the alert (JSON) to emit, if any."""
        m = self.models
        classifier = m.classifier
        assert classifier is not None  # checked in on_record
        s, trigger, cluster, related, ctx = c.scored, c.trigger, c.cluster, c.related, c.context
        score, threshold, det = c.inputs["score"], c.inputs["threshold"], c.inputs["det"]
        row = classifier_features(c.inputs)
        cls = classifier.predict_proba(row)
        category = max(cls["category"], key=cls["category"].get)
        model_priority = max(cls["priority"], key=cls["priority"].get)
        team = max(cls["team"], key=cls["team"].get)
        fp = self.fp_probability(st, category, cls["fp"])
        # false-positive-prone alerts (by the model, or by people's verdicts) lose a priority level
        demoted = fp >= self.alerts.demote_fp_above and model_priority != PRIORITIES[-1]
        priority = PRIORITIES[PRIORITIES.index(model_priority) + 1] if demoted else model_priority
        shadow = m.shadow.get("classifier")
        if shadow is not None:
            sc = shadow.predict_proba(row)
            side.append(("shadow", _shadow(s, "classifier", classifier.version, _top(cls), shadow.version, _top(sc))))
        if trigger == "forecast":
            ttb = s.time_to_breach_s or 0.0
            severity = ("critical" if ttb < self.alerts.breach_critical_s
                        else "high" if ttb < self.alerts.breach_high_s else "medium")
        elif trigger == "cluster":
            severity = "high" if score >= self.alerts.cluster_high_above else "medium"
        else:
            severity = m.detector.severity(score, threshold)
        likely_false = fp >= self.alerts.suppress_fp_above
        # a series the detector has scored fewer than learning_scores times pages critical alerts only
        learning = trigger == "detector" and s.scored_before < self.alerts.learning_scores and severity != "critical"
        eff = s.effects
        suppressed = likely_false or learning or eff.maintenance is not None

        out = self.close_quiet(st, s.ts_ms, now_ms)  # this category's group too, if it has gone quiet
        group = st.groups.get(category)
        if group is not None:
            group["last"] = s.ts_ms
            group["count"] += 1
            if s.series not in group["related"] and len(group["related"]) < self.alerts.max_related:
                group["related"].append(s.series)
            escalate = SEVERITY_RANK[severity] > SEVERITY_RANK[group["severity"]]
            reopen = group["suppressed"] and not suppressed
            mute = eff.maintenance is not None and not group["suppressed"]  # a window began: silence it
            if not (escalate or reopen or mute):
                return out
            group["revision"] += 1
            group["severity"] = max(severity, group["severity"], key=SEVERITY_RANK.__getitem__)
            group["suppressed"] = suppressed
            status = "suppressed" if eff.maintenance is not None else ("escalated" if escalate else "open")
        else:
            fingerprint = hashlib.sha1(f"{s.service}|{category}".encode()).hexdigest()[:16]
            alert_id = hashlib.sha1(f"{fingerprint}|{s.ts_ms}".encode()).hexdigest()[:20]
            group = {"alert_id": alert_id, "fingerprint": fingerprint, "start": s.ts_ms, "last": s.ts_ms,
                     "count": 1, "revision": 0, "severity": severity, "suppressed": suppressed,
                     "related": [s.series]}
            st.groups[category] = group
            status = "suppressed" if suppressed else "open"

        n_entities = max(sum(1 for c in st.clusters.values() if s.ts_ms - c.eval_ts_ms <= self.ttl_ms), 1)
        involved = {split_series_key(r)[2] for r in group["related"]}
        frac = 1.0 if s.entity is None else min(len(involved) / n_entities, 1.0)
        explanation = m.detector.explain(det)[:3]
        fc = s.forecast
        alert = AlertRecord(
            alert_id=group["alert_id"],
            fingerprint=group["fingerprint"],
            revision=group["revision"],
            status=status,
            trigger=trigger,
            series={"key": s.series, "service": s.service, "metric": s.metric, "tags": dict(s.tags),
                    "entity": s.entity},
            window={"start": iso(group["start"]), "end": iso(s.ts_ms), "candidates": group["count"]},
            startsAt=iso(group["start"]),
            endsAt=None,  # set on the "resolved" revision
            event_time=iso(s.ts_ms),
            emitted_at=iso(now_ms),
            value=_r(s.value),
            expected_value=_r(s.expected),
            anomaly={"score": round(score, 4), "threshold": round(threshold, 4),
                     "detector_score": round(s.score, 4)},
            severity=severity,
            priority=priority,
            category=category,
            team=team,
            false_positive_probability=round(fp, 4),
            classifier={"priority": _rd(cls["priority"]), "category": _rd(cls["category"]),
                        "team": _rd(cls["team"]), "fp": round(cls["fp"], 4), "priority_demoted": demoted,
                        "features": [round(v, 6) for v in row]},
            feedback=_feedback_summary(st.feedback.get(category) if st.feedback else None),
            impact=business_impact(category, severity, ctx, frac),
            forecast={
                "interval": 0.8,
                "horizons": [_round_fc(f) for f in fc] if fc else [],
                "time_to_breach_s": None if s.time_to_breach_s is None else round(s.time_to_breach_s, 1),
                "limit": s.limit,
            },
            cluster=None if cluster is None else {
                "id": int(cluster.cluster_id), "distance": round(cluster.distance, 4),
                "outlier_score": round(cluster.outlier, 4)},
            explanation={
                "top_features": [{"feature": f, "deviation_iqr": round(v, 3)} for f, v in explanation],
                "summary": _summary(s, trigger, explanation, cluster),
                "rules": _rule_notes(s, trigger, score, likely_false or learning),
            },
            suppressed_by=([*(["false_positive_probability"] if likely_false else []),
                            *(["learning"] if learning else []),
                            *(["maintenance"] if eff.maintenance is not None else [])]),
            deploying=eff.deploy is not None,
            recommended_actions=recommended_actions(category, s.metric, s.service, s.entity, trigger,
                                                    s.time_to_breach_s, s.limit, len(related)),
            related_series=group["related"],
            models={"detector": s.versions.detector, "forecaster": s.versions.forecaster,
                    "clusterer": m.clusterer.version, "classifier": classifier.version},
        )
        group["alert"] = alert.to_dict()  # what the "resolved" revision will repeat
        return out + [alert.to_json()]


def _rule_notes(s: Scored, trigger: str, score: float, suppressed_anyway: bool) -> list[dict[str, Any]]:
    """The business rules that applied to the alert's sample, and whether each changed the outcome:
    a lowered bar when the score cleared only the lowered one, maintenance when it alone suppressed
    (``suppressed_anyway``: something else suppressed the alert too)."""
    eff = s.effects
    if eff is NONE:
        return []
    by_bar = trigger == "detector" and s.base_threshold is not None and score < s.base_threshold
    out = []
    for rule, effect in eff.notes():
        changed = by_bar if rule in ("peak_hours", "deploy") else not suppressed_anyway
        if by_bar and rule in ("peak_hours", "deploy"):
            effect += f" (bar {s.base_threshold:.4f} -> {s.threshold:.4f})"
        out.append({"rule": rule, "effect": effect, "changed_outcome": changed})
    return out


def _top(cls: dict[str, Any]) -> dict[str, Any]:
    return {"priority": max(cls["priority"], key=cls["priority"].get),
            "category": max(cls["category"], key=cls["category"].get),
            "team": max(cls["team"], key=cls["team"].get), "fp": round(cls["fp"], 6)}


def _feedback_summary(w: list[float] | None) -> dict[str, float] | None:
    """The decayed verdict weights that moved the false-positive probability, or None without feedback."""
    return None if not w else {"false_positive": round(w[0], 4), "true": round(w[1], 4)}


def _rd(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in d.items()}


def _summary(s: Scored, trigger: str, explanation: list[tuple[str, float]],
             cluster: Assignment | None) -> str:
    where = f"{s.service}/{s.entity}" if s.entity else s.service
    if trigger == "forecast" and s.time_to_breach_s is not None:
        return (f"{s.metric} of {where} is {s.value:.4g} and forecast to cross {s.limit:g} "
                f"in {s.time_to_breach_s / 3600:.1f} h.")
    if trigger == "cluster" and cluster is not None:
        return (f"{where} has moved away from its peers' cluster {int(cluster.cluster_id)} "
                f"(distance {cluster.distance:.3f}, outlier score {cluster.outlier:.2f}).")
    feats = ", ".join(f"{f} {v:+.1f} IQR" for f, v in explanation)
    return f"{s.metric} of {where} is {s.value:.4g} where {s.expected:.4g} was expected; driven by {feats}."

