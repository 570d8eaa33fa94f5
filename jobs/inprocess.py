"""The same job graph run in-process, without Kafka or Flink: for tests, evaluation and benchmarks.

It applies exactly the functions the Flink operators call (parse, :class:`SeriesLogic`,
:class:`EntityLogic`), keyed the same way, in arrival order, with the same watermark rule for late
events. Comparing its output with the streaming job's is how we show that what the job does is
what the logic does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from jobs.config import VigilConfig
from models.pipeline import EntityLogic, EntityState, ModelBundle, SeriesLogic, SeriesState
from udfs.parse import DeadLetter, parse_feedback, parse_record


@dataclass
class InProcessJob:
    """Keyed state in dicts; ``feed`` one raw record at a time."""

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
    scored: list[Any] = field(default_factory=list)
    max_ts: int = -(2**63)

    def __post_init__(self) -> None:
        self.series = SeriesLogic(self.cfg.scoring, self.models)
        self.entity = EntityLogic(self.cfg.scoring, self.cfg.alerts, self.models, self.context)

    def watermark(self) -> int:
        return self.max_ts - self.cfg.job.out_of_orderness_ms - 1

    def feed(self, payload: bytes, now_ms: int) -> None:
        out = parse_record(payload, now_ms, self.cfg.validation.limits())
        if isinstance(out, DeadLetter):
            self.dead_letters.append(out)
            return
        for ev in out:
            if ev.ts_ms < self.watermark():
                self.dead_letters.append(DeadLetter("late_event", f"event time {ev.ts_ms} is behind the watermark"))
                continue
            raw = self.series_state.get(ev.series)
            st, scored, side = self.series.on_record(SeriesState.from_bytes(raw) if raw else None, ev,
                                                     self.cfg.scoring.entity_tag, now_ms)
            self.series_state[ev.series] = st.to_bytes()
            self.scored.append(scored)
            raw_e = self.entity_state.get(ev.service)
            est, alerts, e_side = self.entity.on_record(EntityState.from_bytes(raw_e) if raw_e else None, scored,
                                                        now_ms)
            self.entity_state[ev.service] = est.to_bytes()
            self.alerts.extend(alerts)
            for kind, record in side + e_side:
                {"forecast": self.forecasts, "drift": self.drift, "shadow": self.shadow}[kind].append(record)
        for ev in out:
            self.max_ts = max(self.max_ts, ev.ts_ms)

    def feed_feedback(self, payload: bytes) -> None:
        """One record of the alert-feedback topic: to the series' state, then the service's."""
        fb = parse_feedback(payload, self.cfg.validation.max_bytes)
        if isinstance(fb, DeadLetter):
            self.dead_letters.append(fb)
            return
        raw = self.series_state.get(fb.series)
        self.series_state[fb.series] = self.series.on_feedback(SeriesState.from_bytes(raw) if raw else None,
                                                               fb).to_bytes()
        raw_e = self.entity_state.get(fb.service)
        self.entity_state[fb.service] = self.entity.on_feedback(EntityState.from_bytes(raw_e) if raw_e else None,
                                                                fb).to_bytes()

    def run(self, payloads: Iterable[bytes], now_ms: int) -> InProcessJob:
        for p in payloads:
            self.feed(p, now_ms)
        return self
