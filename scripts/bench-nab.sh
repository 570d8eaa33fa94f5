#!/usr/bin/env bash
# `make bench-nab`: start Kafka and Redis unless they already run, make sure model versions exist,
# run the NAB benchmark (jobs/bench_nab.py; arguments pass through, e.g. --files nyc_taxi --limit 500)
# and stop only the services this script started.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
py="$root/.venv/bin/python"
started=()
cleanup() { for s in "${started[@]}"; do scripts/services.sh down "$s"; done; }
trap cleanup EXIT
status="$(scripts/services.sh status)"  # read whole: `status | grep -q` can die of SIGPIPE under pipefail
for s in kafka redis; do
  if ! grep -q "^$s: running" <<<"$status"; then
    started+=("$s")  # before `up`: a start that fails half-way is still stopped on exit
    scripts/services.sh up "$s"
  fi
done
"$py" -m training ensure --store "${ARTIFACTS:-artifacts}"
"$py" -m jobs.bench_nab --store "${ARTIFACTS:-artifacts}" "$@"
