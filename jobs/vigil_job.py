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

from pyflink.common import Configuration, Types
from pyflink.common.serialization import SerializationSchema, SimpleStringSchema
from pyflink.datastream import CheckpointingMode, DataStream, StreamExecutionEnvironment
from pyflink.datastream.connectors.kafka import (
    DeliveryGuarantee,
    KafkaRecordSerializationSchema,
    KafkaSink,
)
from pyflink.datastream.data_stream import KeyedStream
from pyflink.java_gateway import get_gateway
from pyflink.table import StreamTableEnvironment

from common.config import ROOT, VigilConfig, project_path
from common.kafka_io import create_topics
from operators.functions import (
    BATCH_TYPE,
    DEAD_LETTERS,
    DRIFT,
    FORECASTS,
    MODEL_EVENTS,
    MODEL_VERSIONS,
    SCORES,
    SHADOW,
    ScoreShard,
)

CONNECTOR_JAR = ROOT / ".cache" / "jars" / "flink" / "flink-sql-connector-kafka-5.0.0-2.2.jar"
VIGIL_JAR = ROOT / ".cache" / "jars" / "vigil" / "vigil-flink.jar"  # operators/java, built by fetch-jars.sh
REPORTER_JARS = ROOT / ".cache" / "jars" / "flink-metrics"  # flink-metrics-prometheus, by fetch-jars.sh
LOCAL_LIB = ROOT / ".cache" / "flink-lib-local"


def _reporter_on_classpath() -> None:
    """Put Flink's Prometheus reporter on the classpath of the JVM that PyFlink is about to start for
    the MiniCluster: PyFlink's lib/ and the reporter jar as links in a folder of our own (the
    MiniCluster finds reporters on its classpath only, not in a plugins folder). Nothing to do when
    the JVM already runs (a ``flink run`` client, or a second job in one process)."""
    import pyflink
    from pyflink import java_gateway

    if "PYFLINK_GATEWAY_PORT" in os.environ or getattr(java_gateway, "_gateway", None) is not None:
        return
    jars = sorted(REPORTER_JARS.glob("*.jar"))
    if not jars:
        raise FileNotFoundError(f"no reporter jar under {REPORTER_JARS}: run scripts/fetch-jars.sh (make setup)")
    home = Path(pyflink.__file__).resolve().parent
    LOCAL_LIB.mkdir(parents=True, exist_ok=True)
    for jar in [*sorted((home / "lib").glob("*.jar")), *jars]:
        link = LOCAL_LIB / jar.name
        if link.exists() and link.resolve() == jar.resolve():
            continue
        # absent, dangling (the checkout or virtualenv it pointed into moved) or pointing elsewhere:
        # link anew, atomically, so that a job starting beside this one never sees the link missing
        tmp = LOCAL_LIB / f".{jar.name}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(jar)
        os.replace(tmp, link)
    os.environ.setdefault("FLINK_HOME", str(home))  # else PyFlink resets FLINK_LIB_DIR to its own
    os.environ["FLINK_LIB_DIR"] = str(LOCAL_LIB)


_STARTUP = {"earliest": "earliest-offset", "latest": "latest-offset", "group": "group-offsets"}


def latest_checkpoint(cfg: VigilConfig) -> str:
    """The newest complete checkpoint retained under ``job.checkpoint_dir`` (a local one), as a path."""
    d = cfg.job.checkpoint_dir
    if "://" in d and not d.startswith("file://"):
        raise ValueError(f"--restore latest needs a local job.checkpoint_dir; give the checkpoint's URI under {d}")
    root = Path(d[len("file://"):]) if d.startswith("file://") else project_path(d)
    found = sorted(root.glob("*/chk-*/_metadata"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no complete checkpoint under {root}")
    return str(found[-1].parent)


def flink_configuration(cfg: VigilConfig, restore: str | None = None) -> Configuration:
    """Flink settings the job needs wherever it runs (MiniCluster or a standalone cluster); ``restore``
    is a checkpoint or savepoint to start from."""
    if cfg.job.prometheus_port:
        _reporter_on_classpath()
    conf = Configuration()
    if cfg.job.prometheus_port:
        # on a standalone cluster reporters are the cluster's (flink-conf/cluster/config.yaml)
        conf.set_string("metrics.reporter.prom.factory.class",
                        "org.apache.flink.metrics.prometheus.PrometheusReporterFactory")
        conf.set_string("metrics.reporter.prom.port", cfg.job.prometheus_port)
    if restore:
        conf.set_string("execution.state-recovery.path", restore)
    conf.set_string("python.execution-mode", cfg.job.python_execution_mode)
    conf.set_string("python.executable", sys.executable)
    # thread mode's embedded interpreter needs the virtualenv's packages and the project on its path
    conf.set_string("python.pythonpath", os.pathsep.join([sysconfig.get_paths()["purelib"], str(ROOT)]))
    for jar in (CONNECTOR_JAR, VIGIL_JAR):
        if not jar.exists():
            raise FileNotFoundError(f"{jar} is missing: run scripts/fetch-jars.sh (make setup)")
    conf.set_string("pipeline.jars", f"{CONNECTOR_JAR.as_uri()};{VIGIL_JAR.as_uri()}")
    # one key group per shard: rescaling moves whole shards, and a savepoint restores at any parallelism
    conf.set_string("pipeline.max-parallelism", str(cfg.job.shards))
    conf.set_string("pipeline.name", cfg.job.name)
    # the Kafka sources and conversions the SQL planner makes get explicit uids too (our own operators
    # name theirs), so that every stateful operator of a savepoint is found by uid on restore; the
    # uids follow the order of the statements, which this module fixes
    conf.set_string("table.exec.uid.generation", "ALWAYS")
    # network buffers between tasks flush at least this often (Flink's default is 100 ms): under load
    # batches fill them anyway, when traffic is light it bounds what a buffer adds to alert latency
    conf.set_string("execution.buffer-timeout.interval", "10 ms")
    # durable state: checkpoints (and savepoints) in the configured directory, the last few kept
    # when the job is cancelled or fails, so that it can be restarted from them (--restore)
    cp = cfg.job.checkpoint_uri()
    conf.set_string("execution.checkpointing.dir", cp)
    conf.set_string("execution.checkpointing.savepoint-dir", cp.rstrip("/") + "/savepoints")
    conf.set_string("execution.checkpointing.num-retained", str(cfg.job.checkpoints_retained))
    conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    # a job that watches production keeps trying: 1 s, 2 s, 4 s ... up to the configured bound
    conf.set_string("restart-strategy.type", "exponential-delay")
    conf.set_string("restart-strategy.exponential-delay.initial-backoff", "1 s")
    conf.set_string("restart-strategy.exponential-delay.max-backoff", f"{cfg.job.restart_max_backoff_s} s")
    conf.set_string("restart-strategy.exponential-delay.backoff-multiplier", "2.0")
    conf.set_string("restart-strategy.exponential-delay.reset-backoff-threshold", "10 min")
    conf.set_string("restart-strategy.exponential-delay.jitter-factor", "0.1")
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


def _key_by_field(name: str) -> SerializationSchema:
    """The Kafka key of a JSON record: one of its string fields (``dev.vigil.flink.JsonFieldKey``)."""
    gw = get_gateway()
    cls = gw.jvm.Thread.currentThread().getContextClassLoader().loadClass("dev.vigil.flink.JsonFieldKey")
    args = gw.new_array(gw.jvm.Object, 1)
    args[0] = name
    return SerializationSchema(cls.getConstructors()[0].newInstance(args))


def _sink(cfg: VigilConfig, topic: str, suffix: str, key_field: str | None = None) -> KafkaSink:
    exactly = cfg.job.delivery == "exactly_once"
    records = KafkaRecordSerializationSchema.builder().set_topic(topic).set_value_serialization_schema(
        SimpleStringSchema())
    if key_field is not None:  # one key per entity: its revisions land on one partition, in order
        records = records.set_key_serialization_schema(_key_by_field(key_field))
    b = (
        KafkaSink.builder()
        .set_bootstrap_servers(cfg.kafka.bootstrap_servers)
        .set_record_serializer(records.build())
        .set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE if exactly else DeliveryGuarantee.AT_LEAST_ONCE)
    )
    if exactly:
        b = b.set_transactional_id_prefix(f"{cfg.job.name}-{cfg.kafka.group_id}-{suffix}")
        b = b.set_property("transaction.timeout.ms", str(cfg.kafka.transaction_timeout_ms))
    for k, v in cfg.kafka.client_properties().items():
        b = b.set_property(k, v)
    return b.build()


def shard_batches(cfg: VigilConfig, raw: DataStream) -> KeyedStream:
    """Raw rows ``(kind, payload, partition, offset)`` -> batches keyed by shard, all in the JVM.

    ``dev.vigil.flink.ShardBatcher`` (``operators/java``) hashes each record's service (read as
    ``udfs.parse`` reads it, with ``validation.service_tags``) to one of ``job.shards`` shards,
    splits a record of several parts whose services fall into several shards, and emits a shard's
    batch at ``job.batch_max_records`` records, after ``job.batch_max_delay_ms``, before every
    checkpoint barrier and at the end of bounded input; the
    key-by on the shard is Flink's own (no Python key selector)."""
    gw = get_gateway()
    cls = gw.jvm.Thread.currentThread().getContextClassLoader().loadClass("dev.vigil.flink.ShardBatcher")
    v = cfg.validation
    args = gw.new_array(gw.jvm.Object, 6)
    args[0], args[1], args[2] = cfg.job.shards, cfg.job.batch_max_records, cfg.job.batch_max_delay_ms
    args[3], args[4], args[5] = ",".join(v.service_tags), v.max_bytes, v.max_depth
    op = cls.getConstructors()[0].newInstance(args)
    # PyFlink has no public way to apply a Java operator: its own DataStream methods do the same
    batches = raw._j_data_stream.transform(  # noqa: SLF001
        "shard-batcher", Types.ROW([Types.INT(), BATCH_TYPE]).get_java_type_info(), op).uid("shard-batcher")
    keyed = batches.keyBy(gw.jvm.KeyByKeySelector(), Types.ROW([Types.INT()]).get_java_type_info())
    return KeyedStream(keyed, BATCH_TYPE, DataStream(batches))


def wire(cfg: VigilConfig, raw: DataStream, updates: DataStream) -> dict[str, DataStream]:
    """The job graph from raw rows ``(kind, payload bytes, partition, offset)`` (kind 0: a metric record,
    1: an alert-feedback verdict, 2: a deployment or maintenance event) and model-update rows
    ``(payload bytes,)`` to the streams ``alerts``,
    ``forecasts``, ``dead_letters``, ``scores`` (flowing only when ``kafka.topics.scores`` is set),
    ``drift``, ``shadow`` and ``model_events``.

    One Python operator does all the scoring: the JVM shards and batches the raw records, and
    :class:`~operators.functions.ScoreShard` parses, scores and alerts a whole batch at a time."""
    k = cfg.kafka
    out = (
        shard_batches(cfg, raw)
        .connect(updates.broadcast(MODEL_VERSIONS))
        .process(ScoreShard(cfg.scoring, cfg.alerts, cfg.validation.limits(), cfg.job.out_of_orderness_ms,
                            str(cfg.registry.path()), cfg.redis.url, cfg.redis.refresh_s,
                            (k.topics.metrics, k.topics.feedback, k.topics.events),
                            emit_scores=k.topics.scores is not None, state=cfg.state, rules=cfg.rules),
                 output_type=Types.STRING())
        .name("score-shard").uid("score-shard")
    )
    return {
        "alerts": out,
        "forecasts": out.get_side_output(FORECASTS),
        "dead_letters": out.get_side_output(DEAD_LETTERS),
        "scores": out.get_side_output(SCORES),
        "drift": out.get_side_output(DRIFT),
        "shadow": out.get_side_output(SHADOW),
        "model_events": out.get_side_output(MODEL_EVENTS),
    }


def build(cfg: VigilConfig, bounded: bool = False, restore: str | None = None) -> StreamExecutionEnvironment:
    """Wire the job graph onto a new environment; ``bounded`` stops at the topic's current end, ``restore``
    (a checkpoint or savepoint path) is the state to start from."""
    env = StreamExecutionEnvironment.get_execution_environment(flink_configuration(cfg, restore))
    env.set_parallelism(cfg.job.parallelism)
    env.enable_checkpointing(
        cfg.job.checkpoint_interval_ms,
        CheckpointingMode.EXACTLY_ONCE if cfg.job.delivery == "exactly_once" else CheckpointingMode.AT_LEAST_ONCE,
    )
    t_env = StreamTableEnvironment.create(env)
    k = cfg.kafka
    if not k.client_properties():  # with security options the topics are the cluster admins' to create
        create_topics(k.bootstrap_servers, [k.topics.model_updates], compact=True)
        create_topics(k.bootstrap_servers, [k.topics.feedback, k.topics.events])
    t_env.execute_sql(_kafka_table("vigil_metrics_raw", k.topics.metrics, k.group_id, _STARTUP[k.startup], bounded,
                                   cfg, "payload BYTES, `partition` INT METADATA VIRTUAL, "
                                        "`offset` BIGINT METADATA VIRTUAL"))
    t_env.execute_sql(_kafka_table("vigil_model_updates", k.topics.model_updates, f"{k.group_id}-model-updates",
                                   "earliest-offset", bounded, cfg, "payload BYTES"))
    t_env.execute_sql(_kafka_table("vigil_feedback_raw", k.topics.feedback, f"{k.group_id}-feedback",
                                   _STARTUP[k.startup], bounded, cfg,
                                   "payload BYTES, `partition` INT METADATA VIRTUAL, `offset` BIGINT METADATA VIRTUAL"))
    t_env.execute_sql(_kafka_table("vigil_events_raw", k.topics.events, f"{k.group_id}-events",
                                   _STARTUP[k.startup], bounded, cfg,
                                   "payload BYTES, `partition` INT METADATA VIRTUAL, `offset` BIGINT METADATA VIRTUAL"))
    # one source stream for the three inputs, told apart by kind: metric records (0), verdicts (1) and
    # deployment / maintenance events (2)
    raw = t_env.sql_query("SELECT 0 AS kind, payload, `partition`, `offset` FROM vigil_metrics_raw UNION ALL "
                          "SELECT 1 AS kind, payload, `partition`, `offset` FROM vigil_feedback_raw UNION ALL "
                          "SELECT 2 AS kind, payload, `partition`, `offset` FROM vigil_events_raw")
    out = wire(cfg, t_env.to_data_stream(raw), t_env.to_data_stream(t_env.from_path("vigil_model_updates")))
    for name, topic in (("alerts", k.topics.alerts), ("forecasts", k.topics.forecasts),
                        ("dead_letters", k.topics.dead_letters), ("model_events", k.topics.model_events),
                        ("scores", k.topics.scores), ("drift", k.topics.drift), ("shadow", k.topics.shadow)):
        if topic is not None:
            out[name].sink_to(_sink(cfg, topic, name.replace("_", "-"), "fingerprint" if name == "alerts" else None)
                              ).name(f"{name}-sink").uid(f"{name}-sink")
    return env


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="vigil-job", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "flink-conf" / "vigil.yaml"), help="job YAML file")
    ap.add_argument("--bounded", action="store_true", help="stop at the metrics topic's current end")
    ap.add_argument("--restore", metavar="PATH", help="start from this checkpoint or savepoint; 'latest': the "
                    "newest checkpoint retained under job.checkpoint_dir")
    args = ap.parse_args(argv)
    cfg = VigilConfig.load(Path(args.config))
    restore = latest_checkpoint(cfg) if args.restore == "latest" else args.restore
    if restore:
        print(f"vigil-job: restoring from {restore}", flush=True)
    env = build(cfg, bounded=args.bounded, restore=restore)
    env.execute(cfg.job.name)


if __name__ == "__main__":
    main()
