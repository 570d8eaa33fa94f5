"""Benchmarks: they measure and write reports under ``reports/``, and never fail on a figure.

- :mod:`bench.throughput` (``make bench``): the job's throughput, latency and memory beside
  :mod:`bench.baseline`, a plain kafka-python loop; :mod:`bench.kit` holds their shared parts.
- :mod:`bench.nab` (``make bench-nab``): detection quality on NAB through Kafka and Flink.
- :mod:`bench.forecast` (``make bench-forecast``): the forecaster's backtest on NAB's real series.
- :mod:`bench.models`: per-call latency of the four published models.
- :mod:`bench.gil`: the cost of sharing the GIL between Python operators.
"""
