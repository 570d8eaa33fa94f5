"""The NAB benchmark runner's own logic (no Kafka, no Flink): replay order, lateness, lining records up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import nab as bench_nab
from common.config import TopicsConfig
from training import nab


def nab_file(key: str, stamps: list[str]) -> nab.NabFile:
    return nab.NabFile(key, tuple(stamps), tuple(str(float(i)) for i in range(len(stamps))), ())


A = nab_file("catA/a.csv", ["2014-01-01 00:00:00", "2014-01-01 00:10:00", "2014-01-01 00:05:00",
                            "2014-01-01 00:20:00"])
B = nab_file("catB/b.csv", ["2013-06-01 00:00:00", "2014-01-01 00:10:00", "2014-01-01 00:10:00"])


def test_events_are_native_vigil_metrics_one_series_per_file() -> None:
    ev = bench_nab.event(A, 1)
    assert ev == {"metric": "a", "value": 1.0, "timestamp": "2014-01-01T00:10:00Z", "service": "nab-catA",
                  "tags": {}}
    assert bench_nab.series_of(A) == "nab-catA|a|"


def test_replay_merges_by_event_time_and_keeps_each_files_order() -> None:
    rows = bench_nab.replay_order([A, B])
    assert [(r.key[3], r.row) for r in rows] == [("B", 0), ("A", 0), ("A", 1), ("A", 2), ("B", 1), ("B", 2),
                                                   ("A", 3)]
    assert json.loads(rows[0].payload)["timestamp"] == "2013-06-01T00:00:00Z"
    # A steps back 5 minutes after 00:10; equal timestamps are not a step back
    assert bench_nab.disorder_ms(rows) == 5 * 60_000
    assert bench_nab.disorder_ms(bench_nab.replay_order([B])) == 0


def score_rec(f: nab.NabFile, i: int, score: float = 0.5, trigger: str = "") -> bench_nab.ScoreRecord:
    raw = json.dumps({"schema": "vigil.score/v1", "series": bench_nab.series_of(f), "ts_ms": f.ts_ms(i),
                      "value": float(f.values[i]), "score": score, "threshold": 0.4, "trigger": trigger})
    return bench_nab.parse_score(raw)


def test_align_lines_records_up_with_rows_or_says_why_not() -> None:
    recs = [score_rec(B, 0), score_rec(A, 0), score_rec(A, 1), score_rec(B, 1), score_rec(A, 2), score_rec(B, 2),
            score_rec(A, 3)]
    got = bench_nab.align([A, B], recs, "t")
    assert [r.ts_ms for r in got[A.key]] == [A.ts_ms(i) for i in range(4)]
    with pytest.raises(bench_nab.MeasurementError, match="has 4 rows but 3 score records"):
        bench_nab.align([A, B], recs[:-1], "t")
    swapped = [recs[0], recs[2], recs[1]] + recs[3:]
    with pytest.raises(bench_nab.MeasurementError, match="row 0"):
        bench_nab.align([A, B], swapped, "t")
    with pytest.raises(bench_nab.MeasurementError, match="series no file produced"):
        bench_nab.align([A], recs, "t")


def test_agreement_counts_identical_records_and_the_largest_difference() -> None:
    a = {A.key: [score_rec(A, i) for i in range(4)]}
    b = {A.key: [score_rec(A, 0), score_rec(A, 1, 0.5000011), score_rec(A, 2), score_rec(A, 3, trigger="detector")]}
    got = bench_nab.agreement([A], a, b)
    assert got["rows_compared"] == 4 and got["identical_records"] == 2
    assert got["rows_with_score_difference"] == 1
    assert got["max_abs_score_difference"] == pytest.approx(1.1e-6)


def test_config_puts_every_topic_under_the_prefix_and_opens_the_replay_bounds(tmp_path: Path) -> None:
    cfg = bench_nab.write_config(tmp_path / "c.yaml", "bn-x", bootstrap="127.0.0.1:1", redis_url="redis://h:1/0",
                                 store=tmp_path, out_of_orderness_ms=3_360_000)
    topics = [getattr(cfg.kafka.topics, f) for f in TopicsConfig.__dataclass_fields__]
    assert all(t.startswith("bn-x.") for t in topics) and cfg.kafka.topics.scores == "bn-x.scores"
    assert (cfg.validation.max_past_s, cfg.validation.max_future_s) == (None, None)
    assert cfg.job.out_of_orderness_ms == 3_360_000 and cfg.job.delivery == "exactly_once"
    assert (cfg.kafka.group_id, cfg.kafka.startup, cfg.kafka.bootstrap_servers) == ("bn-x", "earliest", "127.0.0.1:1")
    assert cfg.registry.path() == tmp_path.resolve() and cfg.redis.url == "redis://h:1/0"
    small = bench_nab.write_config(tmp_path / "d.yaml", "bn-y", out_of_orderness_ms=0)
    assert small.job.out_of_orderness_ms == 5000  # never below the base config's bound


def test_a_nab_trained_detector_is_refused_before_measuring(tmp_path, trained_store):
    import shutil

    from bench.nab import MeasurementError, refuse_nab_trained
    from common.config import VigilConfig
    from models.artifact import ArtifactStore

    root = tmp_path / "store"
    shutil.copytree(trained_store, root)
    cfg = VigilConfig.load(overrides={"registry": {"root": str(root)}, "redis": {"url": "redis://127.0.0.1:1/0"}})
    refuse_nab_trained(cfg)  # generator-trained: fine
    store = ArtifactStore(root)
    v = store.latest("detector")
    path = root / "detector" / v / "manifest.json"
    m = json.loads(path.read_text())
    m["training_data"]["sources"] = [{"source": "nab", "files": 58}]
    path.write_text(json.dumps(m))
    with pytest.raises(MeasurementError, match="trained on NAB"):
        refuse_nab_trained(cfg)
