"""A corpus of synthetic univariate series for the forecaster: the shapes operational metrics take.

The fleet generator (:mod:`training.simulate`) replays a few days of one-minute samples whose daily
cycle is the same sine every day. A forecaster that must work at any scrape interval, over a week
of context and up to two days ahead, needs to see more than that, so this module draws independent
series whose ingredients are drawn at random per series:

* a sampling interval of 1, 5, 10, 15 or 60 minutes and 9 to 16 days of samples (hourly ones 40 to
  80 days, so that they give about as many forecast origins; at most 6,000 samples);
* a level spread over many orders of magnitude;
* a daily shape in about two of three series (one to three harmonics of random phase and an
  amplitude of 5% to 90% of the level), in some of them damped or raised on weekends;
* persistent deviations (an AR(1) process), level shifts and, in one of five, a trend;
* noise of a random size that is Gaussian, heavy-tailed (Student's t, 3 degrees of freedom) or
  multiplicative, and a few spikes;
* in some series, values clipped at zero or rounded to integers, as counters are.

No file of any public benchmark went into it: it is drawn from these rules and a seed, so the
series the backtest scores (NAB's real ones, ``make bench-forecast``) stay unseen.

>>> s = generate(seed=3, n=4)
>>> len(s), sorted({len(x.values) > 100 for x in s})
(4, [True])
>>> s[0].key == generate(seed=3, n=4)[0].key and bool((s[0].values == generate(seed=3, n=4)[0].values).all())
True
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import lfilter

from models.season import DAY_MS, MINUTE_MS
from training.sources import Series

INTERVALS_MIN = (1, 5, 5, 10, 15, 60, 60)
MAX_POINTS = 6000
START_MS = 1_600_000_000_000
# the horizons, in sampling steps of each series, its forecaster rows are taken at (beside the job's
# own horizons in minutes): up to 48 steps, two days of an hourly series
FORECAST_STEPS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 18, 24, 30, 36, 42, 48)


def one(rng: np.random.Generator, key: str) -> Series:
    """One series drawn from ``rng`` (see the module's doc)."""
    freq_min = int(rng.choice(INTERVALS_MIN))
    days = float(rng.uniform(9, 16)) if freq_min < 60 else float(rng.uniform(40, 80))  # hourly: as many origins
    n = min(int(days * 1440 / freq_min), MAX_POINTS)
    t = START_MS + int(rng.integers(0, 86_400)) * 1000 + np.arange(n, dtype=np.int64) * freq_min * MINUTE_MS
    hour = (t / 3.6e6) % 24
    weekend = (t // DAY_MS) % 7 >= 5
    level = float(np.exp(rng.normal(3.0, 2.0)))
    x = np.full(n, level)
    if rng.random() < 0.65:  # a daily shape
        shape = np.zeros(n)
        for k in range(1, int(rng.integers(1, 4)) + 1):
            shape += rng.normal(0.0, 1.0 / k) * np.sin(2 * np.pi * k * hour / 24 + rng.uniform(0, 2 * np.pi))
        shape /= max(float(np.abs(shape).max()), 1e-9)
        x += float(rng.uniform(0.05, 0.9)) * level * shape
        if rng.random() < 0.4:
            x *= np.where(weekend, rng.uniform(0.5, 1.2), 1.0)
    phi = float(rng.uniform(0.5, 0.995))  # persistent deviations
    e = rng.standard_normal(n) * float(rng.uniform(0.0, 0.3)) * level * math.sqrt(1 - phi * phi)
    x += lfilter([1.0], [1.0, -phi], e)
    for _ in range(int(rng.poisson(1.0))):  # level shifts
        x[int(rng.integers(0, n)):] += rng.normal(0.0, 0.5) * level
    if rng.random() < 0.2:
        x += rng.normal(0.0, 0.5) * level * np.arange(n) / n
    sigma = float(rng.uniform(0.01, 0.4)) * level
    noise = int(rng.integers(0, 3))
    if noise == 0:
        x += rng.standard_normal(n) * sigma
    elif noise == 1:
        x += rng.standard_t(3, n) * sigma * 0.6
    else:
        x *= np.exp(rng.standard_normal(n) * sigma / level)
    spikes = rng.random(n) < rng.uniform(0.0, 0.01)
    x[spikes] += np.abs(rng.standard_normal(int(spikes.sum()))) * 5 * sigma
    if rng.random() < 0.6:
        x = np.maximum(x, 0.0)
    if rng.random() < 0.3:
        x = np.round(x)
    return Series(key, "corpus", "value", (("every", f"{freq_min}m"),), t, x.astype(np.float64))


def generate(seed: int, n: int) -> list[Series]:
    """``n`` independent series drawn from ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"The 'seed' parameter of corpus.generate must be a non-negative integer. Got {seed!r}.")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"The 'n' parameter of corpus.generate must be a positive integer. Got {n!r}.")
    rng = np.random.default_rng(seed)
    return [one(rng, f"corpus-{seed}-{k}") for k in range(n)]
