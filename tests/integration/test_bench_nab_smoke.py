"""A smoke run of ``make bench-nab``: two NAB files, cut to 400 rows each, through Kafka and Flink.

The benchmark's figures are not asserted (a benchmark reports, it does not fail); what is asserted
is that the measurement is what it claims to be: one streaming score per row, equal row by row to
what the detector logic gives in-process, and a report with the keys the issue asks for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import nab as bench_nab
from common.config import VigilConfig
from jobs.inprocess import InProcessJob
from models.pipeline import ModelBundle
from training import nab

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (nab.nab_root() / "labels" / "combined_windows.json").exists(),
                       reason=f"NAB corpus not found at {nab.nab_root()} (set VIGIL_NAB_ROOT)"),
]
ROOT = Path(__file__).resolve().parents[2]
FILES = ["realAWSCloudwatch/iio_us-east-1_i-a2eb1cd9_NetworkIn.csv", "realTraffic/speed_7578.csv"]
LIMIT = 400  # both files keep label windows in their first 400 rows


def test_bench_nab_smoke_run_scores_every_row_as_the_detector_logic_does(
        tmp_path, trained_store, kafka_bootstrap, redis_url, topic_prefix):
    out = tmp_path / "reports"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "bench.nab", "--files", *FILES, "--limit", str(LIMIT), "--out", str(out),
         "--store", str(trained_store), "--bootstrap", kafka_bootstrap, "--redis-url", redis_url,
         "--topic-prefix", topic_prefix, "--run-dir", str(tmp_path / "run"), "--timeout", "400"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = tmp_path / "run" / "job.log"
    assert done.returncode == 0, (done.stdout[-3000:] + done.stderr[-3000:]
                                  + (log.read_text()[-3000:] if log.exists() else ""))

    corpus = nab.load_corpus(files=FILES, limit=LIMIT)
    assert [f.n for f in corpus] == [LIMIT, LIMIT] and all(f.windows for f in corpus)

    # NAB's results layout, one row per data row, labels from the windows
    for f in corpus:
        lines = nab.result_path(out / "nab", "vigil", f.key).read_text().splitlines()
        assert lines[0] == "timestamp,value,anomaly_score,label" and len(lines) == f.n + 1
        assert [int(ln.rsplit(",", 1)[1]) for ln in lines[1:]] == f.labels()
    streamed = nab.read_results(out / "nab", "vigil", corpus)

    # the same payloads through the detector logic in-process, independently of the runner
    cfg = VigilConfig.load(tmp_path / "run" / "vigil.yaml")
    job = InProcessJob(cfg, ModelBundle.load(trained_store))
    job.run([r.payload for r in bench_nab.replay_order(corpus)], now_ms=0)
    assert not job.dead_letters
    expected: dict[str, list[float]] = {f.key: [] for f in corpus}
    key_of = {bench_nab.series_of(f): f.key for f in corpus}
    for s in job.scored:
        expected[key_of[s.series]].append(round(s.score, 6))
    for f in corpus:
        assert streamed[f.key] == expected[f.key], f.key  # row by row, exactly
        assert streamed[f.key][:cfg.scoring.warmup] == [0.0] * cfg.scoring.warmup
        assert any(v > 0 for v in streamed[f.key])

    rep = json.loads((out / "nab.json").read_text())
    for key in ("standard", "reward_low_FP_rate", "reward_low_FN_rate"):
        assert isinstance(rep[key], float) and rep[key] == rep["results"][key]["score"]
        assert rep["inprocess"]["results"][key]["score"] == rep[key]
    assert set(rep["thresholds"]) == set(nab.PROFILE_NAMES)
    assert rep["agreement"]["rows_compared"] == rep["agreement"]["identical_records"] == 2 * LIMIT
    assert rep["agreement"]["max_abs_score_difference"] == 0.0
    assert rep["streaming"]["dead_letters"] == 0 and rep["corpus"]["complete"] is False
    assert rep["environment"]["cores"] >= 1 and rep["environment"]["libraries"]["apache-flink"]
    assert rep["git"]["commit"]
    # the scorer, run again on the CSVs, gives the figures of the report
    again = nab.evaluate(corpus, streamed)
    assert {p: again[p].normalised for p in nab.PROFILE_NAMES} == {p: rep[p] for p in nab.PROFILE_NAMES}

    md = (out / "nab.md").read_text()
    assert "cores" in md and "apache-flink" in md and rep["git"]["commit"] in md and "Numenta HTM" in md
