"""The Vigil job: Kafka metrics in, scored alerts, forecasts and dead letters out.

Run locally on the embedded MiniCluster::

    python -m jobs.vigil_job --config flink-conf/vigil.yaml

or submit to a standalone cluster with ``flink run -py jobs/vigil_job.py --config ...``
(``make submit``). Wiring only: the scoring lives in :mod:`models.pipeline`, the Flink shells in
:mod:`operators.functions`.
"""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
from pathlib import Path

from pyflink.common import Configuration, Duration, Types, WatermarkStrategy
from pyflink.common.serialization import SimpleStringSchema
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import CheckpointingMode, DataStream, StreamExecutionEnvironment
from pyflink.datastream.connectors.kafka import (
    DeliveryGuarantee,
    KafkaRecordSerializationSchema,
    KafkaSink,
)
from pyflink.table import StreamTableEnvironment

from jobs.config import ROOT, VigilConfig
from models.registry import ensure_compacted_topic, ensure_topic
from operators.functions import (
    DEAD_LETTERS,
    DRIFT,
    FORECASTS,
    MODEL_EVENTS,
    MODEL_VERSIONS,
    SCORES,
    SHADOW,
    EventTime,
    ParseFeedback,
    ParseValidate,
    ScoreEntity,
    ScoreSeries,
)

CONNECTOR_JAR = ROOT / ".cache" / "jars" / "flink" / "flink-sql-connector-kafka-5.0.0-2.2.jar"
_STARTUP = {"earliest": "earliest-offset", "latest": "latest-offset", "group": "group-offsets"}


def flink_configuration(cfg: VigilConfig) -> Configuration:
    """Flink settings the job needs wherever it runs (MiniCluster or a standalone cluster)."""
    conf = Configuration()
    conf.set_string("python.execution-mode", cfg.job.python_execution_mode)
    conf.set_string("python.executable", sys.executable)
    # thread mode's embedded interpreter needs the virtualenv's packages and the project on its path
    conf.set_string("python.pythonpath", os.pathsep.join([sysconfig.get_paths()["purelib"], str(ROOT)]))
    if not CONNECTOR_JAR.exists():
        raise FileNotFoundError(f"{CONNECTOR_JAR} is missing: run scripts/fetch-jars.sh (make setup)")
    conf.set_string("pipeline.jars", CONNECTOR_JAR.as_uri())
    conf.set_string("pipeline.name", cfg.job.name)
    conf.set_string("restart-strategy.type", "fixed-delay")
    conf.set_string("restart-strategy.fixed-delay.attempts", "3")
    conf.set_string("restart-strategy.fixed-delay.delay", "2 s")
    for k, v in sorted(cfg.job.flink_options.items()):
        conf.set_string(str(k), str(v))
    return conf


def _sql_props(props: dict[str, str]) -> str:
    return "".join(f",\n  'properties.{k}' = '{v}'" for k, v in sorted(props.items()))


def _kafka_table(name: str, topic: str, group_id: str, startup: str, bounded: bool, cfg: VigilConfig,
                 columns: str) -> str:
    """DDL of a raw-bytes Kafka source table (the SQL connector gives partition and offset)."""
    return f"""
        CREATE TEMPORARY TABLE {name} ({columns}) WITH (
          'connector' = 'kafka',
          'topic' = '{topic}',
          'properties.bootstrap.servers' = '{cfg.kafka.bootstrap_servers}',
          'properties.group.id' = '{group_id}',
          'properties.auto.offset.reset' = 'earliest',
          'scan.startup.mode' = '{startup}',
          {"'scan.bounded.mode' = 'latest-offset'," if bounded else ""}
          'format' = 'raw'{_sql_props(cfg.kafka.client_properties())}
        )"""


def _sink(cfg: VigilConfig, topic: str, suffix: str) -> KafkaSink:
    exactly = cfg.job.delivery == "exactly_once"
    b = (
        KafkaSink.builder()
        .set_bootstrap_servers(cfg.kafka.bootstrap_servers)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE if exactly else DeliveryGuarantee.AT_LEAST_ONCE)
    )
    if exactly:
        b = b.set_transactional_id_prefix(f"{cfg.job.name}-{cfg.kafka.group_id}-{suffix}")
        b = b.set_property("transaction.timeout.ms", str(cfg.kafka.transaction_timeout_ms))
    for k, v in cfg.kafka.client_properties().items():
        b = b.set_property(k, v)
    return b.build()


class _Zero(TimestampAssigner):
    def extract_timestamp(self, value, record_timestamp: int) -> int:
        return 0


def _no_event_time(stream: DataStream) -> DataStream:
    """Timestamps for a stream without event time (model updates, feedback): marked idle when quiet,
    so that it never holds the metrics' watermark back."""
    return stream.assign_timestamps_and_watermarks(
        WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(_Zero())
        .with_idleness(Duration.of_seconds(1)))


def wire(cfg: VigilConfig, raw: DataStream, updates: DataStream, feedback: DataStream | None = None
         ) -> dict[str, DataStream]:
    """The job graph from raw metric rows ``(payload bytes, partition, offset)``, model-update rows
    ``(payload bytes,)`` and raw alert-feedback rows ``(payload bytes, partition, offset)`` to the
    streams ``alerts``, ``forecasts``, ``dead_letters``, ``scores`` (flowing only when
    ``kafka.topics.scores`` is set), ``drift``, ``shadow`` and ``model_events``.

    Feedback joins the metric events before the first keyed hop (keyed by the alert's series),
    and passes on from there to the service's entity state."""
    updates = _no_event_time(updates).broadcast(MODEL_VERSIONS)
    parsed = raw.process(ParseValidate(cfg.kafka.topics.metrics, cfg.validation.limits()),
                         output_type=Types.PICKLED_BYTE_ARRAY()).name("parse-validate")
    timed = parsed.assign_timestamps_and_watermarks(
        WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(cfg.job.out_of_orderness_ms))
        .with_timestamp_assigner(EventTime())
        .with_idleness(Duration.of_seconds(30))
    ).name("event-time")
    registry = str(cfg.registry.path())
    dead = parsed.get_side_output(DEAD_LETTERS)
    if feedback is not None:
        verdicts = feedback.process(ParseFeedback(cfg.kafka.topics.feedback, cfg.validation.max_bytes),
                                    output_type=Types.PICKLED_BYTE_ARRAY()).name("parse-feedback")
        dead = dead.union(verdicts.get_side_output(DEAD_LETTERS))
        timed = timed.union(_no_event_time(verdicts))
    scored = (
        timed.key_by(lambda ev: ev.series, key_type=Types.STRING())
        .connect(updates)
        .process(ScoreSeries(cfg.scoring, registry, cfg.redis.url, cfg.kafka.topics.metrics,
                             emit_scores=cfg.kafka.topics.scores is not None),
                 output_type=Types.PICKLED_BYTE_ARRAY())
        .name("score-series")
    )
    alerts = (
        scored.key_by(lambda s: s.service, key_type=Types.STRING())
        .connect(updates)
        .process(ScoreEntity(cfg.scoring, cfg.alerts, registry, cfg.redis.url, cfg.redis.refresh_s),
                 output_type=Types.STRING())
        .name("score-entity")
    )
    return {
        "alerts": alerts,
        "forecasts": scored.get_side_output(FORECASTS),
        "dead_letters": dead.union(scored.get_side_output(DEAD_LETTERS)),
        "scores": scored.get_side_output(SCORES),
        "drift": scored.get_side_output(DRIFT),
        "shadow": scored.get_side_output(SHADOW).union(alerts.get_side_output(SHADOW)),
        "model_events": scored.get_side_output(MODEL_EVENTS).union(alerts.get_side_output(MODEL_EVENTS)),
    }


def build(cfg: VigilConfig, bounded: bool = False) -> StreamExecutionEnvironment:
    """Wire the job graph onto a new environment; ``bounded`` stops at the topic's current end."""
    env = StreamExecutionEnvironment.get_execution_environment(flink_configuration(cfg))
    env.set_parallelism(cfg.job.parallelism)
    env.enable_checkpointing(
        cfg.job.checkpoint_interval_ms,
        CheckpointingMode.EXACTLY_ONCE if cfg.job.delivery == "exactly_once" else CheckpointingMode.AT_LEAST_ONCE,
    )
    t_env = StreamTableEnvironment.create(env)
    k = cfg.kafka
    if not k.client_properties():  # with security options the topics are the cluster admins' to create
        ensure_compacted_topic(k.bootstrap_servers, k.topics.model_updates)
        ensure_topic(k.bootstrap_servers, k.topics.feedback)
    t_env.execute_sql(_kafka_table("vigil_metrics_raw", k.topics.metrics, k.group_id, _STARTUP[k.startup], bounded,
                                   cfg, "payload BYTES, `partition` INT METADATA VIRTUAL, "
                                        "`offset` BIGINT METADATA VIRTUAL"))
    t_env.execute_sql(_kafka_table("vigil_model_updates", k.topics.model_updates, f"{k.group_id}-model-updates",
                                   "earliest-offset", bounded, cfg, "payload BYTES"))
    t_env.execute_sql(_kafka_table("vigil_feedback_raw", k.topics.feedback, f"{k.group_id}-feedback",
                                   _STARTUP[k.startup], bounded, cfg,
                                   "payload BYTES, `partition` INT METADATA VIRTUAL, `offset` BIGINT METADATA VIRTUAL"))
    out = wire(cfg, t_env.to_data_stream(t_env.from_path("vigil_metrics_raw")),
               t_env.to_data_stream(t_env.from_path("vigil_model_updates")),
               t_env.to_data_stream(t_env.from_path("vigil_feedback_raw")))
    for name, topic in (("alerts", k.topics.alerts), ("forecasts", k.topics.forecasts),
                        ("dead_letters", k.topics.dead_letters), ("model_events", k.topics.model_events),
                        ("scores", k.topics.scores), ("drift", k.topics.drift), ("shadow", k.topics.shadow)):
        if topic is not None:
            out[name].sink_to(_sink(cfg, topic, name.replace("_", "-"))).name(f"{name}-sink")
    return env


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="vigil-job", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "flink-conf" / "vigil.yaml"), help="job YAML file")
    ap.add_argument("--bounded", action="store_true", help="stop at the metrics topic's current end")
    args = ap.parse_args(argv)
    cfg = VigilConfig.load(Path(args.config))
    env = build(cfg, bounded=args.bounded)
    env.execute(cfg.job.name)


if __name__ == "__main__":
    main()
