"""The same job run in-process, without Kafka or Flink: for tests, evaluation and benchmarks.

It hands batches of raw records to exactly the logic the Flink operator calls
(:class:`models.shard.ShardLogic`), with the state kept as the same byte encodings in dicts.
Shards are independent, so one in-process shard holding every service gives each topic the same
records in the same per-key order as the job. Comparing its output with the streaming job's is how
we show that what the job does is what the logic does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from common.config import VigilConfig
from models.pipeline import ModelBundle
from models.shard import FEEDBACK, METRIC, OPS, BatchResult, ShardLogic, ShardState, SweepResult
from udfs.parse import DeadLetter


@dataclass
class InProcessJob:
    """Keyed state as bytes in dicts; ``feed`` records one at a time or ``run`` them in batches."""

    cfg: VigilConfig
    models: ModelBundle
    context: Callable[[str], dict[str, Any]] = lambda service: {}
    clock: Callable[[], int] = lambda: 0
    series_state: dict[str, bytes] = field(default_factory=dict)
    entity_state: dict[str, bytes] = field(default_factory=dict)
    alerts: list[str] = field(default_factory=list)
    forecasts: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    shadow: list[str] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    dead_payloads: list[bytes] = field(default_factory=list)  # what each dead letter carries: a record or a part
    skipped: Counter[str] = field(default_factory=Counter)  # left out of records, by udfs.parse.SKIP_REASONS
    scored: list[Any] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)  # size of every batch fed

    def __post_init__(self) -> None:
        self.logic = ShardLogic(self.cfg.scoring, self.cfg.alerts, self.models, self.context,
                                self.cfg.validation.limits(), self.cfg.job.out_of_orderness_ms, keep_scored=True,
                                state=self.cfg.state, rules=self.cfg.rules)
        self.state = ShardState(self.series_state.get, self.entity_state.get, self.series_state.items,
                                self.entity_state.items)
        self._offset = 0

    def feed_batch(self, payloads: list[bytes], now_ms: int, kinds: list[int] | None = None) -> BatchResult:
        """One batch of raw records (metric records unless ``kinds`` says otherwise)."""
        n = len(payloads)
        kinds = kinds or [METRIC] * n
        offsets = list(range(self._offset, self._offset + n))
        self._offset += n
        res = self.logic.on_batch(self.state, kinds, payloads, [0] * n, offsets, now_ms)
        self._write_through()
        self.alerts.extend(res.alerts)
        self.forecasts.extend(res.forecasts)
        self.drift.extend(res.drift)
        self.shadow.extend(res.shadow)
        self.scored.extend(res.scored)
        self.dead_letters.extend(d[0] for d in res.dead_letters)
        self.dead_payloads.extend(d[1] for d in res.dead_letters)
        self.skipped.update(res.skipped)
        self.batches.append(n)
        return res

    def _write_through(self) -> None:
        s, e = self.state.take_dirty()
        self.series_state.update(s)
        self.entity_state.update(e)

    def sweep(self, now_ms: int = 0) -> SweepResult:
        """What the job's timer does: delete the state that has gone quiet by the shard's clock, and
        resolve quiet alert groups (their revisions join ``alerts``)."""
        res = self.logic.sweep(self.state, now_ms)
        self.alerts.extend(res.alerts)
        for k in res.series:
            del self.series_state[k]
        for k in res.entities:
            del self.entity_state[k]
        self._write_through()
        return res

    def feed(self, payload: bytes, now_ms: int) -> None:
        """One metric record."""
        self.feed_batch([payload], now_ms)

    def feed_feedback(self, payload: bytes, now_ms: int = 0) -> None:
        """One record of the alert-feedback topic: to the series' state, then the service's."""
        self.feed_batch([payload], now_ms, [FEEDBACK])

    def feed_ops_event(self, payload: bytes, now_ms: int = 0) -> None:
        """One record of the events topic (a deployment or maintenance window) to its service's state."""
        self.feed_batch([payload], now_ms, [OPS])

    def run(self, payloads: Iterable[bytes], now_ms: int, batch_size: int = 256) -> InProcessJob:
        """Every payload, in batches of ``batch_size`` (the outputs do not depend on it)."""
        batch: list[bytes] = []
        for p in payloads:
            batch.append(p)
            if len(batch) >= batch_size:
                self.feed_batch(batch, now_ms)
                batch = []
        if batch:
            self.feed_batch(batch, now_ms)
        return self
