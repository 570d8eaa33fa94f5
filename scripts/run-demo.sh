#!/usr/bin/env bash
# `make run`: start Kafka and Redis unless they already run, make sure model versions exist,
# run the demo (jobs/demo.py), and stop only what this script started.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
py="$root/.venv/bin/python"
started=0
status="$(scripts/services.sh status)"  # read whole: `status | grep -q` can die of SIGPIPE under pipefail
if ! grep -q "kafka: running" <<<"$status" || ! grep -q "redis: running" <<<"$status"; then
  scripts/services.sh up
  started=1
fi
cleanup() { if [ "$started" = 1 ]; then scripts/services.sh down; fi; }
trap cleanup EXIT
"$py" -m training ensure --store "${ARTIFACTS:-artifacts}"
"$py" -m jobs.demo "$@"
