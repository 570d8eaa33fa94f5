"""The job's configuration: one YAML file per job in ``flink-conf/``, validated when the job is built.

String values may reference the environment as ``${NAME}`` or ``${NAME:-default}``. Kafka client
options (security among them: ``security.protocol``, ``sasl.*``, ``ssl.*``) pass through from
``kafka.properties`` and from environment variables ``VIGIL_KAFKA_PROP_<NAME>`` (``SASL_MECHANISM``
becomes ``sasl.mechanism``), the environment winning.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from models.config import (
    AlertConfig,
    ConfigError,
    RulesConfig,
    ScoringConfig,
    StateConfig,
    build,
    check_choice,
    check_number,
    check_positive_int,
    check_str,
)
from udfs.parse import ParseLimits

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "flink-conf" / "vigil.yaml"
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def project_path(path: str) -> Path:
    """A configured path: absolute as given, else relative to the project root."""
    p = Path(path)
    return p if p.is_absolute() else ROOT / p


@dataclass(frozen=True)
class TopicsConfig:
    metrics: str = "vigil.metrics"
    alerts: str = "vigil.alerts"
    forecasts: str = "vigil.forecasts"
    dead_letters: str = "vigil.deadletters"
    scores: str | None = None  # every scored sample (for evaluation, e.g. NAB); off when None
    model_updates: str = "vigil.model-updates"  # compacted; the registry writes, operators swap
    model_events: str = "vigil.model-events"  # what each operator did with an update, and why
    feedback: str = "vigil.alert-feedback"  # in: people's verdicts on alerts (vigil.feedback/v1)
    drift: str = "vigil.drift"  # out: drift events of the per-series Page-Hinkley tests
    shadow: str = "vigil.shadow"  # out: shadow versions' answers beside production's
    events: str = "vigil.events"  # in: deployments and maintenance (vigil.ops-event/v1) that open rule windows

    def __post_init__(self) -> None:
        for name in ("metrics", "alerts", "forecasts", "dead_letters", "model_updates", "model_events", "feedback",
                     "drift", "shadow", "events"):
            check_str(self, name, getattr(self, name))
        if self.scores is not None:
            check_str(self, "scores", self.scores)


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "vigil"
    startup: str = "group"
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    properties: dict[str, str] = field(default_factory=dict)
    transaction_timeout_ms: int = 600000

    def __post_init__(self) -> None:
        check_str(self, "bootstrap_servers", self.bootstrap_servers)
        check_str(self, "group_id", self.group_id)
        check_choice(self, "startup", self.startup, ("earliest", "latest", "group"))
        check_positive_int(self, "transaction_timeout_ms", self.transaction_timeout_ms)
        if not isinstance(self.properties, dict):
            raise ConfigError(f"The 'properties' parameter of KafkaConfig must be a mapping. Got {self.properties!r}.")

    def client_properties(self) -> dict[str, str]:
        """Pass-through client options: the file's, then VIGIL_KAFKA_PROP_* from the environment."""
        props = {str(k): str(v) for k, v in self.properties.items()}
        for k, v in os.environ.items():
            if k.startswith("VIGIL_KAFKA_PROP_"):
                props[k[len("VIGIL_KAFKA_PROP_"):].lower().replace("_", ".")] = v
        return props


@dataclass(frozen=True)
class JobConfig:
    name: str = "vigil"
    parallelism: int = 1
    checkpoint_interval_ms: int = 2000
    delivery: str = "exactly_once"
    python_execution_mode: str = "thread"
    out_of_orderness_ms: int = 5000
    # shards = key groups (Flink's max parallelism): services hash to shards, a shard is batched and
    # scored as one; the parallelism can be changed on restore up to this number
    shards: int = 8
    batch_max_records: int = 1024
    batch_max_delay_ms: int = 20
    # where checkpoints go (a path relative to the project root, or any Flink filesystem URI such as
    # s3://bucket/vigil for a cluster); the last checkpoints_retained stay there on cancel and failure
    checkpoint_dir: str = "runs/checkpoints"
    checkpoints_retained: int = 3
    # restarts after a failure never stop: the delay doubles from 1 s up to this bound
    restart_max_backoff_s: int = 60
    # Flink's Prometheus reporter serves /metrics on the first free port of this range ("" turns it off)
    prometheus_port: str = "9249-9259"
    # Flink options set on the job's environment last, e.g. {"rest.port": 8081} for the MiniCluster's REST API
    flink_options: dict[str, str] = field(default_factory=dict)

    def checkpoint_uri(self) -> str:
        """``checkpoint_dir`` as a Flink filesystem URI (a bare path is local, under the project root)."""
        return self.checkpoint_dir if "://" in self.checkpoint_dir else project_path(self.checkpoint_dir).as_uri()

    def __post_init__(self) -> None:
        port = self.prometheus_port
        if not isinstance(port, str) or not re.fullmatch(r"(\d{1,5}(-\d{1,5})?)?", port):
            raise ConfigError("The 'prometheus_port' parameter of JobConfig must be a port or a range like "
                              f"'9249-9259' (or '' for none). Got {self.prometheus_port!r}.")
        check_str(self, "name", self.name)
        if not isinstance(self.flink_options, dict):
            raise ConfigError("The 'flink_options' parameter of JobConfig must be a mapping of Flink options. "
                              f"Got {self.flink_options!r}.")
        check_positive_int(self, "parallelism", self.parallelism)
        check_positive_int(self, "checkpoint_interval_ms", self.checkpoint_interval_ms)
        check_choice(self, "delivery", self.delivery, ("exactly_once", "at_least_once"))
        check_choice(self, "python_execution_mode", self.python_execution_mode, ("thread", "process"))
        check_positive_int(self, "out_of_orderness_ms", self.out_of_orderness_ms, allow_zero=True)
        check_positive_int(self, "shards", self.shards)
        check_positive_int(self, "batch_max_records", self.batch_max_records)
        check_positive_int(self, "batch_max_delay_ms", self.batch_max_delay_ms)
        check_str(self, "checkpoint_dir", self.checkpoint_dir)
        check_positive_int(self, "checkpoints_retained", self.checkpoints_retained)
        check_positive_int(self, "restart_max_backoff_s", self.restart_max_backoff_s)
        if self.parallelism > self.shards:
            raise ConfigError(f"The 'parallelism' parameter of JobConfig must not exceed 'shards' ({self.shards}): "
                              f"a shard is the unit of parallel work. Got {self.parallelism}.")


@dataclass(frozen=True)
class RedisConfig:
    url: str = "redis://127.0.0.1:6390/0"
    refresh_s: int = 30
    timeout_s: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"The 'url' parameter of RedisConfig must be a redis:// URL. Got {self.url!r}.")
        check_positive_int(self, "refresh_s", self.refresh_s)
        check_number(self, "timeout_s", self.timeout_s, 0.01, 60)


@dataclass(frozen=True)
class RegistryConfig:
    root: str = "artifacts"

    def __post_init__(self) -> None:
        check_str(self, "root", self.root)

    def path(self) -> Path:
        return project_path(self.root)


@dataclass(frozen=True)
class ValidationConfig:
    """Bounds on what a record may be (see :class:`udfs.parse.ParseLimits`); beyond them it is a dead letter."""

    max_bytes: int = 65536
    max_past_s: int | None = 7 * 86400
    max_future_s: int | None = 300
    max_depth: int = ParseLimits.max_depth
    max_tags: int = ParseLimits.max_tags
    max_tag_key_len: int = ParseLimits.max_tag_key_len
    max_tag_value_len: int = ParseLimits.max_tag_value_len
    # the tags (Telegraf) or labels (Prometheus) that may name a record's service, first match wins;
    # an OTLP resource's service is its service.name attribute, else the first of these it holds
    service_tags: tuple[str, ...] = ParseLimits.service_tags

    def __post_init__(self) -> None:
        tags = self.service_tags
        if (not isinstance(tags, (list, tuple)) or not tags
                or not all(isinstance(t, str) and t and "," not in t for t in tags)):
            raise ConfigError("The 'service_tags' parameter of ValidationConfig must be a non-empty list of "
                              f"tag names (no commas). Got {tags!r}.")
        object.__setattr__(self, "service_tags", tuple(tags))
        check_positive_int(self, "max_bytes", self.max_bytes)
        if self.max_past_s is not None:
            check_positive_int(self, "max_past_s", self.max_past_s)
        if self.max_future_s is not None:
            check_positive_int(self, "max_future_s", self.max_future_s)
        for name in ("max_depth", "max_tags", "max_tag_key_len", "max_tag_value_len"):
            check_positive_int(self, name, getattr(self, name))

    def limits(self) -> ParseLimits:
        return ParseLimits(max_bytes=self.max_bytes, max_past_s=self.max_past_s, max_future_s=self.max_future_s,
                           max_depth=self.max_depth, max_tags=self.max_tags, max_tag_key_len=self.max_tag_key_len,
                           max_tag_value_len=self.max_tag_value_len, service_tags=self.service_tags)


@dataclass(frozen=True)
class AlertmanagerConfig:
    """Where ``python -m jobs.alertmanager`` forwards the alert topic, and how."""

    url: str = "http://127.0.0.1:9094"
    # active alerts are posted again this often, well inside Alertmanager's resolve_timeout (5 min by
    # default), so that Alertmanager never resolves a live incident by silence
    repeat_interval_s: int = 60
    generator_url: str = "http://localhost:8081/#/overview"  # what each alert links back to (Flink's UI)
    runbook_url: str = ""  # a template with {category}, {service}, {metric}; no runbook annotation when empty
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"The 'url' parameter of AlertmanagerConfig must be an http(s):// URL. Got {self.url!r}.")
        check_positive_int(self, "repeat_interval_s", self.repeat_interval_s)
        check_str(self, "generator_url", self.generator_url)
        if not isinstance(self.runbook_url, str):
            raise ConfigError(f"The 'runbook_url' parameter of AlertmanagerConfig must be a string. "
                              f"Got {self.runbook_url!r}.")
        check_number(self, "timeout_s", self.timeout_s, 0.1, 120)


@dataclass(frozen=True)
class VigilConfig:
    """Everything one Vigil job needs, from one YAML file."""

    job: JobConfig
    kafka: KafkaConfig
    redis: RedisConfig
    registry: RegistryConfig
    validation: ValidationConfig
    scoring: ScoringConfig
    alerts: AlertConfig
    rules: RulesConfig
    state: StateConfig
    alertmanager: AlertmanagerConfig

    SECTIONS = {
        "job": JobConfig,
        "kafka": KafkaConfig,
        "redis": RedisConfig,
        "registry": RegistryConfig,
        "validation": ValidationConfig,
        "scoring": ScoringConfig,
        "alerts": AlertConfig,
        "rules": RulesConfig,
        "state": StateConfig,
        "alertmanager": AlertmanagerConfig,
    }

    @classmethod
    def from_dict(cls, data: dict) -> VigilConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"The configuration must be a mapping of sections. Got {type(data).__name__}.")
        unknown = sorted(set(data) - set(cls.SECTIONS))
        if unknown:
            raise ConfigError(f"Unknown section(s) {unknown}. Known sections: {sorted(cls.SECTIONS)}.")
        data = _substitute(data)
        kafka = dict(data.get("kafka") or {})
        if "topics" in kafka:
            kafka["topics"] = build(TopicsConfig, kafka["topics"], "kafka.topics")
        parts = {name: build(c, kafka if name == "kafka" else data.get(name), name) for name, c in cls.SECTIONS.items()}
        return cls(**parts)

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict | None = None) -> VigilConfig:
        """Read a YAML file (default ``flink-conf/vigil.yaml``), apply nested overrides, validate."""
        p = Path(path) if path else DEFAULT_CONFIG
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"Configuration file {p} does not exist.") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"Configuration file {p} is not valid YAML: {e}") from None
        return cls.from_dict(_merge(data, overrides or {}))


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out.get(k) or {}, v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _substitute(v):
    if isinstance(v, dict):
        return {k: _substitute(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_substitute(x) for x in v]
    if isinstance(v, str):
        def repl(m: re.Match) -> str:
            val = os.environ.get(m.group(1))
            if val is None:
                if m.group(2) is None:
                    raise ConfigError(f"Environment variable {m.group(1)} is referenced but not set.")
                return m.group(2)
            return val

        s = _ENV.sub(repl, v)
        if s != v and _ENV.fullmatch(v):
            for conv in (int, float):  # a whole-value placeholder may stand for a number
                try:
                    return conv(s)
                except ValueError:
                    pass
        return s
    return v
