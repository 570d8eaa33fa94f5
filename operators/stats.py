"""Where the job's time goes: records and busy time per operator, calls and time per model call.

Each operator decorated with :func:`instrumented` reports, through Flink's metric system (so the
REST API of a MiniCluster or cluster, or any configured metric reporter, shows them), under the
metric group ``vigil.<operator>``:

- ``records``, ``batches``, ``busy_ns`` and ``cpu_ns``: input records (a batched operator says how
  many records an input element holds with a ``records_in`` static method), input elements, and
  the wall-clock and thread CPU nanoseconds its ``process_element`` took for them, state access
  included, emitting the outputs to Flink excluded;
- ``<model>_calls`` and ``<model>_cpu_ns`` for each model of the catalog
  (:data:`models.catalog.MODEL_NAMES`): calls of the model's scoring methods
  (:data:`MODEL_METHODS`, the outermost call when one calls another) made while that operator
  handled a record, and the thread CPU nanoseconds they took.

Thread CPU time is what a record or a call costs: in thread mode every Python operator of a task
manager shares one interpreter, so wall-clock time inside a call also counts the time the thread
waited for the GIL while another operator's thread ran. Wall-clock ``busy_ns`` is kept beside it;
the gap between the two is that wait (and any time the OS ran something else).

The cost is about 0.7 µs a record and 0.6 µs a model call (``thread_time_ns`` is a system call);
counts are added up in Python and handed to Flink's counters (a call into the JVM each) at most
twice a second and when the operator closes. Outside an instrumented operator (training, the
in-process job) a model call costs one thread-local look-up more.
"""

from __future__ import annotations

import functools
import importlib
import threading
from time import perf_counter_ns, thread_time_ns
from typing import Any

from models.catalog import MODEL_NAMES

GROUP = "vigil"
# the methods through which the logic scores with each model (module, class, methods)
MODEL_METHODS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "detector": ("models.detector", "DetectorModel", ("score_one", "score", "score_samples")),
    "forecaster": ("models.forecaster", "ForecasterModel", ("forecast", "forecast_batch", "predict")),
    "clusterer": ("models.clusterer", "ClustererModel", ("assign", "distances")),
    "classifier": ("models.classifier", "ClassifierModel", ("predict_proba", "predict_proba_batch",
                                                             "probabilities")),
}
FLUSH_NS = 500_000_000

_local = threading.local()  # .op: the OperatorStats whose record this thread is handling
_wrapped = False
_wrap_lock = threading.Lock()


class OperatorStats:
    """Counts of one operator instance, added up in Python and flushed to Flink counters."""

    def __init__(self, metrics_group: Any | None, name: str) -> None:
        self.name = name
        self.records = self.batches = self.busy_ns = self.cpu_ns = 0
        self.model_calls = dict.fromkeys(MODEL_NAMES, 0)
        self.model_cpu_ns = dict.fromkeys(MODEL_NAMES, 0)
        self.depth = 0  # > 0 while a model call is timed (nested calls are part of it)
        self._flushed: dict[str, int] = {}
        self._next_flush = 0
        self._counters: dict[str, Any] = {}
        if metrics_group is not None:
            g = metrics_group.add_group(GROUP).add_group(name)
            names = ["records", "batches", "busy_ns", "cpu_ns"]
            names += [f"{m}_{k}" for m in MODEL_NAMES for k in ("calls", "cpu_ns")]
            self._counters = {n: g.counter(n) for n in names}

    def totals(self) -> dict[str, int]:
        out = {"records": self.records, "batches": self.batches, "busy_ns": self.busy_ns, "cpu_ns": self.cpu_ns}
        for m in MODEL_NAMES:
            out[f"{m}_calls"], out[f"{m}_cpu_ns"] = self.model_calls[m], self.model_cpu_ns[m]
        return out

    def flush(self, now_ns: int | None = None) -> None:
        """Hand the counts since the last flush to Flink's counters."""
        self._next_flush = (now_ns or perf_counter_ns()) + FLUSH_NS
        if not self._counters:
            return
        for k, v in self.totals().items():
            d = v - self._flushed.get(k, 0)
            if d:
                self._counters[k].inc(d)
                self._flushed[k] = v

    def record(self, t0: int, t1: int, cpu_ns: int, n: int = 1) -> None:
        self.records += n
        self.batches += 1
        self.busy_ns += t1 - t0
        self.cpu_ns += cpu_ns
        if t1 >= self._next_flush:
            self.flush(t1)


def _timed(model: str, fn):
    @functools.wraps(fn)
    def timed(*args, **kwargs):
        st = getattr(_local, "op", None)
        if st is None or st.depth:
            return fn(*args, **kwargs)
        st.depth = 1
        t0 = thread_time_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            st.model_cpu_ns[model] += thread_time_ns() - t0
            st.model_calls[model] += 1
            st.depth = 0

    timed.__vigil_timed__ = True  # type: ignore[attr-defined]
    return timed


def instrument_models() -> None:
    """Time the scoring methods of the four model classes (once per interpreter; idempotent)."""
    global _wrapped
    with _wrap_lock:
        if _wrapped:
            return
        for model, (module, cls_name, methods) in MODEL_METHODS.items():
            cls = getattr(importlib.import_module(module), cls_name)
            for m in methods:
                fn = cls.__dict__.get(m)
                if fn is not None and callable(fn) and not getattr(fn, "__vigil_timed__", False):
                    setattr(cls, m, _timed(model, fn))
        _wrapped = True


def instrumented(name: str):
    """Class decorator for a Flink function: report its records, busy time and model calls as ``vigil.<name>.*``.

    It wraps ``open`` (registers the counters after the function's own ``open``), ``process_element``
    (timed; its outputs are materialised so that handing them to Flink is not counted) and ``close``
    (flushes). The function's own code is unchanged.
    """

    def decorate(cls):
        open_, process, close = cls.open, cls.process_element, getattr(cls, "close", None)
        records_in = getattr(cls, "records_in", None)  # records in one input element (a batch), if not 1

        @functools.wraps(open_)
        def open(self, ctx):  # noqa: A001 - the Flink method's name
            open_(self, ctx)
            instrument_models()
            self._vigil_stats = OperatorStats(ctx.get_metrics_group(), name)

        @functools.wraps(process)
        def process_element(self, value, ctx):
            st = self.__dict__.get("_vigil_stats")
            if st is None:  # used without open() (a unit test): keep counting, report nowhere
                st = self._vigil_stats = OperatorStats(None, name)
            outer = getattr(_local, "op", None)
            _local.op = st
            t0, c0 = perf_counter_ns(), thread_time_ns()
            try:
                out = process(self, value, ctx)
                out = [] if out is None else list(out)
            finally:
                c1, t1 = thread_time_ns(), perf_counter_ns()
                _local.op = outer
            st.record(t0, t1, c1 - c0, 1 if records_in is None else records_in(value))
            return out

        def close_(self):
            st = self.__dict__.get("_vigil_stats")
            if st is not None:
                st.flush()
            if close is not None:
                close(self)

        cls.open, cls.process_element, cls.close = open, process_element, close_
        cls.vigil_operator_name = name
        return cls

    return decorate
