"""A labelled metrics generator for a music-streaming fleet.

Used for three things: the demo stream that ``make run`` replays, training data for the first
model versions (with other seeds and other incident placements), and test fixtures. Every
injected incident is returned as a label (kind, entity, affected series, start and end), so
detection can be scored rather than eyeballed.

Times are epoch milliseconds (UTC). Values follow daily seasonality, noise and per-service
baselines; incidents change them in the ways real incidents do.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from udfs import parse

MINUTE_MS = 60_000

SERVICES: dict[str, dict] = {
    "api-gateway": {
        "owner": "edge",
        "criticality": 0.9,
        "revenue_per_min": 180.0,
        "users": 2_400_000,
        "description": "public API edge, auth and routing",
        "base": {"cpu_util": 45, "memory_util": 50, "latency_p99_ms": 120, "error_rate": 0.002,
                 "requests_per_s": 2400, "disk_util": 35},
    },
    "playback": {
        "owner": "playback",
        "criticality": 1.0,
        "revenue_per_min": 260.0,
        "users": 3_100_000,
        "description": "audio streaming sessions and licences",
        "base": {"cpu_util": 60, "memory_util": 55, "latency_p99_ms": 250, "error_rate": 0.001,
                 "requests_per_s": 1500, "disk_util": 48},
    },
    "search": {
        "owner": "discovery",
        "criticality": 0.6,
        "revenue_per_min": 40.0,
        "users": 900_000,
        "description": "catalogue search index",
        "base": {"cpu_util": 35, "memory_util": 70, "latency_p99_ms": 80, "error_rate": 0.003,
                 "requests_per_s": 800, "disk_util": 62},
    },
    "recommendations": {
        "owner": "discovery",
        "criticality": 0.5,
        "revenue_per_min": 60.0,
        "users": 1_500_000,
        "description": "personalised playlists and radio",
        "base": {"cpu_util": 70, "memory_util": 65, "latency_p99_ms": 400, "error_rate": 0.004,
                 "requests_per_s": 500, "disk_util": 30},
    },
    "payments": {
        "owner": "payments",
        "criticality": 1.0,
        "revenue_per_min": 420.0,
        "users": 300_000,
        "description": "subscriptions billing and checkout",
        "base": {"cpu_util": 25, "memory_util": 40, "latency_p99_ms": 300, "error_rate": 0.002,
                 "requests_per_s": 120, "disk_util": 40},
    },
}
METRICS = ("cpu_util", "memory_util", "latency_p99_ms", "error_rate", "requests_per_s", "disk_util")
LIMITS = {"cpu_util": 100.0, "memory_util": 100.0, "disk_util": 100.0, "error_rate": 0.05}
# How each metric shipped: disk comes through Telegraf's JSON output, the rest in the native shape.
TELEGRAF_METRICS = {"disk_util": ("disk", "util")}

INCIDENT_KINDS = ("spike", "level_shift", "memory_leak", "correlated_failure", "peer_drift")


@dataclass(frozen=True)
class Incident:
    """One injected incident: what, where, and when (epoch ms, end exclusive)."""

    id: str
    kind: str
    service: str
    instance: str | None
    metrics: tuple[str, ...]
    start_ms: int
    end_ms: int
    category: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["metrics"] = list(self.metrics)
        return d


@dataclass
class Scenario:
    """A generated stream: events in time order, and the incidents injected into it."""

    events: list[dict] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    start_ms: int = 0
    end_ms: int = 0


def series_key(service: str, metric: str, tags: dict[str, str]) -> str:
    """The canonical series id, as the job's parser builds it."""
    return parse.series_key(service, metric, tuple(sorted(tags.items())))


def _seasonal(metric: str, t_ms: int) -> float:
    hour = (t_ms / 3_600_000.0) % 24.0
    day = math.sin(2 * math.pi * (hour - 9.0) / 24.0)  # peak in the evening (UTC+0 listeners)
    if metric in ("requests_per_s",):
        return 1.0 + 0.35 * day
    if metric in ("cpu_util",):
        return 1.0 + 0.2 * day
    if metric in ("latency_p99_ms",):
        return 1.0 + 0.1 * day
    return 1.0


def demo_incidents(start_ms: int, hours: float) -> list[Incident]:
    """The fixed incident plan of the demo stream, placed relative to its length."""
    h = lambda x: start_ms + int(x * hours / 8.0 * 3_600_000)  # noqa: E731
    return [
        Incident("inc-spike", "spike", "search", "i-3", ("latency_p99_ms",), h(2.0), h(2.0) + 4 * MINUTE_MS,
                 "latency"),
        Incident("inc-shift", "level_shift", "payments", "i-1", ("error_rate",), h(3.0), h(8.0), "errors"),
        Incident("inc-leak", "memory_leak", "playback", "i-2", ("memory_util",), h(1.0), h(8.0), "saturation"),
        Incident("inc-outage", "correlated_failure", "recommendations", None,
                 ("latency_p99_ms", "error_rate", "cpu_util", "requests_per_s"), h(5.0), h(5.0) + 15 * MINUTE_MS,
                 "errors"),
        Incident("inc-drift", "peer_drift", "api-gateway", "i-5", ("cpu_util", "latency_p99_ms"), h(4.0), h(8.0),
                 "peer_drift"),
    ]


def random_incidents(rng: np.random.Generator, start_ms: int, hours: float, count: int) -> list[Incident]:
    """Incidents of every kind at random places, for training data."""
    out = []
    services = list(SERVICES)
    span = int(hours * 3_600_000)
    for i in range(count):
        kind = INCIDENT_KINDS[i % len(INCIDENT_KINDS)]
        svc = services[int(rng.integers(len(services)))]
        inst = f"i-{int(rng.integers(8))}"
        s = start_ms + int(rng.uniform(0.15, 0.8) * span)
        if kind == "spike":
            m = (str(rng.choice(["latency_p99_ms", "error_rate", "cpu_util", "requests_per_s"])),)
            out.append(Incident(f"tr-{i}", kind, svc, inst, m, s, s + int(rng.integers(2, 8)) * MINUTE_MS,
                                _category(m[0])))
        elif kind == "level_shift":
            m = (str(rng.choice(["latency_p99_ms", "error_rate", "cpu_util"])),)
            out.append(Incident(f"tr-{i}", kind, svc, inst, m, s, s + int(rng.integers(30, 180)) * MINUTE_MS,
                                _category(m[0])))
        elif kind == "memory_leak":
            m = (str(rng.choice(["memory_util", "disk_util"])),)
            out.append(Incident(f"tr-{i}", kind, svc, inst, m, s, start_ms + span, "saturation"))
        elif kind == "correlated_failure":
            out.append(Incident(f"tr-{i}", kind, svc, None,
                                ("latency_p99_ms", "error_rate", "cpu_util", "requests_per_s"), s,
                                s + int(rng.integers(5, 30)) * MINUTE_MS, "errors"))
        else:
            out.append(Incident(f"tr-{i}", kind, svc, inst, ("cpu_util", "latency_p99_ms"), s, start_ms + span,
                                "peer_drift"))
    return out


def _category(metric: str) -> str:
    return {"latency_p99_ms": "latency", "error_rate": "errors", "cpu_util": "saturation",
            "memory_util": "saturation", "disk_util": "saturation", "requests_per_s": "traffic"}.get(metric, "traffic")


def _effect(inc: Incident, metric: str, t: int, value: float, base: float, rng_val: float) -> float:
    """The value of ``metric`` at ``t`` under incident ``inc`` (already known to be active)."""
    frac = (t - inc.start_ms) / max(inc.end_ms - inc.start_ms, 1)
    if inc.kind == "spike":
        return value * (5.0 + rng_val) if metric != "requests_per_s" else value * 0.3
    if inc.kind == "level_shift":
        return value * (12.0 if metric == "error_rate" else 2.0)
    if inc.kind == "memory_leak":
        return min(base + (99.0 - base) * frac, 99.5) + (value - base) * 0.3
    if inc.kind == "correlated_failure":
        return {"latency_p99_ms": value * 4.0, "error_rate": max(value * 20.0, 0.08),
                "cpu_util": value * 0.35, "requests_per_s": value * 0.6}[metric]
    # peer drift: slow, steady movement away from the other instances
    return value + (30.0 * min(frac * 2, 1.0) if metric == "cpu_util" else value * 0.9 * min(frac * 2, 1.0))


def generate(
    seed: int = 7,
    hours: float = 8.0,
    start_ms: int = 1_780_000_000_000 - (1_780_000_000_000 % 3_600_000),
    instances: int = 8,
    step_s: int = 60,
    incidents: list[Incident] | None = None,
    business_metric: bool = True,
) -> Scenario:
    """Generate a labelled stream of native/Telegraf metric events, ordered by timestamp.

    >>> s = generate(hours=1, instances=1, incidents=[])
    >>> len(s.events) == 60 * (len(SERVICES) * len(METRICS) + 1)
    True
    """
    rng = np.random.default_rng(seed)
    if incidents is None:
        incidents = demo_incidents(start_ms, hours)
    n_steps = int(hours * 3600 // step_s)
    insts = [f"i-{i}" for i in range(instances)]
    # each instance differs a little from its peers, as real hosts do
    offsets = {(s, i, m): rng.normal(1.0, 0.04) for s in SERVICES for i in insts for m in METRICS}
    noise = {"cpu_util": 0.04, "memory_util": 0.01, "latency_p99_ms": 0.06, "error_rate": 0.15,
             "requests_per_s": 0.03, "disk_util": 0.005}
    events: list[dict] = []
    for step in range(n_steps):
        t = start_ms + step * step_s * 1000
        for svc, spec in SERVICES.items():
            active = [inc for inc in incidents if inc.service == svc and inc.start_ms <= t < inc.end_ms]
            for inst in insts:
                for m in METRICS:
                    base = spec["base"][m] * offsets[(svc, inst, m)]
                    v = base * _seasonal(m, t) * (1.0 + noise[m] * rng.standard_normal())
                    if m == "disk_util":
                        v = base + 0.002 * step  # disks fill slowly
                    for inc in active:
                        if m in inc.metrics and (inc.instance is None or inc.instance == inst):
                            v = _effect(inc, m, t, v, base, float(rng.random()))
                    if m in ("cpu_util", "memory_util", "disk_util"):
                        v = min(max(v, 0.0), 100.0)
                    v = max(v, 0.0)
                    events.append(_event(svc, inst, m, round(v, 6), t))
        if business_metric:
            plays = 52_000 * _seasonal("requests_per_s", t) * (1.0 + 0.02 * rng.standard_normal())
            for inc in incidents:
                if inc.service == "playback" and inc.kind == "correlated_failure" and inc.start_ms <= t < inc.end_ms:
                    plays *= 0.5
            events.append({"metric": "plays_per_min", "value": round(plays, 3), "timestamp": t,
                           "service": "playback", "tags": {"region": "eu-west"}})
    return Scenario(events=events, incidents=list(incidents), start_ms=start_ms,
                    end_ms=start_ms + n_steps * step_s * 1000)


def _event(svc: str, inst: str, metric: str, value: float, t: int) -> dict:
    if metric in TELEGRAF_METRICS:
        name, fld = TELEGRAF_METRICS[metric]
        return {"name": name, "fields": {fld: value}, "tags": {"service": svc, "instance": inst},
                "timestamp": t // 1000}
    return {"metric": metric, "value": value, "timestamp": t, "service": svc, "tags": {"instance": inst}}


def incident_series(inc: Incident, instances: int = 8) -> list[str]:
    """Series keys an incident touches (in the parsed, canonical form)."""
    insts = [inc.instance] if inc.instance else [f"i-{i}" for i in range(instances)]
    return [series_key(inc.service, m, {"instance": i}) for i in insts for m in inc.metrics]
