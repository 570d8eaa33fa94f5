"""The logic of one shard for a whole batch of raw records, free of Flink.

A shard is a set of services (the JVM side hashes each record's service to one). The job's one
Python operator per task manager receives a batch of raw Kafka records of one shard and hands it to
:meth:`ShardLogic.on_batch`, which parses them (:mod:`udfs.parse`), folds every event into its
series' state and every scored sample into its service's state, and returns all the outputs.

Events of different series are independent, so a batch is cut into *rounds*: round ``r`` holds the
``r``-th event of each series in the batch, and each round calls the detector and the forecaster
once (:meth:`models.pipeline.SeriesLogic.on_round`). The entity step (clusterer, classifier,
grouping) then runs over the scored samples in arrival order. Each series sees its events in
arrival order and each service its samples in arrival order, so the outputs do not depend on where
the batch boundaries fall: one record at a time gives the same outputs (``tests/pipeline``).

Event time is per series: an event more than ``out_of_orderness_ms`` behind the latest event of its
own series is late (a dead letter ``late_event``); no other series' clock can make it late.

State is bounded (:class:`models.config.StateConfig`). A series quiet for longer than the ttl starts
afresh on its next event, and so do a service and a peer; :meth:`ShardLogic.sweep`, which the job
runs on a timer, deletes what has gone that quiet by the shard's clock (its latest event time) and
resolves quiet alert groups (a ``resolved`` revision with ``endsAt``, which the service's next
candidate would otherwise emit). The logic already treats all of that as absent, so where a sweep
falls changes no output but the time a ``resolved`` revision is emitted; the one exception is a
series that sends, after a sweep deleted it, an event older than the ttl behind the shard's clock:
it starts afresh instead of being late. A service
holds at most ``max_series_per_service`` series; an event of one more is a dead letter
``too_many_series`` (the count frees up at the sweep after a series expires).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.config import AlertConfig, RulesConfig, ScoringConfig, StateConfig
from models.pipeline import (
    NEVER_MS,
    EntityLogic,
    EntityState,
    ModelBundle,
    Scored,
    SeriesLogic,
    SeriesState,
    score_json,
)
from models.rules import NONE, Effects, Rules, fold_window
from udfs.parse import (
    DeadLetter,
    Feedback,
    MetricEvent,
    ParseLimits,
    parse,
    parse_feedback,
    parse_ops_event,
    split_series_key,
)

METRIC, FEEDBACK, OPS = 0, 1, 2  # record kinds in a batch (the JVM batcher's ``kind`` column)


@dataclass
class ShardState:
    """Working copy of a shard's keyed state: series and service states by name.

    States are decoded from their stored bytes (``load_series`` / ``load_entity``) on first touch
    and kept decoded; :meth:`take_dirty` encodes the ones a batch changed, for the caller to write
    through to durable state before the next checkpoint barrier.
    """

    load_series: Callable[[str], bytes | None]
    load_entity: Callable[[str], bytes | None]
    # every stored (key, bytes) of the durable state: what a sweep and the series count read
    scan_series: Callable[[], Iterable[tuple[str, bytes]]] = lambda: ()
    scan_entities: Callable[[], Iterable[tuple[str, bytes]]] = lambda: ()
    series: dict[str, SeriesState] = field(default_factory=dict)
    entities: dict[str, EntityState] = field(default_factory=dict)
    dirty_series: set[str] = field(default_factory=set)
    dirty_entities: set[str] = field(default_factory=set)
    clock_ms: int = NEVER_MS  # the latest event time the shard has seen (since this copy was made)
    _counts: dict[str, int] | None = None  # series per service, counted on first need

    def find_series(self, key: str) -> SeriesState | None:
        """The series' state, or None if it has none."""
        st = self.series.get(key)
        if st is None:
            raw = self.load_series(key)
            if raw is None:
                return None
            st = self.series[key] = SeriesState.from_bytes(raw)
        return st

    def new_series(self, key: str, service: str) -> SeriesState:
        counts = self.series_counts()
        counts[service] = counts.get(service, 0) + 1
        st = self.series[key] = SeriesState()
        self.dirty_series.add(key)
        return st

    def series_counts(self) -> dict[str, int]:
        """Series per service in state (read from the durable state once, then kept up to date)."""
        if self._counts is None:
            stored = {key for key, _ in self.scan_series()}
            counts: dict[str, int] = {}
            for key in stored.union(self.series):  # with the new ones of this batch, not written through yet
                svc = split_series_key(key)[0]
                counts[svc] = counts.get(svc, 0) + 1
            self._counts = counts
        return self._counts

    def drop_series(self, key: str) -> None:
        self.series.pop(key, None)
        self.dirty_series.discard(key)
        if self._counts is not None:
            svc = split_series_key(key)[0]
            left = self._counts.get(svc, 0) - 1
            if left > 0:
                self._counts[svc] = left
            else:
                self._counts.pop(svc, None)

    def drop_entity(self, service: str) -> None:
        self.entities.pop(service, None)
        self.dirty_entities.discard(service)

    def get_entity(self, service: str, raw: bytes | None = None) -> EntityState:
        """The service's state (``raw``: its stored bytes, when the caller has read them already)."""
        st = self.entities.get(service)
        if st is None:
            if raw is None:
                raw = self.load_entity(service)
            st = EntityState.from_bytes(raw) if raw is not None else EntityState()
            self.entities[service] = st
        return st

    def take_dirty(self) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """The encodings of every series and service state changed since the last call."""
        s = {k: self.series[k].to_bytes() for k in self.dirty_series}
        e = {k: self.entities[k].to_bytes() for k in self.dirty_entities}
        self.dirty_series.clear()
        self.dirty_entities.clear()
        return s, e


@dataclass
class BatchResult:
    """Everything one batch produced, each list in arrival order of the records that caused it."""

    alerts: list[str] = field(default_factory=list)
    forecasts: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    shadow: list[str] = field(default_factory=list)
    scores: list[str] = field(default_factory=list)  # vigil.score/v1, when asked for
    scored: list[Scored] = field(default_factory=list)  # when asked for (in-process runs)
    # (refusal, raw payload, kind, partition, offset)
    dead_letters: list[tuple[DeadLetter, bytes, int, int, int]] = field(default_factory=list)
    events: int = 0  # valid metric events
    windows: int = 0  # deployment and maintenance windows folded in (events-topic records)
    skipped: Counter[str] = field(default_factory=Counter)  # left out of records, by udfs.parse.SKIP_REASONS
    shapes: Counter[str] = field(default_factory=Counter)  # metric records by udfs.parse.SHAPES
    clock_ms: int = NEVER_MS  # the shard's latest event time after the batch
    late: int = 0
    rounds: int = 0


@dataclass
class SweepResult:
    """What :meth:`ShardLogic.sweep` deleted: keys for the caller to remove from durable state."""

    series: list[str] = field(default_factory=list)
    entities: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)  # "resolved" revisions of the groups it closed


@dataclass
class _Item:
    pos: int  # arrival position in the batch (records may yield several events)
    ev: Any  # MetricEvent | Feedback
    scored: Scored | None = None
    side: list[tuple[str, str]] = field(default_factory=list)
    dead: bool = False  # a dead letter after all (a verdict on a series without state)


class ShardLogic:
    """Parses, scores and alerts a batch of one shard's raw records."""

    def __init__(self, scoring: ScoringConfig, alerts: AlertConfig, models: ModelBundle,
                 context: Callable[[str], dict[str, Any]], limits: ParseLimits, out_of_orderness_ms: int,
                 emit_scores: bool = False, keep_scored: bool = False, state: StateConfig | None = None,
                 rules: RulesConfig | None = None) -> None:
        self.scoring = scoring
        self.rules = Rules(rules or RulesConfig())
        self.context = context
        self.state_cfg = state or StateConfig()
        self.ttl_ms = self.state_cfg.series_ttl_s * 1000
        self.limits = limits
        self.out_of_orderness_ms = out_of_orderness_ms
        self.emit_scores = emit_scores
        self.keep_scored = keep_scored
        self.series = SeriesLogic(scoring, models)
        self.entity = EntityLogic(scoring, alerts, models, context, self.state_cfg.series_ttl_s)

    @property
    def models(self) -> ModelBundle:
        return self.series.models

    def on_batch(self, state: ShardState, kinds: Sequence[int], payloads: Sequence[bytes],
                 partitions: Sequence[int], offsets: Sequence[int], now_ms: int) -> BatchResult:
        """Fold a batch of raw records (parallel columns) into ``state``; return what it produced."""
        res = BatchResult()
        items: list[_Item] = []
        dead: list[tuple[int, tuple[DeadLetter, bytes, int, int, int]]] = []
        for pos, kind in enumerate(kinds):
            payload = payloads[pos]
            if kind == OPS:  # a window opens before anything of the batch is scored: it is judged by event time
                win = parse_ops_event(payload, self.limits.max_bytes)
                if isinstance(win, DeadLetter):
                    dead.append((pos, (win, payload, kind, partitions[pos], offsets[pos])))
                    continue
                st = state.get_entity(win.service)
                st.windows = fold_window(st.windows, win.kind, win.start_ms, win.end_ms, win.reason,
                                         self.rules.cfg.max_windows, state.clock_ms)
                state.dirty_entities.add(win.service)
                res.windows += 1
                continue
            if kind == FEEDBACK:
                fb = parse_feedback(payload, self.limits.max_bytes)
                if isinstance(fb, DeadLetter):
                    dead.append((pos, (fb, payload, kind, partitions[pos], offsets[pos])))
                else:
                    items.append(_Item(pos, fb))
                continue
            out = parse(payload, now_ms, self.limits)
            for refusal, part in out.dead:  # the whole record's, or one part's of a batch
                dead.append((pos, (refusal, payload if part is None else part, kind, partitions[pos], offsets[pos])))
            res.skipped.update(out.skipped)
            res.shapes[out.shape] += 1
            for ev in out.events:
                items.append(_Item(pos, ev))
                if ev.ts_ms > state.clock_ms:
                    state.clock_ms = ev.ts_ms
        # rounds: the r-th item of each series in round r
        rounds: list[list[_Item]] = []
        seen: dict[str, int] = {}
        for it in items:
            r = seen.get(it.ev.series, 0)
            seen[it.ev.series] = r + 1
            if r == len(rounds):
                rounds.append([])
            rounds[r].append(it)
        res.rounds = len(rounds)
        for rnd in rounds:
            self._series_round(state, rnd, payloads, partitions, offsets, now_ms, dead, res)
        # entities, in arrival order
        for it in items:
            ev = it.ev
            if it.dead:
                continue
            # the logic updates the states it is handed in place
            if type(ev) is Feedback:
                self.entity.on_feedback(state.get_entity(ev.service), ev)
                state.dirty_entities.add(ev.service)
                continue
            s = it.scored
            if s is None:  # late
                continue
            _, alerts, e_side = self.entity.on_record(state.get_entity(s.service), s, now_ms)
            state.dirty_entities.add(s.service)
            res.alerts.extend(alerts)
            for side_kind, record in it.side + e_side:
                getattr(res, _SIDE[side_kind]).append(record)
            if self.emit_scores:
                res.scores.append(score_json(s))
            if self.keep_scored:
                res.scored.append(s)
        dead.sort(key=lambda d: d[0])
        res.dead_letters = [d for _, d in dead]
        res.clock_ms = state.clock_ms
        return res

    def _series_round(self, state: ShardState, rnd: list[_Item], payloads: Sequence[bytes],
                      partitions: Sequence[int], offsets: Sequence[int], now_ms: int, dead: list,
                      res: BatchResult) -> None:
        sts: list[SeriesState] = []
        evs: list[MetricEvent] = []
        its: list[_Item] = []
        cap = self.state_cfg.max_series_per_service
        for it in rnd:
            ev = it.ev
            st = state.find_series(ev.series)
            if type(ev) is Feedback:
                if st is None:  # nothing to judge: the series never sent data, or expired
                    it.dead = True
                    dead.append((it.pos, (DeadLetter("unknown_series", f"series {ev.series} has no state: it sent no "
                                                     "data, or was quiet past state.series_ttl_s"),
                                          payloads[it.pos], FEEDBACK, partitions[it.pos], offsets[it.pos])))
                    continue
                self.series.on_feedback(st, ev)
                state.dirty_series.add(ev.series)
                continue
            if st is None:
                n = state.series_counts().get(ev.service, 0)
                if n >= cap:
                    dead.append((it.pos, (DeadLetter("too_many_series", f"service {ev.service} already holds {n} "
                                                     f"series (state.max_series_per_service {cap})"),
                                          _event_json(ev), METRIC, partitions[it.pos], offsets[it.pos])))
                    continue
                st = state.new_series(ev.series, ev.service)
            elif ev.ts_ms - st.max_ts_ms > self.ttl_ms:  # quiet past the ttl: start afresh, as after a sweep
                st = state.series[ev.series] = SeriesState()
            if ev.ts_ms < st.max_ts_ms - self.out_of_orderness_ms - 1:
                res.late += 1
                detail = (f"event time {ev.ts_ms} is more than {self.out_of_orderness_ms} ms behind the latest "
                          f"event time {st.max_ts_ms} of its series {ev.series}")
                dead.append((it.pos, (DeadLetter("late_event", detail), _event_json(ev), METRIC,
                                      partitions[it.pos], offsets[it.pos])))
                continue
            sts.append(st)
            evs.append(ev)
            its.append(it)
        if not evs:
            return
        scored, sides = self.series.on_round(sts, evs, self.scoring.entity_tag, now_ms, self._effects(state, evs))
        res.events += len(evs)
        for it, s, side in zip(its, scored, sides, strict=True):
            it.scored = s
            it.side = side
            state.dirty_series.add(s.series)


    def _effects(self, state: ShardState, evs: list[MetricEvent]) -> list[Effects] | None:
        """The business rules that apply to each event (None: none applies to any)."""
        out = []
        any_rule = False
        of = self.rules.effects
        for ev in evs:
            e = of(ev.service, ev.ts_ms, state.get_entity(ev.service).windows, self.context(ev.service))
            any_rule = any_rule or e is not NONE
            out.append(e)
        return out if any_rule else None

    def sweep(self, state: ShardState, now_ms: int) -> SweepResult:
        """Delete what has gone quiet by the shard's clock (see the module's docstring); the caller removes
        the returned keys from durable state and writes :meth:`ShardState.take_dirty` through."""
        res = SweepResult()
        if state.clock_ms == NEVER_MS:  # no event since this copy was made: no clock to judge by
            return res
        horizon = state.clock_ms - self.ttl_ms
        for key, raw in list(state.scan_series()):
            st = state.series.get(key)
            if (st.max_ts_ms if st is not None else SeriesState.peek_max_ts(raw)) < horizon:
                res.series.append(key)
        for key in res.series:
            state.drop_series(key)
        for service, raw in list(state.scan_entities()):
            verdict, resolved = self.entity.expire(state.get_entity(service, raw), state.clock_ms, now_ms)
            res.alerts.extend(resolved)
            if verdict == "gone":
                res.entities.append(service)
                state.drop_entity(service)
            elif verdict == "changed":
                state.dirty_entities.add(service)
        return res


_SIDE = {"forecast": "forecasts", "drift": "drift", "shadow": "shadow"}


def _event_json(ev: MetricEvent) -> bytes:
    """A late event as native JSON, the payload of its dead letter (one record may hold several events)."""
    return json.dumps({"metric": ev.metric, "value": ev.value, "timestamp": ev.ts_ms, "service": ev.service,
                       "tags": dict(ev.tags)}).encode()
