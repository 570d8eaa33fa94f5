#!/usr/bin/env bash
# `make bench-nab`: the NAB benchmark (jobs/bench_nab.py; arguments pass through, e.g. --files
# nyc_taxi --limit 500), with Kafka and Redis started unless they already run and only what was
# started stopped at the end (see scripts/with-services.sh for ports).
exec "$(dirname "$0")/with-services.sh" jobs.bench_nab --store "${ARTIFACTS:-artifacts}" "$@"
