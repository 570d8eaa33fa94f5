"""Validated, frozen configuration of the scoring logic, and the validation helpers all configs share.

Unknown keys and bad values fail when the job is built, with messages in scikit-learn's style:
"The 'dedup_window_s' parameter of AlertConfig must be a positive integer. Got -5."
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A configuration value or key is not acceptable."""


def _name(obj: object) -> str:
    return type(obj).__name__


def check_positive_int(obj: object, name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and (value > 0 or (allow_zero and value == 0))
    if not ok:
        kind = "a non-negative integer" if allow_zero else "a positive integer"
        raise ConfigError(f"The '{name}' parameter of {_name(obj)} must be {kind}. Got {value!r}.")


def check_number(obj: object, name: str, value: Any, low: float, high: float) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (low <= value <= high):
        raise ConfigError(f"The '{name}' parameter of {_name(obj)} must be a number in [{low}, {high}]. Got {value!r}.")


def check_choice(obj: object, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"The '{name}' parameter of {_name(obj)} must be one of {list(choices)}. Got {value!r}.")


def check_str(obj: object, name: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"The '{name}' parameter of {_name(obj)} must be a non-empty string. Got {value!r}.")


def build(cls: type, data: dict | None, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys by name."""
    data = dict(data or {})
    if not isinstance(data, dict):
        raise ConfigError(f"The '{where}' section must be a mapping. Got {type(data).__name__}.")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"Unknown key(s) {unknown} in section '{where}' ({cls.__name__}). Known keys: {sorted(known)}."
        )
    return cls(**data)


@dataclass(frozen=True)
class DriftConfig:
    """Page-Hinkley parameters of one signal (river's names: ``delta`` tolerance, ``threshold`` lambda)."""

    min_instances: int = 30
    delta: float = 0.05
    threshold: float = 5.0
    alpha: float = 1 - 1e-4

    def __post_init__(self) -> None:
        check_positive_int(self, "min_instances", self.min_instances)
        check_number(self, "delta", self.delta, 0.0, 1e9)
        check_number(self, "threshold", self.threshold, 1e-9, 1e12)
        check_number(self, "alpha", self.alpha, 0.5, 1.0)


def _nested(obj: object, name: str, cls: type) -> None:
    """Build a nested config section given as a mapping (frozen dataclasses need object.__setattr__)."""
    v = getattr(obj, name)
    if isinstance(v, dict) or v is None:
        object.__setattr__(obj, name, build(cls, v, f"{_name(obj)}.{name}"))
    elif not isinstance(v, cls):
        raise ConfigError(f"The '{name}' parameter of {_name(obj)} must be a mapping. Got {v!r}.")


@dataclass(frozen=True)
class SurpriseConfig:
    """How the detector's evidence becomes a self-normalised score per series (:mod:`models.surprise`).

    The averaging window (10) is that of Numenta's HTM detector in NAB; the memory is about 1,000
    samples and the alerting bar 0.5 (a 1-in-10^5 average on that series). The range rule is
    stricter than HTM's (20% of the range instead of 5%, after 100 samples, and only where the
    detector's own score is high): HTM's settings raised the false detections on the synthetic
    fleet, whose series are hours, not weeks, long, far above the old detector's.
    """

    enabled: bool = False  # off: every series is scored as a young one (the detector's score, adaptive bar)
    short: int = 10  # samples averaged before comparing with the series' past
    long_alpha: float = 0.001  # weight of a new sample in the distribution of that average
    learn: int = 100  # samples before a series' surprise counts (0 before)
    range_tolerance: float = 0.2  # beyond the range seen by this share of it: surprise 1.0
    range_evidence_z: float = 2.0  # ... if the detector's score is this many sds above its usual average
    range_absorb: float = 0.5  # share of the excess by which such a value stretches the range (1: all)
    refractory: int = 30  # samples damped after a score at or above alert_at
    damp: float = 0.45  # damping factor in the refractory period (below alert_at)
    alert_at: float = 0.5  # the bar a surprise must reach to raise a candidate alert

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"The 'enabled' parameter of SurpriseConfig must be true or false. Got {self.enabled!r}.")
        check_positive_int(self, "short", self.short)
        check_number(self, "long_alpha", self.long_alpha, 1e-9, 1.0)
        check_positive_int(self, "learn", self.learn, allow_zero=True)
        check_number(self, "range_tolerance", self.range_tolerance, 0.0, 1e6)
        check_number(self, "range_absorb", self.range_absorb, 0.0, 1.0)
        if not isinstance(self.range_evidence_z, (int, float)) or math.isnan(self.range_evidence_z):
            raise ConfigError(f"The 'range_evidence_z' parameter of SurpriseConfig must be a number. "
                              f"Got {self.range_evidence_z!r}.")
        check_positive_int(self, "refractory", self.refractory, allow_zero=True)
        check_number(self, "alert_at", self.alert_at, 1e-6, 1.0)
        check_number(self, "damp", self.damp, 0.0, 1.0)
        if self.damp >= self.alert_at:
            raise ConfigError(f"The 'damp' parameter of SurpriseConfig must be below alert_at ({self.alert_at}), "
                              f"so that a damped score never reaches the bar. Got {self.damp!r}.")


@dataclass(frozen=True)
class ScoringConfig:
    """How series are scored: warm-up, forecast cadence, limits for time-to-breach, entity grouping."""

    warmup: int = 20
    forecast_every: int = 5
    breach_alert_within_min: int = 360
    limits: dict[str, float] = field(
        default_factory=lambda: {"memory_util": 100.0, "disk_util": 100.0, "cpu_util": 100.0, "error_rate": 0.05}
    )
    entity_tag: str = "instance"
    cluster_adapt_rate: float = 0.01
    cluster_alert_above: float = 0.9
    cluster_reassign_s: int = 60  # an entity is re-assigned to a cluster at most this often (event time)
    cluster_adapt_below: float = 0.5  # centroids adapt only to points with an outlier score below this
    cluster_streak: int = 3  # evaluations in a row at or above cluster_alert_above that raise a candidate
    breach_streak: int = 2  # forecasts in a row that breach a limit in time that raise a candidate
    # Page-Hinkley drift tests per series: on the detector's score, and on the forecaster's
    # 5-minute residual in units of the series' robust scale
    drift_score: DriftConfig = field(default_factory=DriftConfig)
    drift_residual: DriftConfig = field(default_factory=lambda: DriftConfig(delta=0.5, threshold=50.0))
    # a "false positive" verdict multiplies the series' threshold tail (1 - threshold) by this
    feedback_tail_factor: float = 0.5
    surprise: SurpriseConfig = field(default_factory=SurpriseConfig)

    def __post_init__(self) -> None:
        _nested(self, "surprise", SurpriseConfig)
        _nested(self, "drift_score", DriftConfig)
        _nested(self, "drift_residual", DriftConfig)
        check_number(self, "feedback_tail_factor", self.feedback_tail_factor, 0.01, 1.0)
        check_positive_int(self, "warmup", self.warmup)
        check_positive_int(self, "forecast_every", self.forecast_every)
        check_positive_int(self, "breach_alert_within_min", self.breach_alert_within_min)
        if not isinstance(self.limits, dict):
            raise ConfigError(f"The 'limits' parameter of ScoringConfig must be a mapping. Got {self.limits!r}.")
        for k, v in self.limits.items():
            check_number(self, f"limits.{k}", v, -1e300, 1e300)
        check_str(self, "entity_tag", self.entity_tag)
        check_number(self, "cluster_adapt_rate", self.cluster_adapt_rate, 0.0, 1.0)
        check_number(self, "cluster_alert_above", self.cluster_alert_above, 0.0, 1.0)
        check_positive_int(self, "cluster_reassign_s", self.cluster_reassign_s, allow_zero=True)
        check_number(self, "cluster_adapt_below", self.cluster_adapt_below, 0.0, 1.0)
        check_positive_int(self, "cluster_streak", self.cluster_streak)
        check_positive_int(self, "breach_streak", self.breach_streak)


# Detector scores a series needs before a detector alert below critical pages. On fleet scenarios no
# training role uses (``python -m bench.learning``, reports/learning.md), a series' false detector
# candidates come 16 to 62 per 10 scores until its 70th score, then 1 to 12 (median 6).
LEARNING_SCORES = 70


@dataclass(frozen=True)
class AlertConfig:
    """How candidates become alerts: grouping window and false-positive suppression."""

    dedup_window_s: int = 1800
    suppress_fp_above: float = 0.9
    # a detector alert below critical on a series the detector has scored fewer times than this is
    # written suppressed (suppressed_by "learning"): a young series' false alerts come in bursts;
    # 0 turns the learning period off
    learning_scores: int = LEARNING_SCORES
    max_related: int = 20
    # verdicts from the alert-feedback topic, per service and category: each new verdict decays
    # the older ones by feedback_decay; they weigh against the classifier's own estimate as if
    # it were feedback_prior verdicts; alerts likelier than demote_fp_above to be false lose a
    # priority level
    feedback_decay: float = 0.9
    feedback_prior: float = 2.0
    demote_fp_above: float = 0.5
    # severity of a forecast alert by its time to breach, and of a cluster alert by its outlier score
    breach_critical_s: int = 1800
    breach_high_s: int = 7200
    cluster_high_above: float = 0.97

    def __post_init__(self) -> None:
        check_positive_int(self, "learning_scores", self.learning_scores, allow_zero=True)
        check_positive_int(self, "breach_critical_s", self.breach_critical_s)
        check_positive_int(self, "breach_high_s", self.breach_high_s)
        if self.breach_high_s < self.breach_critical_s:
            raise ConfigError(f"The 'breach_high_s' parameter of AlertConfig must be at least breach_critical_s "
                              f"({self.breach_critical_s}). Got {self.breach_high_s!r}.")
        check_number(self, "cluster_high_above", self.cluster_high_above, 0.0, 1.0)
        check_number(self, "feedback_decay", self.feedback_decay, 0.0, 1.0)
        check_number(self, "feedback_prior", self.feedback_prior, 0.0, 1e6)
        check_number(self, "demote_fp_above", self.demote_fp_above, 0.0, 1.0)
        check_positive_int(self, "dedup_window_s", self.dedup_window_s)
        check_number(self, "suppress_fp_above", self.suppress_fp_above, 0.0, 1.0)
        check_positive_int(self, "max_related", self.max_related)


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class WeeklyHours:
    """Hours of chosen weekdays in a time zone, for some services or all: ``hours`` is ``[start, end)``
    in local hours 0-24 (start > end wraps past midnight, into the next day)."""

    services: tuple[str, ...] = ()  # empty: every service
    timezone: str = "UTC"
    days: tuple[str, ...] = DAYS
    hours: tuple[int, int] = (0, 24)

    def __post_init__(self) -> None:
        for name in ("services", "days", "hours"):
            v = getattr(self, name)
            if not isinstance(v, (list, tuple)):
                raise ConfigError(f"The '{name}' parameter of {_name(self)} must be a list. Got {v!r}.")
            object.__setattr__(self, name, tuple(v))
        for s in self.services:
            check_str(self, "services[]", s)
        for d in self.days:
            check_choice(self, "days[]", d, DAYS)
        if not self.days:
            raise ConfigError(f"The 'days' parameter of {_name(self)} must name at least one day. Got [].")
        if len(self.hours) != 2:
            raise ConfigError(f"The 'hours' parameter of {_name(self)} must be [start, end]. Got {list(self.hours)!r}.")
        check_positive_int(self, "hours[0]", self.hours[0], allow_zero=True)
        check_positive_int(self, "hours[1]", self.hours[1], allow_zero=True)
        if self.hours[0] > 23 or self.hours[1] > 24 or self.hours[0] == self.hours[1]:
            raise ConfigError(f"The 'hours' parameter of {_name(self)} must be [start, end] with 0 <= start <= 23, "
                              f"end <= 24 and start != end. Got {list(self.hours)!r}.")
        try:
            from zoneinfo import ZoneInfo
            ZoneInfo(self.timezone)
        except Exception:  # noqa: BLE001 - ZoneInfoNotFoundError, ValueError on a malformed key
            raise ConfigError(f"The 'timezone' parameter of {_name(self)} must be an IANA time zone such as "
                              f"'Europe/Stockholm'. Got {self.timezone!r}.") from None


@dataclass(frozen=True)
class PeakHours(WeeklyHours):
    """Hours in which a service's bar is more (or less) sensitive: the margin between a series' usual
    score and its bar is divided by ``sensitivity`` (2.0 halves it; 0.5 doubles it)."""

    sensitivity: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number(self, "sensitivity", self.sensitivity, 0.01, 100.0)


@dataclass(frozen=True)
class MaintenanceHours(WeeklyHours):
    """A recurring maintenance window: alerts of its services are suppressed, and say why."""

    reason: str = "scheduled maintenance"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_str(self, "reason", self.reason)


@dataclass(frozen=True)
class RulesConfig:
    """Business rules (:mod:`models.rules`): peak hours, deployment and maintenance windows.

    Windows also open at run time: a ``deploy`` or ``maintenance`` event on the events topic
    (``vigil.ops-event/v1``), or the ``deploy_until`` / ``maintenance_until`` fields of a service's
    Redis hash. During a deployment the margin of the service's bars is divided by ``deploy_sensitivity``
    and its alerts are marked ``deploying``; a service keeps its latest ``max_windows`` windows.
    """

    peak_hours: tuple[PeakHours, ...] = ()
    maintenance: tuple[MaintenanceHours, ...] = ()
    deploy_sensitivity: float = 2.0
    max_windows: int = 16

    def __post_init__(self) -> None:
        for name, cls in (("peak_hours", PeakHours), ("maintenance", MaintenanceHours)):
            v = getattr(self, name)
            if not isinstance(v, (list, tuple)):
                raise ConfigError(f"The '{name}' parameter of RulesConfig must be a list of mappings. Got {v!r}.")
            items = []
            for i, item in enumerate(v):
                if isinstance(item, dict):
                    item = build(cls, item, f"rules.{name}[{i}]")
                elif not isinstance(item, cls):
                    raise ConfigError(f"Item {i} of 'rules.{name}' must be a mapping. Got {item!r}.")
                items.append(item)
            object.__setattr__(self, name, tuple(items))
        check_number(self, "deploy_sensitivity", self.deploy_sensitivity, 0.01, 100.0)
        check_positive_int(self, "max_windows", self.max_windows)


@dataclass(frozen=True)
class StateConfig:
    """How keyed state stays bounded (quiet time is event time: the shard's latest event time).

    A series with no event for ``series_ttl_s`` starts afresh on its next event and is deleted by the
    next sweep; so is an entity (peer) of a service, and a service whose entities, candidates and
    alert groups are all that quiet. A service holds at most ``max_series_per_service`` series: an
    event of a new series past the cap is a dead letter ``too_many_series``. The job sweeps every
    ``sweep_interval_s`` of processing time (a Flink timer per shard).
    """

    series_ttl_s: int = 86400
    max_series_per_service: int = 10000
    sweep_interval_s: int = 60

    def __post_init__(self) -> None:
        check_positive_int(self, "series_ttl_s", self.series_ttl_s)
        check_positive_int(self, "max_series_per_service", self.max_series_per_service)
        check_positive_int(self, "sweep_interval_s", self.sweep_interval_s)
