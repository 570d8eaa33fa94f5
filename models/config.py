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

    def __post_init__(self) -> None:
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


@dataclass(frozen=True)
class AlertConfig:
    """How candidates become alerts: grouping window and false-positive suppression."""

    dedup_window_s: int = 1800
    suppress_fp_above: float = 0.9
    max_related: int = 20

    def __post_init__(self) -> None:
        check_positive_int(self, "dedup_window_s", self.dedup_window_s)
        check_number(self, "suppress_fp_above", self.suppress_fp_above, 0.0, 1.0)
        check_positive_int(self, "max_related", self.max_related)
