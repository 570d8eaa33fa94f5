"""The self-normalised score: the same value is equally rare on a quiet and a noisy series."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from models.config import ConfigError, SurpriseConfig
from models.surprise import SurpriseState, surprise_round

# HTM's range rule (5%, from the 20th sample, whatever the detector says), so that short series show it
CFG = SurpriseConfig(learn=20, range_tolerance=0.05, range_evidence_z=float("-inf"))


def _feed(evidence, values, cfg=CFG, state=None):
    st = state or SurpriseState()
    out = [float(surprise_round([st], np.array([e]), np.array([x]), cfg)[0]) for e, x in zip(evidence, values,
                                                                                              strict=True)]
    return np.array(out), st


@pytest.mark.parametrize(("level", "spread"), [(0.05, 0.01), (0.5, 0.12)])
def test_normal_evidence_rarely_reaches_the_bar_on_quiet_and_noisy_series_alike(level, spread):
    rng = np.random.default_rng(7)
    ev = np.clip(rng.normal(level, spread, 3000), 0, 1)
    values = rng.normal(100, 1, 3000)
    values[:200] = np.linspace(90, 110, 200)  # a range learned early: later values stay inside it
    s, _ = _feed(ev, values)
    assert (s[CFG.learn:] >= CFG.alert_at).mean() < 0.005
    # a sustained rise of the evidence by 6 of its own spreads is a detection on either series
    shifted = np.concatenate([ev, np.clip(np.full(20, level + 6 * spread), 0, 1)])
    s2, _ = _feed(shifted, np.concatenate([values, np.full(20, 100.0)]))
    assert s2[3000:].max() >= CFG.alert_at


def test_a_value_beyond_the_range_ever_seen_scores_one_and_within_tolerance_does_not():
    values = [10.0, 20.0] * 15 + [20.4, 15.0, 21.0]
    s, st = _feed([0.1] * len(values), values)
    assert s[30] < CFG.alert_at  # 20.4 is within 5% of the range (10) above 20
    assert s[32] == 1.0  # 21.0 is not
    # 20.4 was normal: the range holds it; 21.0 was flagged: it moved the edge half-way
    assert st.lo == 10.0 and st.hi == pytest.approx(20.7)


def test_a_second_spike_is_a_surprise_again_and_a_lasting_shift_is_absorbed():
    base = [10.0, 20.0] * 15
    s, _ = _feed([0.1] * 80, base + [100.0] * 2 + [15.0] * 40 + [100.0] * 8)
    assert s[30] == 1.0 and s[72] == 1.0  # the same spike, 40 samples later, counts again
    s, st = _feed([0.1] * 80, base + [60.0] * 50)  # a new level, for good
    assert s[30] == 1.0 and (s[40:] < CFG.alert_at).all() and st.hi > 59.0


def test_only_the_first_sample_of_a_run_counts():
    r = CFG.refractory
    values = [10.0, 20.0] * 15 + [50.0 * 1.5**i for i in range(r + 2)]  # every value a new high
    s, _ = _feed([0.1] * len(values), values)
    run = s[30:]
    assert run[0] == 1.0
    assert run[1:r + 1] == pytest.approx([CFG.damp] * r)  # damped while the refractory lasts ...
    assert run[r + 1] == 1.0  # ... and a run longer than it counts again


def test_accepting_the_flagged_value_stretches_the_range_to_hold_it():
    base = [10.0, 20.0] * 15
    s, st = _feed([0.1] * 33, base + [100.0, 15.0, 15.0])
    assert s[30] == 1.0 and st.flagged == 100.0 and st.hi < 100.0
    st.accept_flagged()
    assert st.hi == 100.0
    s2, _ = _feed([0.1], [100.0], state=st)
    assert s2[0] < CFG.alert_at


def test_a_range_break_counts_only_where_the_detector_agrees_when_asked_to():
    strict = SurpriseConfig(learn=20, range_tolerance=0.05, range_evidence_z=2.0)
    values = [10.0, 20.0] * 15 + [30.0, 15.0, 40.0]
    evidence = [0.1, 0.12] * 15 + [0.11, 0.1, 0.9]
    s, _ = _feed(evidence, values, cfg=strict)
    assert s[30] < strict.alert_at  # beyond the range, but the detector sees nothing unusual
    assert s[32] == 1.0  # beyond it again, and the detector agrees
    assert SurpriseConfig().range_evidence_z == 2.0 and SurpriseConfig().learn == 100


def test_a_stronger_event_breaks_through_the_refractory_period():
    values = [10.0, 20.0] * 15 + [30.0, 15.0, 15.0, 60.0, 15.0]
    evidence = [0.1] * 30 + [0.3, 0.1, 0.1, 0.9, 0.1]
    s, st = _feed(evidence, values)
    assert s[30] == 1.0 and s[33] == 1.0  # the second, stronger, is not damped
    assert (st.flagged, st.flagged_evidence, st.quiet) == (60.0, 0.9, CFG.refractory - 1)


def test_nothing_counts_before_the_series_has_learned():
    s, st = _feed([0.9] * CFG.learn, [float(i * i) for i in range(CFG.learn)])
    assert (s == 0.0).all() and st.n == CFG.learn


def test_a_round_equals_one_series_at_a_time_and_a_what_if_changes_nothing():
    rng = np.random.default_rng(3)
    ev = rng.uniform(0, 1, (3, 200))
    x = rng.normal(0, 1, (3, 200))
    x[1, 150] = 40.0
    one = [_feed(ev[k], x[k]) for k in range(3)]
    states = [SurpriseState() for _ in range(3)]
    rounds = np.stack([surprise_round(states, ev[:, t], x[:, t], CFG) for t in range(200)], axis=1)
    for k in range(3):
        np.testing.assert_array_equal(rounds[k], one[k][0])
        assert states[k] == one[k][1]
    before = copy.deepcopy(states)
    surprise_round(states, np.array([1.0, 1.0, 1.0]), np.array([99.0, 99.0, 99.0]), CFG, update=False)
    assert states == before


def test_state_round_trips_through_its_encoding():
    _, st = _feed(np.linspace(0, 1, 50), np.linspace(-5, 5, 50))
    back, end = SurpriseState.from_bytes(b"xx" + st.to_bytes(), 2)
    assert back == st and end == 2 + len(st.to_bytes())
    assert len(st.to_bytes()) <= 144  # a fixed size: 10 recent values and seven numbers
    with pytest.raises(ValueError, match="surprise/v1"):
        SurpriseState.from_bytes(b"\x07" + st.to_bytes()[1:])


def test_config_refuses_a_damping_that_could_reach_the_bar():
    with pytest.raises(ConfigError, match="'damp' parameter of SurpriseConfig must be below alert_at"):
        SurpriseConfig(damp=0.5, alert_at=0.5)
    with pytest.raises(ConfigError, match="'short' parameter"):
        SurpriseConfig(short=0)
