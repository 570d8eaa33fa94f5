#!/usr/bin/env bash
# `make bench`: the throughput/latency/memory benchmark (bench/throughput.py; arguments pass through, e.g.
# --series 200 --events 20000), with Kafka and Redis started unless they already run and only what
# was started stopped at the end (see scripts/with-services.sh for ports).
exec "$(dirname "$0")/with-services.sh" bench.throughput --store "${ARTIFACTS:-artifacts}" "$@"
