#!/usr/bin/env bash
# `make bench-nab`: the NAB benchmark (bench/nab.py; arguments pass through, e.g. --files
# nyc_taxi --limit 500), with Kafka and Redis started unless they already run and only what was
# started stopped at the end (see scripts/with-services.sh for ports).
exec "$(dirname "$0")/with-services.sh" bench.nab --store "${ARTIFACTS:-artifacts}" "$@"
