"""Training data sources: NAB files read in place, replayed metric records, injected incidents, drift selection."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.features import FORECAST_HORIZONS_MIN
from training.data import LABEL_MARGIN_MS, MINUTE_MS
from training.nab import DEFAULT_NAB_ROOT, load_corpus
from training.sources import (
    CLEAN_AFTER_ROWS,
    FORECAST_TARGET_LIMIT,
    DataConfig,
    LabelWindow,
    Series,
    SeriesSpec,
    content_digest,
    detector_shortfall,
    extract_series,
    forecaster_shortfall,
    inject_incidents,
    metric_kind_weights,
    nab_jobs,
    nab_series,
    replay_cuts,
    select_series,
    series_from_records,
    split_nab,
    trained_on_nab,
    weighted_permutation,
)
from udfs.parse import series_key

# three 5-minute AWS files, each with a label window inside its first 1500 rows
NAB_FILES = ("ec2_cpu_utilization_fe7f93", "elb_request_count_8c0756", "rds_cpu_utilization_e47b3b")
needs_nab = pytest.mark.skipif(not (DEFAULT_NAB_ROOT / "labels").exists(), reason="no NAB corpus beside the project")


@needs_nab
def test_nab_files_become_labelled_series_keyed_as_the_benchmark_keys_them() -> None:
    series = nab_series(files=NAB_FILES, limit=1500)
    corpus = {f.stem: f for f in load_corpus(files=NAB_FILES, limit=1500)}
    assert [s.metric for s in series] == sorted(NAB_FILES)
    for s in series:
        f = corpus[s.metric]
        assert s.key == series_key("nab-realAWSCloudwatch", s.metric, ()) and s.service == "nab-realAWSCloudwatch"
        assert len(s.ts) == 1500 and np.median(np.diff(s.ts)) == 5 * MINUTE_MS and (np.diff(s.ts) > 0).all()
        assert s.values[7] == float(f.values[7])
        rows = [(int(np.searchsorted(s.ts, w.start_ms)), int(np.searchsorted(s.ts, w.label_end_ms))) for w in s.windows]
        assert rows == list(f.windows)
    ext = extract_series(series, SeriesSpec("nab", "all"), forecast_every=10)
    d = ext.detector
    assert d.incident_keys == [[s.key] for s in series for _ in s.windows]
    # a row is labelled exactly when it lies inside its file's window; never clean then, nor for 90 rows after
    for si, s in enumerate(series):
        (a, b), = corpus[s.metric].windows[:1]
        rows = d.step[d.series == si]
        lab = d.label[d.series == si]
        clean = d.clean[d.series == si]
        assert np.array_equal(lab, (rows >= a) & (rows <= b))
        assert not clean[(rows >= a - 5) & (rows < b + 1 + CLEAN_AFTER_ROWS)].any()
        assert clean[(rows >= b + 1 + CLEAN_AFTER_ROWS)].all() or len(corpus[s.metric].windows) > 1
    # forecaster targets are the exact values h minutes ahead, in scale units
    f = ext.forecast
    assert set(f.horizon.tolist()) == set(FORECAST_HORIZONS_MIN)
    np.testing.assert_allclose(f.anchor + f.y * f.scale, f.actual, rtol=1e-9)


@needs_nab
def test_nab_split_is_by_file_seeded_and_keeps_labelled_files_for_validation_and_test() -> None:
    series = nab_series(files=["realAdExchange"])  # 6 files, all labelled
    parts = split_nab(series, seed=1)
    assert [len(parts[r]) for r in ("fit", "validation", "test")] == [4, 1, 1]
    assert {s.key for p in parts.values() for s in p} == {s.key for s in series}
    assert parts == split_nab(series, seed=1) and parts != split_nab(series, seed=2)
    with pytest.raises(ValueError, match="at least 3 files, 2 of them with label windows"):
        split_nab(series[:2], seed=1)


@needs_nab
def test_nab_sources_name_content_not_paths_and_change_with_the_data() -> None:
    jobs = dict(nab_jobs(nab_series(files=NAB_FILES, limit=1500), 1, 1500))
    again = dict(nab_jobs(nab_series(files=NAB_FILES, limit=1500), 1, 1500))
    fewer = dict(nab_jobs(nab_series(files=NAB_FILES, limit=1400), 1, 1400))
    src = jobs["fit"][1].source()
    assert src["source"] == "nab" and src["split"] == "fit" and src["sha256"].startswith("sha256:")
    assert "root" not in json.dumps(src) and str(DEFAULT_NAB_ROOT) not in json.dumps(src)
    assert {r: j[1].source() for r, j in jobs.items()} == {r: j[1].source() for r, j in again.items()}
    assert fewer["fit"][1].source()["sha256"] != src["sha256"]
    assert trained_on_nab({"training_data": {"sources": [{"role": "fit", **src}]}})
    assert not trained_on_nab({"training_data": {"sources": [{"role": "train", "generator": "x"}]}})


def _series(key: str, values: list[float], step_ms: int = MINUTE_MS, t0: int = 1_780_000_000_000,
            windows: list[LabelWindow] | None = None) -> Series:
    svc, metric, _ = key.split("|")
    return Series(key, svc, metric, (), np.arange(len(values), dtype=np.int64) * step_ms + t0,
                  np.asarray(values, dtype=np.float64), windows or [])


def test_forecaster_rows_stay_inside_their_slice_and_hopeless_targets_are_left_out() -> None:
    rng = np.random.default_rng(0)
    vals = list(50 + rng.normal(0, 1, 3000))
    s = _series("svc|cpu_util|", vals)
    lo, hi = int(s.ts[500]), int(s.ts[2500])
    f = extract_series([s], SeriesSpec("t", "x"), detector=False, forecast_every=10, keep=(lo, hi)).forecast
    origin_ts = s.ts[0] + f.step * MINUTE_MS
    assert origin_ts.min() >= lo and (origin_ts + f.horizon * MINUTE_MS).max() < hi
    # a run of zeros (scale floors at 1e-6) then a jump: the jump is not a forecastable target
    z = _series("svc|disk_write|", [0.0] * 100 + [5e6] * 50)
    fz = extract_series([z], SeriesSpec("t", "x"), detector=False, forecast_every=1).forecast
    assert fz.dropped > 0 and np.all(np.abs(fz.y) <= FORECAST_TARGET_LIMIT)


def test_metric_records_are_parsed_by_the_job_parser_and_grouped_into_series() -> None:
    t = 1_780_000_000_000
    recs = [json.dumps({"metric": "cpu_util", "value": v, "timestamp": t + i * 60_000, "service": "search",
                        "tags": {"instance": "i-1"}}).encode() for i, v in enumerate([3.0, 4.0, 5.0])]
    recs += [json.dumps({"name": "disk", "fields": {"util": 40.0}, "timestamp": t // 1000,
                         "tags": {"service": "search", "instance": "i-1"}}).encode(),
             json.dumps({"metric": "cpu_util", "value": 9.0, "timestamp": t + 60_000, "service": "search",
                         "tags": {"instance": "i-1"}}).encode(),  # a second value for a timestamp: the last wins
             json.dumps({"metric": "cpu_util", "value": 1.0, "timestamp": t - 60_000, "service": "search",
                         "tags": {"instance": "i-1"}}).encode(),  # late: sorted into place
             b"not json", b'{"metric": "m", "value": NaN, "timestamp": 1, "service": "s"}', b"[1]"]
    series, stats = series_from_records(recs)
    assert stats == {"records": 9, "events": 6,
                     "dead_letters": {"not_json": 1, "non_finite_value": 1, "not_object": 1}}
    by = {s.key: s for s in series}
    cpu = by[series_key("search", "cpu_util", (("instance", "i-1"),))]
    assert cpu.ts.tolist() == [t - 60_000, t, t + 60_000, t + 120_000] and cpu.values.tolist() == [1.0, 3.0, 9.0, 5.0]
    assert by[series_key("search", "disk_util", (("instance", "i-1"),))].values.tolist() == [40.0]


def test_injected_incidents_change_only_their_window_and_label_it_with_the_margin() -> None:
    rng = np.random.default_rng(1)
    series = [_series(f"svc|{m}|instance=i-{i}", list(40 + rng.normal(0, 1, 600)))
              for i in range(8) for m in ("cpu_util", "memory_util")]
    series.append(_series("svc|error_rate|instance=i-0", [0.0] * 600))  # zeros: a multiplied incident is invisible
    lo, hi = int(series[0].ts[300]), int(series[0].ts[599]) + 1
    out, n = inject_incidents(series, lo, hi, seed=5)
    assert n >= 4
    again, _ = inject_incidents(series, lo, hi, seed=5)
    kinds = set()
    for before, after, same in zip(series, out, again, strict=True):
        assert np.array_equal(after.values, same.values) and after.windows == same.windows
        changed = np.flatnonzero(before.values != after.values)
        assert np.array_equal(before.values[after.ts < lo], after.values[after.ts < lo])
        for w in after.windows:
            kinds.add(w.kind)
            assert lo <= w.start_ms < w.end_ms <= hi and w.label_end_ms == min(w.end_ms + LABEL_MARGIN_MS, hi - 1)
        inside = np.zeros(len(after.ts), dtype=bool)
        for w in after.windows:
            inside |= (after.ts >= w.start_ms) & (after.ts < w.end_ms)
        assert inside[changed].all()
    assert not out[-1].windows  # never on the series of zeros
    assert kinds == {"spike", "level_shift", "memory_leak"}
    ext = extract_series(out, SeriesSpec("t", "x"), keep=(lo, hi))
    assert ext.detector.label.any() and detector_shortfall(ext, ext, ext) is None
    few = extract_series(out[:2], SeriesSpec("t", "x"), keep=(lo, hi))
    assert "clean rows to fit on; needs 1000" in detector_shortfall(few, ext, ext)


def test_drift_selection_keeps_the_drifted_series_and_a_bounded_seeded_background() -> None:
    series = [_series(f"svc|cpu_util|instance=i-{i}", [1.0, 2.0]) for i in range(30)]
    drifted = [series[3].key, series[17].key, "svc|gone|"]
    chosen, info = select_series(series, drifted, background=5, seed=1)
    keys = {s.key for s in chosen}
    assert {series[3].key, series[17].key} <= keys and len(chosen) == 7
    assert info == {"drifted_requested": 3, "drifted_found": 2, "drifted_missing": ["svc|gone|"],
                    "background": 5, "background_limit": 5}
    assert [s.key for s in select_series(series, drifted, 5, seed=1)[0]] == [s.key for s in chosen]
    assert [s.key for s in select_series(series, drifted, 5, seed=2)[0]] != [s.key for s in chosen]


def test_drift_weights_put_the_drifted_metric_kinds_first() -> None:
    keys = ["a|cpu_util|", "a|latency_p99_ms|", "a|error_rate|"]
    idx = np.repeat([0, 1, 2], 1000)
    w = metric_kind_weights(keys, idx, ["latency_p99_ms"], 3.0)
    assert w.tolist() == [1.0] * 1000 + [3.0] * 1000 + [1.0] * 1000
    first = weighted_permutation(np.random.default_rng(0), w)[:600]
    share = float((idx[first] == 1).mean())
    assert 0.5 < share < 0.7  # 3 of 5 weight units; unweighted it would be a third


def test_short_series_cannot_feed_the_forecaster_and_say_why() -> None:
    s = _series("svc|cpu_util|", list(np.linspace(1, 2, 1500)))
    e = extract_series([s], SeriesSpec("t", "x"), detector=False, forecast_every=10)
    assert "horizon 1440 min" in forecaster_shortfall(e, e, e)


def test_replay_cuts_and_the_digest() -> None:
    a = _series("s|m|", [1.0] * 101)
    assert replay_cuts([a]) == (int(a.ts[0]), int(a.ts[60]), int(a.ts[80]), int(a.ts[100]))
    b = _series("s|m|", [1.0] * 100 + [2.0])
    assert content_digest([a]) == content_digest([_series("s|m|", [1.0] * 101)]) != content_digest([b])


def test_data_config_is_validated() -> None:
    with pytest.raises(ValueError, match=r"The 'kind' parameter of DataConfig must be one of \['generator', 'nab', "
                                         r"'replay'\]\. Got 'kafka'\."):
        DataConfig(kind="kafka")
    with pytest.raises(ValueError, match="The 'nab_limit' parameter of DataConfig must be a positive integer"):
        DataConfig(kind="nab", nab_limit=0)
    with pytest.raises(ValueError, match="The 'background' parameter"):
        DataConfig(background=-1)


@pytest.mark.parametrize("module", ["common.kafka_io", "training.drift"])
def test_docstring_examples_of_the_retraining_modules(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
