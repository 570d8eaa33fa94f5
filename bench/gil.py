"""How one interpreter's GIL shares out between Python threads that call onnxruntime (a benchmark).

In PyFlink's thread mode every Python operator task runs on its own JVM thread in one embedded
interpreter; the job has three such tasks (parse, score-series, score-entity), and onnxruntime
releases the GIL on every call. This measures the detector's ``score_one`` from 1, 2 and 3 Python
threads at once, with and without some pure-Python work between calls (as an operator has), and
prints thread CPU and wall microseconds per iteration for each thread. It fails nothing::

    python -m bench.gil --store artifacts
"""

from __future__ import annotations

import json
import threading
import time

from bench.kit import add_store, parser
from models.pipeline import ModelBundle

ROW = [0.5, 0.2, -0.3, 0.1, 0.0, 0.05]


def run(bundle: ModelBundle, threads: int, calls: int, python_work: int) -> list[dict[str, float]]:
    """Per thread: thread-CPU and wall microseconds per iteration (one call plus ``python_work`` loop steps)."""
    out: list[dict[str, float]] = []

    def work() -> None:
        t0, w0 = time.thread_time_ns(), time.perf_counter_ns()
        for _ in range(calls):
            bundle.detector.score_one(ROW)
            s = 0
            for j in range(python_work):
                s += j
        out.append({"cpu_us": round((time.thread_time_ns() - t0) / calls / 1000, 1),
                    "wall_us": round((time.perf_counter_ns() - w0) / calls / 1000, 1)})

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = parser("bench.gil", __doc__)
    add_store(ap)
    ap.add_argument("--calls", type=int, default=3000, help="calls per thread (default: %(default)s)")
    args = ap.parse_args(argv)
    bundle = ModelBundle.load(args.store)
    report = {f"{n}_threads{'' if w else '_no_python_between'}": run(bundle, n, args.calls, w)
              for n in (1, 2, 3) for w in (300, 0)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
