"""The Flink functions of the job: thin shells that move state in and out of the logic classes.

Every function opens its ONNX sessions once, in ``open()``. State descriptors carry their schema
version in the name. Records between operators are small tuples (pickled by PyFlink); long-lived
state is the explicit byte encodings of :mod:`models.pipeline`.
"""

from __future__ import annotations

import importlib
import json
import sys
import threading
import time

from pyflink.common import Types
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import KeyedBroadcastProcessFunction, OutputTag, ProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from models.config import AlertConfig, ScoringConfig
from models.context import ContextCache, connect
from models.pipeline import (
    ENTITY_STATE,
    SERIES_STATE,
    EntityLogic,
    EntityState,
    ModelBundle,
    SeriesLogic,
    SeriesState,
    score_json,
)
from operators.stats import instrumented
from udfs.parse import DeadLetter, Feedback, ParseLimits, parse_feedback, parse_model_update, parse_record

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


@instrumented("parse-validate")
class ParseValidate(ProcessFunction):
    """Raw Kafka rows (payload, partition, offset) -> metric events; refusals -> dead letters."""

    def __init__(self, topic: str, limits: ParseLimits) -> None:
        self.topic = topic
        self.limits = limits

    def open(self, ctx: RuntimeContext) -> None:
        group = ctx.get_metrics_group()
        self.bad = group.counter("dead_letters")
        self.good = group.counter("events")
        # events are added to the counter a thousand at a time: each inc() is a call into the JVM,
        # which cost as much per record as a third of a state update
        self.pending = 0

    def process_element(self, row, ctx):
        payload = bytes(row[0]) if row[0] is not None else b""
        now = _now_ms()
        out = parse_record(payload, now, self.limits)
        if isinstance(out, DeadLetter):
            self.bad.inc()
            yield DEAD_LETTERS, out.to_json(payload, self.topic, row[1], row[2], now)
            return
        self.pending += len(out)
        if self.pending >= 1000:
            self.good.inc(self.pending)
            self.pending = 0
        yield from out

    def close(self) -> None:
        if self.pending:
            self.good.inc(self.pending)
            self.pending = 0


class ParseFeedback(ProcessFunction):
    """Raw rows of the alert-feedback topic -> :class:`~udfs.parse.Feedback`; refusals -> dead letters."""

    def __init__(self, topic: str, max_bytes: int) -> None:
        self.topic = topic
        self.max_bytes = max_bytes

    def process_element(self, row, ctx):
        payload = bytes(row[0]) if row[0] is not None else b""
        out = parse_feedback(payload, self.max_bytes)
        if isinstance(out, DeadLetter):
            yield DEAD_LETTERS, out.to_json(payload, self.topic, row[1], row[2], _now_ms())
            return
        yield out


class EventTime(TimestampAssigner):
    def extract_timestamp(self, value, record_timestamp: int) -> int:
        return value.ts_ms


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
    return json.dumps({"schema": "vigil.model-event/v1", "operator": op, "model": model, "version": version,
                       "alias": alias, "status": status, "detail": detail, "at_ms": now_ms}, separators=(",", ":"))


_SIDE = {"forecast": FORECASTS, "drift": DRIFT, "shadow": SHADOW}


@instrumented("score-series")
class ScoreSeries(HotSwap):
    """Keyed by series: features, detector, adaptive threshold, forecaster."""

    operator_name = "score-series"

    def __init__(self, scoring: ScoringConfig, registry_root: str, redis_url: str, topic: str,
                 emit_scores: bool = False) -> None:
        self.scoring = scoring
        self.registry_root = registry_root
        self.redis_url = redis_url
        self.topic = topic
        self.emit_scores = emit_scores

    def open(self, ctx: RuntimeContext) -> None:
        preload_native()
        self.state = ctx.get_state(ValueStateDescriptor(SERIES_STATE, Types.PICKLED_BYTE_ARRAY()))
        self.logic = SeriesLogic(self.scoring, ModelBundle.load(self.registry_root, _redis_or_none(self.redis_url)))
        self.late = ctx.get_metrics_group().counter("late_events")

    def _bundle(self) -> ModelBundle:
        return self.logic.models

    def process_element(self, ev, ctx):
        if type(ev) is Feedback:
            raw = self.state.value()
            st = self.logic.on_feedback(SeriesState.from_bytes(raw) if raw is not None else None, ev)
            self.state.update(st.to_bytes())
            yield ev  # on to the service's entity state
            return
        wm = ctx.timer_service().current_watermark()
        if ev.ts_ms < wm:
            self.late.inc()
            now = _now_ms()
            detail = f"event time {ev.ts_ms} is behind the watermark {wm} (series {ev.series})"
            yield DEAD_LETTERS, DeadLetter("late_event", detail).to_json(
                _event_json(ev), self.topic, -1, -1, now)
            return
        raw = self.state.value()
        st = SeriesState.from_bytes(raw) if raw is not None else None
        st, scored, side = self.logic.on_record(st, ev, self.scoring.entity_tag, _now_ms())
        self.state.update(st.to_bytes())
        for kind, record in side:
            yield _SIDE[kind], record
        if self.emit_scores:
            yield SCORES, score_json(scored)
        yield scored


@instrumented("score-entity")
class ScoreEntity(HotSwap):
    """Keyed by service: clusterer over entity vectors, classifier, impact, grouping into alerts."""

    operator_name = "score-entity"

    def __init__(self, scoring: ScoringConfig, alerts: AlertConfig, registry_root: str, redis_url: str,
                 refresh_s: int) -> None:
        self.scoring = scoring
        self.alerts = alerts
        self.registry_root = registry_root
        self.redis_url = redis_url
        self.refresh_s = refresh_s

    def open(self, ctx: RuntimeContext) -> None:
        preload_native()
        self.state = ctx.get_state(ValueStateDescriptor(ENTITY_STATE, Types.PICKLED_BYTE_ARRAY()))
        client = _redis_or_none(self.redis_url)
        self.context = ContextCache(client, self.refresh_s)
        self.context.refresh()
        self.logic = EntityLogic(self.scoring, self.alerts, ModelBundle.load(self.registry_root, client),
                                 self.context)
        self.alert_count = ctx.get_metrics_group().counter("alerts")

    def _bundle(self) -> ModelBundle:
        return self.logic.models

    def process_element(self, scored, ctx):
        raw = self.state.value()
        st = EntityState.from_bytes(raw) if raw is not None else None
        if type(scored) is Feedback:
            self.state.update(self.logic.on_feedback(st, scored).to_bytes())
            return
        st, alerts, side = self.logic.on_record(st, scored, _now_ms())
        self.state.update(st.to_bytes())
        for kind, record in side:
            yield _SIDE[kind], record
        for a in alerts:
            self.alert_count.inc()
            yield a


def _redis_or_none(url: str):
    try:
        return connect(url)
    except Exception:  # noqa: BLE001 - a bad URL must not stop scoring; context stays empty
        return None


def _event_json(ev) -> bytes:
    return json.dumps({"metric": ev.metric, "value": ev.value, "timestamp": ev.ts_ms, "service": ev.service,
                       "tags": dict(ev.tags)}).encode()
