"""Detector runtime: calibrated ensemble score, adaptive threshold, severity, explanation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from models.artifact import ArtifactStore
from models.detector import AdaptiveThreshold, DetectorModel, TailCalibration, adaptive_thresholds, severity
from models.features import DETECTOR_FEATURES, SeriesWindow
from training.data import iter_steps
from training.simulate import MINUTE_MS, Incident, generate


@pytest.fixture(scope="module")
def detector(trained_store: Path) -> DetectorModel:
    return DetectorModel.from_store(ArtifactStore(trained_store))


@pytest.fixture(scope="module")
def spiky_series() -> tuple[np.ndarray, np.ndarray]:
    """Detector rows of one latency series with three injected spikes, and which rows are spikes."""
    start = 1_780_000_000_000 - (1_780_000_000_000 % 3_600_000)
    spikes = [Incident(f"s{i}", "spike", "search", "i-0", ("latency_p99_ms",), start + m * MINUTE_MS,
                       start + (m + 2) * MINUTE_MS, "latency") for i, m in enumerate((90, 150, 210))]
    sc = generate(seed=31, hours=4, start_ms=start, instances=1, incidents=spikes, business_metric=False)
    w = SeriesWindow()
    rows, is_spike = [], []
    for ts, samples in iter_steps(sc.events):
        for s in samples:
            if s.service == "search" and s.metric == "latency_p99_ms":
                if w.warm:
                    rows.append(w.detector_features(s.value))
                    is_spike.append(any(i.start_ms <= ts < i.end_ms for i in spikes))
                w.update(ts, s.value)
    return np.asarray(rows, dtype=np.float32), np.asarray(is_spike)


def test_scores_are_in_unit_interval_and_batch_equals_one_by_one(detector: DetectorModel, spiky_series) -> None:
    rows, _ = spiky_series
    batch = detector.score(rows)
    assert batch.shape == (len(rows),)
    assert np.all((batch >= 0) & (batch <= 1))
    one = np.array([detector.score_one(r.tolist()) for r in rows[:200]])
    np.testing.assert_allclose(one, batch[:200], atol=1e-9)


def test_injected_spikes_score_far_above_normal_points(detector: DetectorModel, spiky_series) -> None:
    rows, is_spike = spiky_series
    s = detector.score(rows)
    normal, spike = s[~is_spike], s[is_spike]
    assert spike.size == 6  # three spikes of two minutes
    # the lowest spike point beats 99% of normal points, and every spike crosses the base threshold
    assert spike.min() > np.percentile(normal, 99)
    assert spike.min() >= detector.threshold_base
    assert spike.mean() > 0.6 and normal.mean() < 0.15
    assert (normal >= detector.threshold_base).mean() < 0.01


def test_isolation_component_reproduces_score_samples_shape_and_sign(detector: DetectorModel, spiky_series) -> None:
    rows, is_spike = spiky_series
    ss = detector.score_samples(rows)
    assert ss.dtype == np.float32 and np.all((ss < 0) & (ss >= -1))
    assert ss[is_spike].mean() < ss[~is_spike].mean()  # sklearn sign: lower = more anomalous


def test_adaptive_threshold_follows_its_series(detector: DetectorModel) -> None:
    th = detector.new_threshold()
    assert th.threshold == detector.threshold_base
    restored = detector.new_threshold(th.to_tuple())
    assert restored.to_tuple() == th.to_tuple()

    t = AdaptiveThreshold(base=0.4, k=3.0, alpha=0.1, warmup=5)
    for _ in range(4):
        t.update(0.9)
    assert t.threshold == 0.4  # still warming up
    rng = np.random.default_rng(0)
    for v in rng.uniform(0.2, 0.8, size=200):  # a noisy series raises its own bar
        t.update(float(v))
    assert t.threshold > 0.4
    assert t.threshold == pytest.approx(t.mean + 3.0 * math.sqrt(t.var))
    quiet = AdaptiveThreshold(base=0.4, k=3.0, alpha=0.1, warmup=5)
    for _ in range(50):
        quiet.update(0.05)
    assert quiet.threshold == 0.4
    state = t.to_tuple()
    assert len(state) == 3 and all(isinstance(v, float) for v in state)
    again = AdaptiveThreshold.from_tuple(state, base=0.4, k=3.0, alpha=0.1, warmup=5)
    assert again.threshold == t.threshold


def test_vectorised_thresholds_equal_the_streaming_class() -> None:
    rng = np.random.default_rng(1)
    scores = rng.beta(1, 6, size=(3, 120))
    scores[1, 60:70] = 0.95
    mat = adaptive_thresholds(scores, 0.35, 2.5, 0.05, 10)
    for s in range(3):
        t = AdaptiveThreshold(0.35, 2.5, 0.05, 10)
        for j in range(scores.shape[1]):
            assert mat[s, j] == pytest.approx(t.threshold, abs=1e-12)
            t.update(float(scores[s, j]))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"base": 0.0, "k": 1.0}, "The 'base' parameter of AdaptiveThreshold must be in (0, 1]. Got 0.0."),
    ({"base": 0.5, "k": -1.0}, "The 'k' parameter of AdaptiveThreshold must be a non-negative float. Got -1.0."),
    ({"base": 0.5, "k": 1.0, "alpha": 2.0}, "The 'alpha' parameter of AdaptiveThreshold must be in (0, 1]. Got 2.0."),
])
def test_threshold_parameters_are_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        AdaptiveThreshold(**kwargs)
    assert str(err.value) == message


def test_severity_rises_with_the_excess_over_threshold(detector: DetectorModel) -> None:
    bands = {"medium": 0.1, "high": 0.3, "critical": 0.6}
    assert [severity(s, 0.5, bands) for s in (0.5, 0.56, 0.66, 0.81)] == ["low", "medium", "high", "critical"]
    order = ["low", "medium", "high", "critical"]
    b = detector.severity_bands
    assert 0 <= b["medium"] <= b["high"] <= b["critical"]
    levels = [order.index(detector.severity(s, 0.4)) for s in np.linspace(0.4, 1.0, 61)]
    assert levels == sorted(levels) and levels[0] == 0 and levels[-1] == 3


def test_explain_ranks_the_feature_that_moved(detector: DetectorModel, spiky_series) -> None:
    rows, is_spike = spiky_series
    ex = detector.explain(rows[np.argmax(is_spike)].tolist())
    assert sorted(name for name, _ in ex) == sorted(DETECTOR_FEATURES)
    mags = [abs(c) for _, c in ex]
    assert mags == sorted(mags, reverse=True)
    assert ex[0][0] in ("z_robust", "z_ewma", "z_delta", "z_fast_shift") and ex[0][1] > 3


def test_tail_calibration_is_monotone_and_scalar_equals_vector() -> None:
    rng = np.random.default_rng(3)
    cal = TailCalibration.fit(rng.exponential(size=20_000), (0.0, 0.1, 0.5, 0.9, 0.99), 6.0)
    xs = np.linspace(-1, 30, 400)
    v = cal(xs)
    assert np.all(np.diff(v) >= 0) and v[0] == 0 and v[-1] == 1.0
    np.testing.assert_allclose([cal.one(float(x)) for x in xs], v, atol=1e-12)
    # calibrated against the training distribution: the 99th percentile maps to -log10(0.01)/6
    assert cal.one(cal.quantiles[-1]) == pytest.approx(2 / 6)
    assert TailCalibration.from_dict(cal.to_dict()).one(3.0) == cal.one(3.0)
