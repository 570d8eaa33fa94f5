"""A smoke run of ``make bench``: twelve series, seconds long, through Kafka, Flink and the baseline.

The figures are not judged (a benchmark reports, it does not fail on a slow machine); what is
asserted is that the report holds what the issue asks for and that its numbers are measurements:
positive rates, ordered percentiles computed from the alerts matched to injected spikes, a ratio
that is the quotient of the two rates, timings read from inside the running job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_bench_smoke_run_reports_measured_throughput_latency_and_memory(
        tmp_path, trained_store, kafka_bootstrap, redis_url, topic_prefix):
    out = tmp_path / "reports"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "bench.throughput", "--series", "12", "--instances", "1", "--events", "30000",
         "--checkpoint-interval-ms", "200", "--rate", "100", "--duration", "4", "--spikes", "4", "--drain", "5",
         "--state-series", "12",
         "--out", str(out), "--store", str(trained_store), "--bootstrap", kafka_bootstrap, "--redis-url", redis_url,
         "--topic-prefix", topic_prefix, "--run-dir", str(tmp_path / "run"), "--timeout", "240"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    rep = json.loads((out / "bench.json").read_text())
    # the keys the issue names, and rates that are measurements
    assert rep["events_per_s"] > 0 and rep["baseline_events_per_s"] > 0 and rep["events_per_s_at_least_once"] > 0
    assert rep["ratio_vs_baseline"] == pytest.approx(rep["events_per_s"] / rep["baseline_events_per_s"], abs=1e-3)
    assert rep["alerts_per_s"] >= 0 and rep["baseline_alerts_per_s"] >= 0
    targets = rep["targets"]
    assert set(targets) == {"job-exactly-once", "job-at-least-once", "baseline"}
    for key, name in (("latency_ms", "job-at-least-once"), ("latency_ms_exactly_once", "job-exactly-once"),
                      ("baseline_latency_ms", "baseline")):
        lat, tl = rep[key], targets[name]["latency"]
        assert 1 <= lat["matched"] <= lat["spikes"] == tl["spikes"] <= 4
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
        # percentiles of the latencies of the matched spikes, one sample each (both sides rounded to 0.1 ms)
        samples = tl["samples_ms"]
        assert len(samples) == lat["matched"]
        assert lat["p50"] == pytest.approx(float(np.percentile(samples, 50)), abs=0.15)
        assert lat["p99"] == pytest.approx(float(np.percentile(samples, 99)), abs=0.15)
        assert tl["rate"] == 100 and tl["events"] == 400
    assert targets["job-exactly-once"]["latency"]["isolation_level"] == "read_committed"
    assert targets["job-at-least-once"]["latency"]["isolation_level"] == "read_uncommitted"
    assert targets["job-exactly-once"]["throughput"]["backlog_events"] == 2500 * 12  # whole steps of 12 series

    # from inside the running job: the one Python operator timed, batches of records, models called per batch
    ops = targets["job-exactly-once"]["operators"]
    assert set(ops) == {"score-shard"}
    op = ops["score-shard"]
    assert op["records"] > 0 and 0 < op["us_per_record"] <= op["wall_us_per_record"] * 1.5
    assert 0 < op["batches"] <= op["records"] and op["mean_batch"] == round(op["records"] / op["batches"], 1)
    models = targets["job-exactly-once"]["models"]
    assert models["detector"]["operator"] == "score-shard" and models["detector"]["us_per_call"] > 0
    # one call per round of a batch, not one per record
    assert 0 < models["detector"]["calls_per_record"] <= 1.0
    assert models["forecaster"]["calls"] > 0 and models["clusterer"]["operator"] == "score-shard"

    st = rep["state"]
    assert st["series"] == 12 and st["series_state_bytes"] > 0 and st["entity_state_bytes"] > 0
    assert rep["state_bytes_per_1000_series"] == round((st["series_state_bytes"] + st["entity_state_bytes"]) / 12
                                                       * 1000)
    mem = rep["peak_memory_mib"]
    assert mem["job_jvm_process_rss"] > mem["job_jvm_heap_used"] > 0 and mem["baseline_process_rss"] > 0
    assert rep["cores"] >= 1 and rep["commit"] and rep["versions"]["flink"] and rep["versions"]["river"]
    assert rep["versions"]["kafka"] and rep["versions"]["onnxruntime"]

    md = (out / "bench.md").read_text()
    assert rep["commit"] in md and "cores" in md and "Ratio vs baseline" in md and "read_committed" in md
