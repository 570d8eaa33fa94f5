"""The per-series Page-Hinkley test: state as numbers, and the same answers as river's own detector."""

from __future__ import annotations

import random

import pytest
from river.drift import PageHinkley

from models.config import ConfigError, DriftConfig, build
from models.drift import PH_STRUCT, DriftTest


def _stream(seed: int = 5) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(0.1, 0.05) for _ in range(400)] + [rng.gauss(0.6, 0.05) for _ in range(200)]


def test_saved_and_restored_state_equals_one_uninterrupted_river_detector():
    cfg = DriftConfig(min_instances=30, delta=0.05, threshold=5.0)
    river_ph = PageHinkley(min_instances=30, delta=0.05, threshold=5.0, alpha=cfg.alpha, mode="both")
    test, state = DriftTest(cfg), None
    river_hits, ours = [], []
    for i, x in enumerate(_stream()):
        river_ph.update(x)
        if river_ph.drift_detected:
            river_hits.append(i)
        # every update starts from the packed bytes, as the job's keyed state does
        state = PH_STRUCT.unpack(PH_STRUCT.pack(*state)) if state is not None else None
        state, hit = test.update(state, x)
        if hit:
            ours.append(i)
    assert ours == river_hits
    assert len(ours) >= 1 and 400 <= ours[0] < 420  # the shift at 400 is found within 20 samples


def test_one_detector_serves_many_series_without_mixing_them():
    test = DriftTest(DriftConfig())
    quiet, shifted = None, None
    hits = {"quiet": 0, "shifted": 0}
    for q, s in zip(_stream(1)[:400] + _stream(1)[:200], _stream(2), strict=True):
        quiet, h1 = test.update(quiet, q)
        shifted, h2 = test.update(shifted, s)
        hits["quiet"] += h1
        hits["shifted"] += h2
    assert hits == {"quiet": 0, "shifted": hits["shifted"]} and hits["shifted"] >= 1
    assert test.stats(quiet)["n"] == 600 and test.stats(quiet)["threshold"] == 5.0


def test_drift_config_is_validated():
    with pytest.raises(ConfigError, match="'threshold' parameter of DriftConfig"):
        DriftConfig(threshold=-1)
    with pytest.raises(ConfigError, match=r"Unknown key\(s\) \['lambda'\]"):
        build(DriftConfig, {"lambda": 3}, "scoring.drift_score")
