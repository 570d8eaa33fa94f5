#!/usr/bin/env bash
# Run `python -m MODULE ARGS...` against Kafka and Redis: start each of them unless it already runs,
# make sure model versions exist, and stop only what this script started (whatever the command did).
# Ports as in scripts/services.sh (VIGIL_KAFKA_PORT, VIGIL_REDIS_PORT); the job and the command are
# pointed at them unless VIGIL_KAFKA_BOOTSTRAP / VIGIL_REDIS_URL say otherwise.
# Used by `make run` (demo.run), `make bench` (bench.throughput) and `make bench-nab` (bench.nab).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
py="$root/.venv/bin/python"
module="$1"
shift
export VIGIL_KAFKA_BOOTSTRAP="${VIGIL_KAFKA_BOOTSTRAP:-127.0.0.1:${VIGIL_KAFKA_PORT:-9092}}"
export VIGIL_REDIS_URL="${VIGIL_REDIS_URL:-redis://127.0.0.1:${VIGIL_REDIS_PORT:-6390}/0}"
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
"$py" -m "$module" "$@"
