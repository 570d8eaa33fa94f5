"""The detector's surprise in the series logic: off by default, on by configuration."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from common.config import VigilConfig
from models.pipeline import SeriesLogic, SeriesState
from udfs.parse import MetricEvent

START = 1_780_000_000_000


def _events(series: str, n: int, spike_at: int, seed: int = 0) -> list[MetricEvent]:
    rng = np.random.default_rng(seed)
    vals = 50.0 + rng.normal(0, 1, n)
    vals[spike_at] += 40.0
    return [MetricEvent(series, "s", "cpu_util", (("instance", series[-1]),), START + i * 60_000, float(v))
            for i, v in enumerate(vals)]


def _logic(models, **surprise) -> SeriesLogic:
    cfg = VigilConfig.load(overrides={"validation": {"max_past_s": None, "max_future_s": None},
                                      "scoring": {"surprise": surprise}})
    return SeriesLogic(cfg.scoring, models)


def _run(logic, events):
    st, out = None, []
    for e in events:
        st, scored, _ = logic.on_record(st, e, "instance")
        out.append(scored)
    return st, out


def test_off_by_default_the_score_is_the_detectors_own(models):
    logic = _logic(models)
    assert logic.cfg.surprise.enabled is False
    st, out = _run(logic, _events("s|cpu_util|instance=a", 200, 150))
    warm = [s for s in out if s.det is not None]
    assert all(s.score == s.evidence for s in warm)
    assert st.surprise.n == 0  # not kept while off
    assert out[150].trigger == "detector"


def test_on_a_learned_series_alerts_on_its_surprise_and_a_young_one_as_before(models):
    logic = _logic(models, enabled=True, learn=50)
    plain = _logic(models)
    events = _events("s|cpu_util|instance=a", 200, 150)
    st, out = _run(logic, events)
    _, base = _run(plain, events)
    warmup = logic.cfg.warmup
    young = out[warmup:warmup + 50]
    assert [(s.score, s.threshold, s.trigger) for s in young] == \
        [(s.score, s.threshold, s.trigger) for s in base[warmup:warmup + 50]]
    learned = out[warmup + 50:]
    assert all(s.threshold == logic.cfg.surprise.alert_at for s in learned)
    spike = out[150]
    assert spike.trigger == "detector" and spike.score == 1.0 and spike.evidence == base[150].score
    assert sum(s.trigger == "detector" for s in learned) <= 2  # the spike, and at most one more
    assert st.surprise.n == 200 - warmup and st.surprise.flagged == pytest.approx(events[150].value)
    back = SeriesState.from_bytes(st.to_bytes())
    assert back.surprise == st.surprise and back.to_bytes() == st.to_bytes() and st.to_bytes()[0] == 5


def test_on_a_round_of_series_equals_each_series_alone(models):
    logic = _logic(models, enabled=True, learn=30)
    a, b = _events("s|cpu_util|instance=a", 120, 90, seed=1), _events("s|cpu_util|instance=b", 120, 100, seed=2)
    st_a, one_a = _run(logic, a)
    st_b, one_b = _run(logic, b)
    sa, sb = SeriesState(), SeriesState()
    together = [logic.on_round([sa, sb], [ea, eb], "instance")[0] for ea, eb in zip(a, b, strict=True)]
    assert [t[0] for t in together] == one_a and [t[1] for t in together] == one_b
    assert (sa, sb) == (st_a, st_b)


def test_a_false_positive_verdict_stretches_the_range_over_what_it_flagged(models):
    from udfs.parse import Feedback

    logic = _logic(models, enabled=True, learn=50)
    events = _events("s|cpu_util|instance=a", 200, 150)
    st, out = _run(logic, events[:160])
    assert out[150].trigger == "detector"
    before = copy.deepcopy(st)
    logic.on_feedback(st, Feedback("x", "s|cpu_util|instance=a", "s", "saturation", "false_positive", "me", "", 0))
    assert st.surprise.hi == pytest.approx(events[150].value) and st.surprise.hi > before.surprise.hi
    assert st.fb_tail == before.fb_tail * logic.cfg.feedback_tail_factor
