"""The Flink function of the job: a thin shell that moves state in and out of the logic.

One busy Python operator per task manager (:class:`ScoreShard`): the JVM reads Kafka, shards and
batches the raw records (``operators/java``: ``dev.vigil.flink.ShardBatcher``), and this operator
hands each batch to :class:`models.shard.ShardLogic`. It opens its ONNX sessions once, in
``open()``. State descriptors carry their schema version in the name; values are the explicit byte
encodings of :mod:`models.pipeline`.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
import warnings

from pyflink.common import Types
from pyflink.datastream import KeyedBroadcastProcessFunction, OutputTag, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor

from models.config import AlertConfig, RulesConfig, ScoringConfig, StateConfig
from models.context import ContextCache, connect
from models.pipeline import ModelBundle
from models.shard import ShardLogic, ShardState
from operators.metrics import JobMetrics
from operators.stats import instrumented
from udfs.parse import DeadLetter, ParseLimits, parse_model_update
from udfs.records import ModelEventRecord

DEAD_LETTERS = OutputTag("dead-letters", Types.STRING())
FORECASTS = OutputTag("forecasts", Types.STRING())
DRIFT = OutputTag("drift", Types.STRING())
SHADOW = OutputTag("shadow", Types.STRING())
SCORES = OutputTag("scores", Types.STRING())
MODEL_EVENTS = OutputTag("model-events", Types.STRING())
# the versions the job was told to serve, kept in broadcast state so that a restore knows them
MODEL_VERSIONS = MapStateDescriptor("model_versions/v1", Types.STRING(), Types.STRING())


NATIVE_MODULES = ("onnxruntime", "river.drift")  # river brings scipy's and sklearn's extensions


def preload_native() -> None:
    """Import the native extensions the models use on a fresh Python thread, once per interpreter.

    PyFlink's thread mode embeds one interpreter in the JVM, and a task thread that runs several
    chained Python operators carries several Python thread states. pybind11 extensions take the
    GIL through PyGILState, which knows one thread state per OS thread; imported first from such a
    task thread, onnxruntime's initialisation waited for a GIL its own thread held, and the job
    hung for good (seen with py-spy: a task parked in ``_pybind_state``'s ``create_module``). A
    thread Python creates has exactly one thread state, so the import is safe there.
    """
    missing = [m for m in NATIVE_MODULES if m not in sys.modules]
    if not missing:
        return
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for m in missing:
                importlib.import_module(m)
        except BaseException as e:  # noqa: BLE001 - re-raised on the calling thread
            errors.append(e)

    t = threading.Thread(target=work, name="vigil-preload-native")
    t.start()
    t.join()
    if errors:
        raise errors[0]


def _now_ms() -> int:
    return int(time.time() * 1000)


class HotSwap(KeyedBroadcastProcessFunction):
    """Model updates arrive on the broadcast side: load, verify, and swap between two records.

    A refused version (hash, schema or smoke inference fails) leaves the old one serving; either
    way an event (``vigil.model-event/v1``) says what this operator did, and why.
    """

    operator_name = "operator"
    registry_root: str

    def _bundle(self) -> ModelBundle:
        raise NotImplementedError

    def process_broadcast_element(self, row, ctx):
        now = _now_ms()
        update = parse_model_update(bytes(row[0]) if row[0] is not None else b"")
        if isinstance(update, DeadLetter):
            yield MODEL_EVENTS, _model_event(self.operator_name, None, None, "refused",
                                             f"unreadable update ({update.reason}): {update.detail}", now)
            return
        model, version, alias = update
        try:
            previous = self._bundle().swap(self.registry_root, model, version, alias)
        except Exception as e:  # noqa: BLE001 - any failure means: keep serving the old version
            yield MODEL_EVENTS, _model_event(self.operator_name, model, version, "refused", str(e), now, alias)
            return
        ctx.get_broadcast_state(MODEL_VERSIONS).put(f"{model}@{alias}", version or "")
        status = "serving" if version is not None else "stopped"
        yield MODEL_EVENTS, _model_event(self.operator_name, model, version, status, f"replaced {previous}", now,
                                         alias)


def _model_event(op: str, model, version, status: str, detail: str, now_ms: int, alias: str = "production") -> str:
    return ModelEventRecord(op, model, version, alias, status, detail, now_ms).to_json()


# the shard's keyed state: one map entry per series and per service, valued by their byte encodings
# (as PyFlink's pickled bytes: its primitive byte arrays convert to and from tuples of ints)
# The names are the maps' own and stay put (a savepoint finds its state by name); every value starts
# with the version byte of its layout, and older layouts are read and migrate on their next write.
SERIES_MAP = MapStateDescriptor("shard_series_state/v3", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
ENTITY_MAP = MapStateDescriptor("shard_entity_state/v2", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
# the batch layout the JVM batcher emits after the shard key: (kinds, payloads, partitions, offsets)
BATCH_TYPE = Types.ROW([Types.PRIMITIVE_ARRAY(Types.INT()), Types.OBJECT_ARRAY(Types.PRIMITIVE_ARRAY(Types.BYTE())),
                        Types.PRIMITIVE_ARRAY(Types.INT()), Types.PRIMITIVE_ARRAY(Types.LONG())])


@instrumented("score-shard")
class ScoreShard(HotSwap):
    """Keyed by shard; one batch of raw records at a time: parse, series, entities, alerts.

    The shard's series and service states are decoded once and kept in Python between batches; every
    batch writes the ones it changed through to Flink's map state before it returns, so the state a
    checkpoint takes is exact (the batcher emits everything it holds before each barrier).

    A processing-time timer per shard, every ``state.sweep_interval_s`` on the interval's multiples
    (so that a restored timer and a new one are the same timer), deletes the state that has gone
    quiet (:meth:`models.shard.ShardLogic.sweep`) and resolves quiet alert groups. After a restore the
    first batch serves the model versions that broadcast state ``MODEL_VERSIONS`` says the job was
    told to serve.
    """

    operator_name = "score-shard"

    def __init__(self, scoring: ScoringConfig, alerts: AlertConfig, limits: ParseLimits, out_of_orderness_ms: int,
                 registry_root: str, redis_url: str, refresh_s: int, topics: tuple[str, str, str],
                 emit_scores: bool = False, state: StateConfig | None = None, rules: RulesConfig | None = None) -> None:
        self.state_cfg = state or StateConfig()
        self.rules = rules or RulesConfig()
        self.scoring = scoring
        self.alerts = alerts
        self.limits = limits
        self.out_of_orderness_ms = out_of_orderness_ms
        self.registry_root = registry_root
        self.redis_url = redis_url
        self.refresh_s = refresh_s
        self.topics = topics  # (metrics, feedback, events) topics by record kind: the sources named in dead letters
        self.emit_scores = emit_scores

    @staticmethod
    def records_in(batch) -> int:
        return len(batch[1])

    def open(self, ctx: RuntimeContext) -> None:
        preload_native()
        # a warning issued on a task thread of the embedded interpreter hung the job for good (numpy's
        # RuntimeWarning on a hostile value); nobody reads the JVM's stderr, so none are issued
        warnings.simplefilter("ignore")
        self.series_map = ctx.get_map_state(SERIES_MAP)
        self.entity_map = ctx.get_map_state(ENTITY_MAP)
        client = _redis_or_none(self.redis_url)
        self.context = ContextCache(client, self.refresh_s)
        self.context.refresh()
        self.logic = ShardLogic(self.scoring, self.alerts, ModelBundle.load(self.registry_root, client),
                                self.context, self.limits, self.out_of_orderness_ms, emit_scores=self.emit_scores,
                                state=self.state_cfg, rules=self.rules)
        self.shards: dict[object, ShardState] = {}
        self.versions_restored = False
        self.metrics = JobMetrics(ctx.get_metrics_group())

    def _bundle(self) -> ModelBundle:
        return self.logic.models

    def _shard(self, ctx) -> ShardState:
        key = ctx.get_current_key()
        st = self.shards.get(key)
        if st is None:  # read from Flink's state on first touch: restored after a failure or a rescale
            st = self.shards[key] = ShardState(self.series_map.get, self.entity_map.get, self.series_map.items,
                                               self.entity_map.items)
            every = self.state_cfg.sweep_interval_s * 1000
            ctx.timer_service().register_processing_time_timer((_now_ms() // every + 1) * every)
        return st

    def _write_through(self, st: ShardState) -> None:
        series, entities = st.take_dirty()
        if series:
            self.series_map.put_all(series)
        if entities:
            self.entity_map.put_all(entities)

    def _restore_versions(self, ctx):
        """Serve what broadcast state says the job was told to serve (it survives restores; the
        registry's aliases may have moved on since)."""
        self.versions_restored = True
        now = _now_ms()
        told = dict(ctx.get_broadcast_state(MODEL_VERSIONS).items())
        served = self.logic.models.versions()
        for name_alias, version in sorted(told.items()):
            model, _, alias = name_alias.partition("@")
            current = served.get(model) if alias == "production" else (
                s.version if (s := self.logic.models.shadow.get(model)) is not None else None)
            if (version or None) == current:
                continue
            try:
                previous = self.logic.models.swap(self.registry_root, model, version or None, alias)
            except Exception as e:  # noqa: BLE001 - keep serving what loaded, and say so
                yield MODEL_EVENTS, _model_event(self.operator_name, model, version, "refused",
                                                 f"on restore: {e}", now, alias)
                continue
            yield MODEL_EVENTS, _model_event(self.operator_name, model, version or None,
                                             "serving" if version else "stopped", f"restored; replaced {previous}",
                                             now, alias)

    def on_timer(self, timestamp, ctx):
        st = self._shard(ctx)
        swept = self.logic.sweep(st, _now_ms())
        for k in swept.series:
            self.series_map.remove(k)
        for k in swept.entities:
            self.entity_map.remove(k)
        self._write_through(st)
        every = self.state_cfg.sweep_interval_s * 1000
        ctx.timer_service().register_processing_time_timer((timestamp // every + 1) * every)
        self.metrics.on_alerts(swept.alerts, _now_ms())
        yield from swept.alerts

    def process_element(self, batch, ctx):
        if not self.versions_restored:
            yield from self._restore_versions(ctx)
        st = self._shard(ctx)
        kinds, payloads, partitions, offsets = batch
        now = _now_ms()
        res = self.logic.on_batch(st, kinds, payloads, partitions, offsets, now)
        self._write_through(st)
        self.metrics.on_batch(res, len(kinds), now)
        self.metrics.on_models(self.logic.models.served())
        yield from res.alerts
        for f in res.forecasts:
            yield FORECASTS, f
        for d in res.drift:
            yield DRIFT, d
        for r in res.shadow:
            yield SHADOW, r
        for r in res.scores:
            yield SCORES, r
        for dl, payload, kind, partition, offset in res.dead_letters:
            yield DEAD_LETTERS, dl.to_json(payload, self.topics[kind], partition, offset, now)


def _redis_or_none(url: str):
    try:
        return connect(url)
    except Exception:  # noqa: BLE001 - a bad URL must not stop scoring; context stays empty
        return None
