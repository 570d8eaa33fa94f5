"""Training datasets: labelled scenarios replayed through the same feature code the job runs.

Everything a model is trained on comes from :mod:`training.simulate` scenarios replayed event
by event through :class:`models.features.SeriesWindow`, so a feature means the same thing
offline and in the stream. Labels come from the incidents each scenario injected.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from models.features import (
    DETECTOR_FEATURES,
    ENTITY_METRICS,
    FORECAST_HORIZONS_MIN,
    FORECASTER_FEATURES,
    SeriesWindow,
    entity_vector,
    forecaster_rows,
)
from models.season import SeasonalContext
from training.simulate import Incident, Scenario, generate, incident_series, random_incidents, series_key

MINUTE_MS = 60_000
LABEL_MARGIN_MS = 10 * MINUTE_MS  # an alert up to 10 min after an incident ends still belongs to it


@dataclass(frozen=True, slots=True)
class Sample:
    """One metric sample in canonical form."""

    service: str
    metric: str
    tags: dict[str, str]
    ts_ms: int
    value: float

    @property
    def key(self) -> str:
        return series_key(self.service, self.metric, self.tags)

    @property
    def instance(self) -> str | None:
        return self.tags.get("instance")


def normalise_event(e: dict) -> Sample:
    """Map a native ``{"metric","value","timestamp"(ms),"service","tags"}`` event or a Telegraf
    ``{"name","fields","tags":{"service",...},"timestamp"(s)}`` event to a :class:`Sample`.

    Telegraf: metric = ``name + "_" + field``, service taken out of the tags, seconds to ms.

    >>> normalise_event({"name": "disk", "fields": {"util": 40.0}, "timestamp": 5,
    ...                  "tags": {"service": "search", "instance": "i-1"}}).metric
    'disk_util'
    """
    if "fields" in e:
        tags = dict(e.get("tags") or {})
        service = str(tags.pop("service"))
        (fld, value), = e["fields"].items()
        return Sample(service, f"{e['name']}_{fld}", {str(k): str(v) for k, v in tags.items()},
                      int(e["timestamp"]) * 1000, float(value))
    return Sample(str(e["service"]), str(e["metric"]), {str(k): str(v) for k, v in (e.get("tags") or {}).items()},
                  int(e["timestamp"]), float(e["value"]))


def iter_steps(events: Iterable[dict]) -> Iterator[tuple[int, list[Sample]]]:
    """Group a time-ordered event stream into ``(ts_ms, samples)`` per timestamp."""
    cur_ts: int | None = None
    batch: list[Sample] = []
    for e in events:
        s = normalise_event(e)
        if s.ts_ms != cur_ts:
            if batch:
                yield cur_ts, batch  # type: ignore[misc]
            cur_ts, batch = s.ts_ms, []
        batch.append(s)
    if batch:
        yield cur_ts, batch  # type: ignore[misc]


@dataclass(frozen=True)
class ScenarioSpec:
    """How to generate one labelled training scenario (all randomness from ``seed``)."""

    seed: int
    hours: float = 8.0
    instances: int = 8
    n_incidents: int = 10

    def build(self) -> Scenario:
        """The scenario: random incidents of every kind, mapped onto the instances that exist."""
        start = 1_780_000_000_000 - (1_780_000_000_000 % 3_600_000)
        rng = np.random.default_rng(10_000 + self.seed)
        incs = random_incidents(rng, start, self.hours, self.n_incidents)
        incs = [dataclasses.replace(i, id=f"s{self.seed}-{i.id}",
                                    instance=None if i.instance is None
                                    else f"i-{int(i.instance.split('-')[1]) % self.instances}")
                for i in incs]
        return generate(seed=self.seed, hours=self.hours, start_ms=start, instances=self.instances, incidents=incs)

    def source(self) -> dict:
        return {"generator": "training.simulate.generate", "seed": self.seed, "hours": self.hours,
                "instances": self.instances, "incidents": "random_incidents", "n_incidents": self.n_incidents}


class IncidentIndex:
    """Which incident (if any) covers a series or an entity at a time, with the label margin."""

    def __init__(self, incidents: list[Incident], instances: int, margin_ms: int = LABEL_MARGIN_MS) -> None:
        self.margin_ms = margin_ms
        self.by_series: dict[str, list[Incident]] = {}
        self.by_entity: dict[tuple[str, str], list[Incident]] = {}
        for inc in sorted(incidents, key=lambda i: (i.start_ms, i.id)):
            for key in incident_series(inc, instances):
                self.by_series.setdefault(key, []).append(inc)
            insts = [inc.instance] if inc.instance else [f"i-{i}" for i in range(instances)]
            for inst in insts:
                self.by_entity.setdefault((inc.service, inst), []).append(inc)

    def series_incident(self, key: str, ts_ms: int) -> Incident | None:
        """The earliest incident whose window ``[start, end + margin]`` holds ``ts_ms`` on series ``key``."""
        for inc in self.by_series.get(key, ()):
            if inc.start_ms <= ts_ms <= inc.end_ms + self.margin_ms:
                return inc
        return None

    def entity_incidents(self, service: str, instance: str, ts_ms: int, margin_ms: int | None = None) -> list[Incident]:
        m = self.margin_ms if margin_ms is None else margin_ms
        return [i for i in self.by_entity.get((service, instance), ()) if i.start_ms <= ts_ms <= i.end_ms + m]


@dataclass
class DetectorData:
    """Detector feature rows of every warm sample of a scenario, with labels."""

    X: np.ndarray  # (n, 6) float32, DETECTOR_FEATURES order
    label: np.ndarray  # (n,) bool: inside an incident window (label margin included)
    clean: np.ndarray  # (n,) bool: far from any incident on this series (safe to treat as normal)
    series: np.ndarray  # (n,) int index into keys
    step: np.ndarray  # (n,) int timestamp index
    kind: np.ndarray  # (n,) str: incident kind or ""
    incident: np.ndarray  # (n,) int index into incidents, -1 if none
    keys: list[str]
    incidents: list[Incident]
    # series keys each incident touches (recall counts them); None: the generator's incident_series
    incident_keys: list[list[str]] | None = None

    @classmethod
    def from_rows(cls, rows: list, meta: list, kind: list[str], keys: list[str], incidents: list[Incident],
                  incident_keys: list[list[str]] | None) -> DetectorData:
        """From the rows a replay collected: feature rows, ``(series, step, label, clean, incident)``
        per row, and each row's incident kind."""
        m = np.asarray(meta, dtype=np.int64).reshape(-1, 5)
        return cls(X=np.asarray(rows, dtype=np.float32).reshape(-1, len(DETECTOR_FEATURES)),
                   label=m[:, 2].astype(bool), clean=m[:, 3].astype(bool), series=m[:, 0], step=m[:, 1],
                   kind=np.asarray(kind, dtype=object), incident=m[:, 4], keys=keys, incidents=incidents,
                   incident_keys=incident_keys)


@dataclass
class EntityData:
    """Entity vectors (one per service instance and step, complete vectors only), with labels."""

    X: np.ndarray  # (m, d) float32, CLUSTERER_FEATURES order
    entity: np.ndarray  # (m,) int index into entities
    step: np.ndarray  # (m,) int
    kind: np.ndarray  # (m,) str: kind of an incident touching the entity ("" if none)
    frac: np.ndarray  # (m,) float: progress through that incident (0..1), 0 if none
    entities: list[tuple[str, str]]


@dataclass
class ForecastData:
    """Forecaster rows (one per horizon) with normalised targets and raw values for evaluation."""

    X: np.ndarray  # (r, 11) float32, FORECASTER_FEATURES order
    y: np.ndarray  # (r,) float64: (x(t+h) - anchor) / scale, the anchor the robust median of the window
    horizon: np.ndarray  # (r,) int minutes
    anchor: np.ndarray  # (r,)
    scale: np.ndarray  # (r,)
    actual: np.ndarray  # (r,) x(t+h)
    last: np.ndarray  # (r,) x(t), the last value at the origin (the naive forecast)
    origin: np.ndarray  # (r,) int: id of the forecast origin (series, step) the row belongs to
    step: np.ndarray  # (r,) int: step index of the origin (minutes into the scenario at 60 s steps)
    series: np.ndarray  # (r,) int index into keys
    kind: np.ndarray  # (r,) str: incident kind on the series at the origin ("" if none)
    keys: list[str] = field(default_factory=list)
    dropped: int = 0  # rows left out because their target lay beyond training.sources.FORECAST_TARGET_LIMIT


@dataclass
class Extract:
    scenario: Scenario
    spec: ScenarioSpec
    detector: DetectorData | None
    entities: EntityData | None
    forecast: ForecastData | None


def extract(spec: ScenarioSpec, *, detector: bool = True, entities: bool = True, forecast_every: int = 0,
            clean_margin_ms: int = 90 * MINUTE_MS) -> Extract:
    """Replay ``spec``'s scenario once and collect the requested datasets.

    ``forecast_every`` > 0 emits forecaster rows at every n-th step of each warm series whose
    largest horizon still lies inside the scenario. ``clean`` marks detector rows at least
    ``clean_margin_ms`` after any incident on the series ended (state has recovered).
    """
    sc = spec.build()
    index = IncidentIndex(sc.incidents, spec.instances)
    keys: dict[str, int] = {}
    windows: list[SeriesWindow] = []
    seasons: list[SeasonalContext] = []
    inc_ids = {inc.id: i for i, inc in enumerate(sc.incidents)}

    det_rows: list[list[float]] = []
    det_meta: list[tuple[int, int, int, int, int]] = []  # series, step, label, clean, incident
    det_kind: list[str] = []

    ents: dict[tuple[str, str], int] = {}
    latest: dict[tuple[str, str], dict[str, float]] = {}
    ent_rows: list[list[float]] = []
    ent_meta: list[tuple[int, int, float]] = []
    ent_kind: list[str] = []

    values: dict[int, dict[int, float]] = {}
    origins: list[tuple[int, int, np.ndarray, float, float, float]] = []
    step_ms = 0
    t0 = sc.start_ms
    for ts, samples in iter_steps(sc.events):
        if step_ms == 0 and ts > t0:
            step_ms = ts - t0
        step = (ts - t0) // step_ms if step_ms else 0
        for s in samples:
            key = s.key
            si = keys.get(key)
            if si is None:
                si = keys[key] = len(windows)
                windows.append(SeriesWindow())
                seasons.append(SeasonalContext())
            w = windows[si]
            if detector and w.warm:
                inc = index.series_incident(key, ts)
                clean = not any(i.start_ms - 5 * MINUTE_MS <= ts <= i.end_ms + clean_margin_ms
                                for i in index.by_series.get(key, ()))
                det_rows.append(w.detector_features(s.value))
                det_meta.append((si, step, inc is not None, clean, inc_ids[inc.id] if inc else -1))
                det_kind.append(inc.kind if inc else "")
            w.update(ts, s.value)
            seasons[si].update(ts, s.value)
            if forecast_every and w.warm and step % forecast_every == 0:
                rows, anchor, scale = forecaster_rows([w], [seasons[si]], [ts])
                origins.append((si, step, rows, float(anchor[0]), float(scale[0]), s.value))
            if forecast_every:
                values.setdefault(si, {})[step] = s.value
            if entities and s.instance is not None and s.metric in ENTITY_METRICS:
                latest.setdefault((s.service, s.instance), {})[s.metric] = s.value
        if entities:
            for ent, vals in latest.items():
                if len(vals) < len(ENTITY_METRICS):
                    continue
                ei = ents.setdefault(ent, len(ents))
                touching = index.entity_incidents(ent[0], ent[1], ts)
                touching = [i for i in touching if set(i.metrics) & set(ENTITY_METRICS)]
                inc = touching[0] if touching else None
                ent_rows.append(entity_vector(vals))  # type: ignore[arg-type]
                frac = (ts - inc.start_ms) / max(inc.end_ms - inc.start_ms, 1) if inc else 0.0
                ent_meta.append((ei, step, min(max(frac, 0.0), 1.0)))
                ent_kind.append(inc.kind if inc else "")

    det = None
    if detector:
        det = DetectorData.from_rows(det_rows, det_meta, det_kind, list(keys), sc.incidents,
                                     [incident_series(inc, spec.instances) for inc in sc.incidents])
    ent_data = None
    if entities:
        em = np.asarray(ent_meta, dtype=np.float64).reshape(-1, 3)
        ent_data = EntityData(X=np.asarray(ent_rows, dtype=np.float32).reshape(-1, len(ENTITY_METRICS)),
                              entity=em[:, 0].astype(np.int64), step=em[:, 1].astype(np.int64), frac=em[:, 2],
                              kind=np.asarray(ent_kind, dtype=object), entities=list(ents))
    fc = None
    if forecast_every:
        fc = _forecast_targets(origins, values, step_ms, keys, index, t0)
    return Extract(sc, spec, det, ent_data, fc)


def _forecast_targets(origins: list, values: dict[int, dict[int, float]], step_ms: int, keys: dict[str, int],
                      index: IncidentIndex, t0: int) -> ForecastData:
    key_list = list(keys)
    X, y, hz, anc, sc_, act, lst, org, stp, ser, kind = [], [], [], [], [], [], [], [], [], [], []
    max_h = FORECAST_HORIZONS_MIN[-1]
    for oid, (si, step, rows, anchor, scale, last) in enumerate(origins):
        vals = values[si]
        if step + max_h * MINUTE_MS // step_ms not in vals:
            continue
        inc = index.series_incident(key_list[si], t0 + step * step_ms)
        for i, h in enumerate(FORECAST_HORIZONS_MIN):
            future = vals[step + h * MINUTE_MS // step_ms]
            X.append(rows[i])
            y.append((future - anchor) / scale)
            hz.append(h)
            anc.append(anchor)
            sc_.append(scale)
            act.append(future)
            lst.append(last)
            org.append(oid)
            stp.append(step)
            ser.append(si)
            kind.append(inc.kind if inc else "")
    return ForecastData(
        X=np.asarray(X, dtype=np.float32).reshape(-1, len(FORECASTER_FEATURES)), y=np.asarray(y, dtype=np.float64),
        horizon=np.asarray(hz, dtype=np.int64), anchor=np.asarray(anc), scale=np.asarray(sc_),
        actual=np.asarray(act), last=np.asarray(lst, dtype=np.float64), origin=np.asarray(org, dtype=np.int64),
        step=np.asarray(stp, dtype=np.int64), series=np.asarray(ser, dtype=np.int64),
        kind=np.asarray(kind, dtype=object), keys=key_list)


def fingerprint(*arrays: np.ndarray, sources: Iterable[dict] = ()) -> str:
    """SHA-256 over the exact training arrays (dtype, shape, bytes) and their source descriptions."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes() if a.dtype != object else "\x1f".join(map(str, a.ravel())).encode())
    for s in sources:
        h.update(repr(sorted(s.items())).encode())
    return "sha256:" + h.hexdigest()
