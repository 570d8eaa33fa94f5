"""models.season: the week of buckets each series keeps, at a width found from its own spacing."""

from __future__ import annotations

import numpy as np
import pytest

from models.pipeline import SeriesState
from models.season import DAY_MS, MINUTE_MS, PROBE, WEEK_MS, SeasonalContext, profiles, width_for

HOUR = 3_600_000


def _fed(step_ms: int, n: int, value=lambda i: float(i), start: int = 0) -> SeasonalContext:
    c = SeasonalContext()
    for i in range(n):
        c.update(start + i * step_ms, value(i))
    return c


@pytest.mark.parametrize("step_ms, width_min", [(10_000, 15), (60_000, 15), (5 * MINUTE_MS, 15),
                                                (15 * MINUTE_MS, 15), (20 * MINUTE_MS, 20),
                                                (HOUR, 60), (2 * HOUR, 60)])
def test_the_width_comes_from_the_series_spacing(step_ms, width_min):
    c = _fed(step_ms, PROBE + 1)
    assert c.width_ms == width_min * MINUTE_MS and c.buckets == WEEK_MS // c.width_ms


def test_the_width_is_the_median_gap_so_a_few_odd_gaps_do_not_move_it():
    c = SeasonalContext()
    ts = 0
    for gap in (300_000, 300_000, 7_200_000, 300_000, 300_000, 1_000, 300_000, 300_000):
        ts += gap
        c.update(ts, 1.0)
    assert c.width_ms == 0  # eight samples: seven gaps
    c.update(ts + 300_000, 1.0)
    assert c.width_ms == 15 * MINUTE_MS
    assert width_for(300_000) == 15 * MINUTE_MS and width_for(3 * HOUR) == HOUR


def test_buckets_hold_mean_min_and_max_of_their_samples():
    c = _fed(MINUTE_MS, 60 * 24 * 2, value=lambda i: float(i % 15))  # every 15-minute bucket sees 0..14
    mean, lo, hi, k = c.envelope(2 * DAY_MS, DAY_MS, 0)
    assert (mean, lo, hi, k) == (7.0, 0.0, 14.0, 1)


def test_the_ring_forgets_what_is_older_than_a_week_and_what_a_gap_passed_over():
    c = _fed(HOUR, 24 * 9, value=lambda i: 1.0 if i < 24 * 2 else 2.0)  # nine days, from day 2 on at 2.0
    assert c.envelope(24 * 9 * HOUR, WEEK_MS, 3)[:3] == (2.0, 2.0, 2.0)
    # a day without samples, then one: the day passed over is empty, not last week's
    c.update(24 * 10 * HOUR + 5 * HOUR, 3.0)
    assert c.envelope(24 * 10 * HOUR, 0, 5)[:3] == (3.0, 3.0, 3.0)  # the new sample, five buckets in
    assert c.envelope(24 * 9 * HOUR + 12 * HOUR, 0, 2) is None
    # an event older than the week the ring holds is not kept (nor does it disturb the ring)
    before = c.to_bytes()
    c.update(24 * 2 * HOUR, 9.0)
    assert c.to_bytes() == before
    # a gap longer than the week clears everything
    c.update(24 * 30 * HOUR, 4.0)
    assert int(np.count_nonzero(c.count)) == 1


def test_envelope_tolerates_a_small_phase_shift():
    # a daily peak at 12:00 yesterday; today's comes at 13:00: one bucket either side still sees it
    c = _fed(HOUR, 24 * 2, value=lambda i: 10.0 if i % 24 == 12 else 0.0)
    at_13_today = 24 * 2 * HOUR + 13 * HOUR
    assert c.envelope(at_13_today, DAY_MS, 0)[2] == 0.0
    assert c.envelope(at_13_today, DAY_MS, 1)[2] == 10.0


def test_values_beyond_float32_are_clipped_not_infinite():
    c = _fed(HOUR, PROBE + 2, value=lambda i: 1e300)
    assert np.isfinite(c.hi).all() and c.envelope((PROBE + 1) * HOUR, 0, 0)[2] > 3e38


def test_round_trip_is_exact_while_probing_and_after():
    for n in (0, 3, PROBE + 1, 24 * 8):
        c = _fed(HOUR, n, value=lambda i: float(i % 24) * 1.5)
        back, end = SeasonalContext.from_bytes(b"xx" + c.to_bytes(), 2)
        assert back.to_bytes() == c.to_bytes() and end == 2 + len(c.to_bytes())


def test_a_series_state_with_a_full_week_stays_within_16_kb():
    st = SeriesState()
    for i in range(7 * 24 * 360):  # a week of a 10-second scrape: the finest width, every bucket full
        st.season.update(i * 10_000, float(i))
    assert st.season.buckets == 672
    assert len(st.to_bytes()) <= 16 * 1024, len(st.to_bytes())


def test_a_v4_series_state_reads_with_an_empty_season():
    st = SeriesState()
    for i in range(40):
        st.window.update(i * 60_000, float(i))
        st.season.update(i * 60_000, float(i))
    v5 = st.to_bytes()
    season = st.season.to_bytes()
    cut = v5.index(season)
    v4 = bytes([4]) + v5[1:cut] + v5[cut + len(season):]
    old = SeriesState.from_bytes(v4)
    assert old.season.width_ms == 0 and old.window.history() == st.window.history()
    assert old.surprise.to_bytes() == st.surprise.to_bytes()
    assert old.to_bytes()[0] == 5


def test_profile_is_the_median_over_the_last_seven_days_of_the_same_time():
    c = SeasonalContext()
    hour = 3_600_000
    for i in range(24 * 10):  # ten days, hourly; day d adds 10 * d, so the days disagree
        c.update(i * hour, float(i % 24) + 10.0 * (i // 24))
    now = (24 * 10 - 1) * hour
    targets = np.array([now + hour, now + 5 * hour, now + 30 * hour, now - 20 * DAY_MS], dtype=np.int64)
    med, days, mad, latest = c.profile(targets, spread=0)
    # one hour ahead (hour 0 of day 10): days 3..9 held 30..90 at hour 0, median 60, spread 20
    assert (med[0], days[0], mad[0], latest[0]) == (60.0, 7, 20.0, 90.0)
    assert (med[1], latest[1]) == (64.0, 94.0)  # five hours ahead: hour 4 of days 3..9
    # 30 h ahead (hour 5 of day 11): its "yesterday" is still to come, so six days: hour 5 of days 4..9
    assert days[2] == 6 and med[2] == 70.0 and latest[2] == 95.0
    # a target long before the week the ring holds: nothing known
    assert days[3] == 0 and np.isnan(med[3]) and np.isnan(latest[3])
    # the batched form over several contexts (and one without a width yet) equals one by one
    other = SeasonalContext()
    got = profiles([c, other, c], np.stack([targets, targets, targets]), spread=0)
    for j in (0, 2):
        np.testing.assert_array_equal(got[1][j], days)
        np.testing.assert_array_equal(np.nan_to_num(got[0][j], nan=-1), np.nan_to_num(med, nan=-1))
    assert (got[1][1] == 0).all() and np.isnan(got[0][1]).all()
