"""Job configuration: the shipped file loads; bad keys and values fail with specific messages."""

import pytest

from common.config import DEFAULT_CONFIG, VigilConfig
from models.config import ConfigError


def test_shipped_config_is_valid():
    cfg = VigilConfig.load(DEFAULT_CONFIG)
    assert cfg.job.python_execution_mode == "thread"
    assert cfg.job.delivery == "exactly_once"
    assert cfg.kafka.topics.metrics and cfg.scoring.limits["memory_util"] == 100
    assert cfg.job.flink_options == {}


def test_validation_caps_reach_the_parser():
    from udfs.parse import ParseLimits

    assert VigilConfig.load(DEFAULT_CONFIG).validation.limits() == ParseLimits()
    cfg = VigilConfig.load(DEFAULT_CONFIG, overrides={"validation": {"max_tags": 4, "max_depth": 3}})
    limits = cfg.validation.limits()
    assert (limits.max_tags, limits.max_depth, limits.max_tag_key_len) == (4, 3, 64)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"alerts": {"dedup_window_s": -5}},
         "The 'dedup_window_s' parameter of AlertConfig must be a positive integer. Got -5."),
        ({"job": {"delivery": "maybe"}}, "The 'delivery' parameter of JobConfig must be one of"),
        ({"scoring": {"cluster_adapt_rate": 2}},
         "The 'cluster_adapt_rate' parameter of ScoringConfig must be a number"),
        ({"alerts": {"dedup": 1}}, "Unknown key(s) ['dedup'] in section 'alerts'"),
        ({"scoring": {"cluster_streak": 0}},
         "The 'cluster_streak' parameter of ScoringConfig must be a positive integer. Got 0."),
        ({"alerts": {"breach_critical_s": 7200, "breach_high_s": 1800}},
         "The 'breach_high_s' parameter of AlertConfig must be at least breach_critical_s (7200). Got 1800."),
        ({"kafka": {"topics": {"alerts": ""}}}, "The 'alerts' parameter of TopicsConfig must be a non-empty string"),
        ({"redis": {"url": "http://x"}}, "The 'url' parameter of RedisConfig must be a redis:// URL"),
        ({"nonsense": {}}, "Unknown section(s) ['nonsense']"),
        ({"job": {"flink_options": ["rest.port"]}},
         "The 'flink_options' parameter of JobConfig must be a mapping of Flink options"),
        ({"validation": {"max_tags": -5}},
         "The 'max_tags' parameter of ValidationConfig must be a positive integer. Got -5."),
        ({"validation": {"max_depth": 0}},
         "The 'max_depth' parameter of ValidationConfig must be a positive integer. Got 0."),
    ],
)
def test_bad_values_fail_at_build_time_with_specific_messages(override, message):
    with pytest.raises(ConfigError) as e:
        VigilConfig.load(DEFAULT_CONFIG, overrides=override)
    assert message in str(e.value)


def test_environment_substitution_and_security_pass_through(monkeypatch):
    monkeypatch.setenv("VIGIL_KAFKA_BOOTSTRAP", "broker-1:9093")
    monkeypatch.setenv("VIGIL_KAFKA_PROP_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("VIGIL_KAFKA_PROP_SASL_MECHANISM", "SCRAM-SHA-512")
    cfg = VigilConfig.load(DEFAULT_CONFIG, overrides={"kafka": {"properties": {"ssl.truststore.location": "/t.jks"}}})
    assert cfg.kafka.bootstrap_servers == "broker-1:9093"
    assert cfg.kafka.client_properties() == {
        "ssl.truststore.location": "/t.jks",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
    }


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        VigilConfig.load(tmp_path / "nope.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("job: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        VigilConfig.load(p)
