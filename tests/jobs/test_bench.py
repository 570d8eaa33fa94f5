"""The pieces of ``make bench`` that need no broker: the load, the spike plan, the rate, the config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import baseline as bench_baseline
from bench import throughput as bench
from bench.kit import write_job_config
from udfs.parse import ParseLimits, parse_record


def test_fleet_has_the_series_asked_for_round_robin_over_services_and_parses_as_the_job_does():
    f = bench.Fleet(30, instances=2)
    assert len(f) == 30 and f.services == 3  # 12 series a service
    assert len({s.key for s in f.series}) == 30
    assert [s.service for s in f.series[:3]] == ["svc-0000", "svc-0001", "svc-0002"]
    for i in (0, 7, 29):
        evs = parse_record(f.payload(i, 1_780_000_000_000), 1_780_000_000_000, ParseLimits(65536, None, None))
        assert [e.series for e in evs] == [f.series[i].key]
    for i in range(12):
        s = f.series[i]
        want = min(s.base * bench.SPIKE_FACTOR, 100.0) if s.metric.endswith("_util") else s.base * bench.SPIKE_FACTOR
        assert json.loads(f.payload(i, 1, spike=True))["value"] == round(want, 6) == f.spike_value(i)


def test_backlog_is_step_major_one_sample_a_minute_with_the_spikes_asked_for():
    f = bench.Fleet(12, instances=1)
    payloads, spikes = f.backlog(steps=40, end_ms=1_780_000_000_000, spikes=5, first_spike_step=30)
    assert len(payloads) == 480 and spikes == 5
    ts = [json.loads(p)["timestamp"] for p in payloads]
    assert ts == sorted(ts) and ts[-1] == 1_780_000_000_000 and ts[12] - ts[0] == bench.STEP_MS
    big = [i for i, p in enumerate(payloads) if json.loads(p)["value"] == f.spike_value(i % 12)]
    assert len(big) == 5 and min(big) >= 30 * 12


def test_spike_plan_puts_each_spike_on_a_series_of_its_own_and_alternates_services():
    f = bench.Fleet(60, instances=1)  # 10 services
    plan = bench.spike_plan(f, total=3000, spikes=20)
    assert len(plan) == 20 and len(set(plan.values())) == 20
    ks = sorted(plan)
    assert all(0.1 * 3000 <= k < 3000 for k in ks) and all(plan[k] == k % 60 for k in ks)
    services = [f.series[plan[k]].service for k in ks]
    assert all(a != b for a, b in zip(services, services[1:], strict=False))


def test_steady_rate_is_the_slope_between_commits_first_seen_in_the_window():
    samples = [(0.0, 0), (0.5, 0), (1.0, 100), (1.5, 100), (2.0, 300), (2.5, 300), (3.0, 500), (3.5, 700),
               (4.0, 1000)]
    r = bench.steady_rate(samples, lo=100, hi=950)
    assert (r["offset0"], r["offset1"], r["t0"], r["t1"]) == (100, 700, 1.0, 3.5)
    assert r["events_per_s"] == pytest.approx(600 / 2.5)
    assert bench.steady_rate([(0.0, 0), (1.0, 1000)], lo=100, hi=950) is None
    # two commits are not a rate: too coarse unless asked for
    assert bench.steady_rate([(0.0, 0), (1.0, 100), (2.0, 1000)], lo=100, hi=1000) is None
    assert bench.steady_rate([(0.0, 0), (1.0, 100), (2.0, 1000)], lo=100, hi=1000, min_steps=1)["events_per_s"] == 900


def test_percentiles_of_nothing_are_none_and_are_ordered():
    assert bench.percentiles([])["p50"] is None
    p = bench.percentiles([10.0, 20.0, 30.0, 40.0, 1000.0])
    assert p["p50"] == 30.0 and p["p50"] <= p["p95"] <= p["p99"] <= p["max"] == 1000.0


def test_baseline_scores_per_series_and_alerts_in_the_shape_the_runner_matches():
    b = bench_baseline.Baseline()
    f = bench.Fleet(2, instances=1)
    out = [b.on_event(f.payload(i % 2, 1_780_000_000_000 + i * 1000), 0) for i in range(400)]
    assert b.records == 400 and len(b.models) == 2 and b.score_calls == 400 and b.score_ns > 0
    spike = None
    for j in range(5):  # a spike far outside everything seen is flagged (HalfSpaceTrees past its first window)
        spike = b.on_event(f.payload(0, 1_780_000_500_000 + j, spike=True), 0)
        if spike:
            break
    assert spike is not None and sum(o is not None for o in out) == b.alerts - 1
    a = json.loads(spike)
    assert a["series"]["key"] == f.series[0].key and bench._ms(a["event_time"]) % 1000 < 5


def test_job_config_has_every_topic_under_the_prefix_and_the_options_given(tmp_path: Path):
    cfg = write_job_config(tmp_path / "c.yaml", "b-x", name="vigil-bench-x", bootstrap="127.0.0.1:1", scores=False,
                           overrides={"job": {"delivery": "at_least_once", "flink_options": {"rest.port": 1234}},
                                      "alerts": {"dedup_window_s": 1}})
    assert cfg.kafka.topics.scores is None and cfg.kafka.topics.metrics == "b-x.metrics"
    assert cfg.job.delivery == "at_least_once" and cfg.job.flink_options == {"rest.port": 1234}
    assert cfg.alerts.dedup_window_s == 1 and cfg.job.name == "vigil-bench-x" and cfg.kafka.group_id == "b-x"


def test_the_job_benchmarks_share_their_run_options_and_start(tmp_path, monkeypatch):
    from bench import kit
    from bench import nab as bench_nab
    from common.config import DEFAULT_CONFIG, ROOT

    ap = kit.parser("bench.x", "What it measures.\nStill the first paragraph.\n\nDetails.")
    kit.add_job_run(ap, "bench-x", run_dir="logs", timeout=5, timeout_help="give up")
    assert ap.prog == "python -m bench.x" and ap.description == "What it measures.\nStill the first paragraph."
    a = ap.parse_args([])
    assert (a.out, a.config, a.store, a.bootstrap, a.redis_url, a.topic_prefix, a.run_dir, a.timeout,
            a.keep_topics) == (str(ROOT / "reports"), str(DEFAULT_CONFIG), None, None, None, None, None, 5, False)
    # the two that run the job keep their own timeouts; the rest is the kit's
    assert bench.build_parser().parse_args([]).timeout == 900
    assert bench_nab.build_parser().parse_args([]).timeout == 3600

    monkeypatch.setattr(kit.signal, "signal", lambda *_: None)  # not the test process' TERM handler
    run = kit.start_run(ap.parse_args(["--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "rep")]), "bench-x")
    assert run.run_dir == tmp_path / "run" and run.run_dir.is_dir() and run.out == tmp_path / "rep"
    assert run.prefix.startswith("bench-x-20") and run.prefix.endswith("Z") and len(run.load_start) == 3
    assert run.git["commit"] and run.git["commit"].startswith(kit.short_commit())
    assert kit.start_run(ap.parse_args(["--run-dir", str(tmp_path / "run"), "--topic-prefix", "p"]), "x").prefix == "p"
