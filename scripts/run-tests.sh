#!/usr/bin/env bash
# `make test`: start the real Kafka, Redis and Alertmanager the integration tests need (ports of their own),
# run pytest, and stop them whatever happens. A second run beside it needs other ports and its own folder for
# the services' pid files and logs: VIGIL_TEST_{KAFKA,KAFKA_CONTROLLER,REDIS,ALERTMANAGER}_PORT, VIGIL_TEST_SERVICES_RUN.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export VIGIL_KAFKA_PORT="${VIGIL_TEST_KAFKA_PORT:-19092}"
export VIGIL_KAFKA_CONTROLLER_PORT="${VIGIL_TEST_KAFKA_CONTROLLER_PORT:-19093}"
export VIGIL_REDIS_PORT="${VIGIL_TEST_REDIS_PORT:-16390}"
export VIGIL_ALERTMANAGER_PORT="${VIGIL_TEST_ALERTMANAGER_PORT:-19094}"
export VIGIL_ALERTMANAGER_URL="http://127.0.0.1:$VIGIL_ALERTMANAGER_PORT"
export VIGIL_KAFKA_BOOTSTRAP="127.0.0.1:$VIGIL_KAFKA_PORT"
export VIGIL_REDIS_URL="redis://127.0.0.1:$VIGIL_REDIS_PORT/0"
export VIGIL_SERVICES_RUN="${VIGIL_TEST_SERVICES_RUN:-$root/.cache/test-run}"
scripts/services.sh up
trap 'scripts/services.sh down' EXIT
"$root/.venv/bin/python" -m pytest "$@"
