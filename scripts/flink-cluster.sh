#!/usr/bin/env bash
# A standalone Flink cluster from the scripts inside the PyFlink package, and job submission.
#   flink-cluster.sh up                 start a JobManager and a TaskManager on localhost
#   flink-cluster.sh submit [args...]   `flink run` jobs/vigil_job.py (args go to the job, e.g. --config)
#   flink-cluster.sh down               stop both
# Config: flink-conf/cluster/config.yaml. Logs: .cache/flink-log. REST/UI: http://localhost:8081.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="$root/.venv/bin/python"
FLINK_HOME="$("$py" -c 'import os, pyflink; print(os.path.dirname(os.path.abspath(pyflink.__file__)))')"
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
export FLINK_HOME
export FLINK_CONF_DIR="$root/flink-conf/cluster"
export FLINK_LOG_DIR="${FLINK_LOG_DIR:-$root/.cache/flink-log}"
export FLINK_PID_DIR="$root/.cache/flink-pid"
export PYTHONPATH="$site:$root"
export PYFLINK_CLIENT_EXECUTABLE="$py"
mkdir -p "$FLINK_LOG_DIR" "$FLINK_PID_DIR"
# The cluster's classpath: PyFlink's lib/ plus flink-python from opt/ (the JobManager needs the
# embedded-Python operator classes to accept a PyFlink job), as links in a folder of our own so
# that the installed package stays untouched.
export FLINK_LIB_DIR="$root/.cache/flink-lib"
mkdir -p "$FLINK_LIB_DIR"
ln -sf "$FLINK_HOME"/lib/*.jar "$FLINK_HOME"/opt/flink-python-*.jar "$FLINK_LIB_DIR"/
rest="http://localhost:8081"

wait_rest() {
  for _ in $(seq 1 120); do
    if curl -sf "$rest/taskmanagers" | grep -q '"id"'; then return 0; fi
    sleep 0.5
  done
  echo "flink-cluster: no TaskManager registered within 60 s; see $FLINK_LOG_DIR" >&2
  return 1
}

case "${1:-}" in
  up)
    "$root/scripts/fetch-jars.sh"
    "$FLINK_HOME/bin/jobmanager.sh" start
    "$FLINK_HOME/bin/taskmanager.sh" start
    wait_rest
    echo "flink cluster up: $rest" ;;
  submit)
    shift
    "$FLINK_HOME/bin/flink" run -m localhost:8081 -d \
      -pyexec "$py" -pyclientexec "$py" \
      -py "$root/jobs/vigil_job.py" "$@" ;;
  down)
    "$FLINK_HOME/bin/taskmanager.sh" stop-all || true
    "$FLINK_HOME/bin/jobmanager.sh" stop-all || true
    echo "flink cluster stopped" ;;
  *) echo "usage: $0 up|submit [job args]|down" >&2; exit 2 ;;
esac
