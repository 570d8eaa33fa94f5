"""operators.stats: records, time and model calls are counted per operator and handed to Flink's counters."""

from __future__ import annotations

import threading

from fakes import FakeContext

from models.detector import DetectorModel
from operators import stats


class Scorer:
    """Stands in for a model class: ``score_one`` calls ``score`` (a nested call counts once)."""

    def score(self, rows):
        return [sum(r) for r in rows]

    def score_one(self, row):
        return self.score([row])[0]


@stats.instrumented("op-under-test")
class Function:
    def __init__(self) -> None:
        self.opened = False
        self.closed = False
        self.model = Scorer()

    def open(self, ctx) -> None:
        self.opened = True

    def process_element(self, value, ctx):
        if value < 0:
            return
        yield self.model.score_one([value, 1.0])
        yield "side"

    def close(self) -> None:
        self.closed = True


def test_records_time_and_outputs_are_counted_and_flushed_to_the_operators_group(monkeypatch):
    monkeypatch.setitem(stats.MODEL_METHODS, "detector", (__name__, "Scorer", ("score_one", "score")))
    monkeypatch.setattr(stats, "_wrapped", False)
    monkeypatch.setattr(Scorer, "score_one", Scorer.score_one)  # undone after the test
    monkeypatch.setattr(Scorer, "score", Scorer.score)
    f, ctx = Function(), FakeContext()
    f.open(ctx)
    assert f.opened and Function.vigil_operator_name == "op-under-test"
    assert f.process_element(2.0, None) == [3.0, "side"]  # outputs materialised, unchanged
    assert f.process_element(-1.0, None) == []
    f.close()
    assert f.closed
    c = ctx.group.groups["vigil"].groups["op-under-test"].counters
    assert c["records"].value == 2
    assert c["busy_ns"].value >= c["cpu_ns"].value > 0
    assert c["detector_calls"].value == 1  # score_one's call of score is part of it
    assert 0 < c["detector_cpu_ns"].value <= c["cpu_ns"].value
    assert c["classifier_calls"].value == 0


def test_model_calls_outside_an_operator_are_not_counted_and_work_unchanged():
    stats.instrument_models()
    assert getattr(DetectorModel.score_one, "__vigil_timed__", False)
    st = stats.OperatorStats(None, "x")
    stats.instrument_models()  # idempotent: no double wrapping
    assert not getattr(DetectorModel.score_one.__wrapped__, "__vigil_timed__", False)
    assert st.totals()["detector_calls"] == 0


def test_each_thread_counts_for_its_own_operator(monkeypatch):
    monkeypatch.setitem(stats.MODEL_METHODS, "detector", (__name__, "Scorer", ("score_one",)))
    monkeypatch.setattr(stats, "_wrapped", False)
    monkeypatch.setattr(Scorer, "score_one", Scorer.score_one)
    a, b = Function(), Function()
    a.open(FakeContext())
    b.open(FakeContext())

    def work(f, n):
        for i in range(n):
            f.process_element(float(i), None)

    ts = [threading.Thread(target=work, args=(a, 300)), threading.Thread(target=work, args=(b, 200))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert (a._vigil_stats.records, b._vigil_stats.records) == (300, 200)
    assert (a._vigil_stats.model_calls["detector"], b._vigil_stats.model_calls["detector"]) == (300, 200)
    assert a._vigil_stats.cpu_ns > 0 and b._vigil_stats.cpu_ns > 0


def test_the_counters_and_the_timed_methods_are_those_of_the_catalogs_models():
    from models.catalog import BY_NAME, MODEL_NAMES

    st = stats.OperatorStats(None, "op")
    assert [k for k in st.totals() if k.endswith("_calls")] == [f"{m}_calls" for m in MODEL_NAMES]
    assert list(stats.MODEL_METHODS) == list(MODEL_NAMES)
    for name, (module, cls_name, _) in stats.MODEL_METHODS.items():
        assert BY_NAME[name].runtime.__module__ == module and BY_NAME[name].runtime.__name__ == cls_name
