#!/usr/bin/env bash
# A standalone Flink cluster from the scripts inside the PyFlink package, and job submission.
#   flink-cluster.sh up                 start a JobManager and a TaskManager on localhost
#   flink-cluster.sh add-tm             start one more TaskManager (after one was lost, or to scale out)
#   flink-cluster.sh submit [args...]   `flink run` jobs/vigil_job.py (args go to the job, e.g. --config)
#   flink-cluster.sh savepoint [JOBID]  stop the job (the only running one by default) with a savepoint
#                                       into $VIGIL_SAVEPOINT_DIR (runs/savepoints); prints its path
#   flink-cluster.sh restore PATH [args...]  `flink run -s PATH`: the job again, from that savepoint
#                                       (or retained checkpoint); args as for submit
#   flink-cluster.sh cancel [JOBID]     cancel the job (its last checkpoints stay in job.checkpoint_dir)
#   flink-cluster.sh down               stop all of them
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
# embedded-Python operator classes to accept a PyFlink job) and the Prometheus reporter, as links in a folder of our own so
# that the installed package stays untouched.
export FLINK_LIB_DIR="$root/.cache/flink-lib"
mkdir -p "$FLINK_LIB_DIR"
ln -sf "$FLINK_HOME"/lib/*.jar "$FLINK_HOME"/opt/flink-python-*.jar "$root"/.cache/jars/flink-metrics/*.jar \
  "$FLINK_LIB_DIR"/
rest="http://localhost:8081"
savepoints="${VIGIL_SAVEPOINT_DIR:-$root/runs/savepoints}"

running_job() {  # the id of the only running job
  local ids
  ids="$(curl -sf "$rest/jobs/overview" | "$py" -c 'import json, sys
print(" ".join(j["jid"] for j in json.load(sys.stdin)["jobs"] if j["state"] == "RUNNING"))')"
  if [ -z "$ids" ] || [ "$(wc -w <<<"$ids")" -ne 1 ]; then
    echo "flink-cluster: expected one running job, found: ${ids:-none}; give the JOBID" >&2
    return 1
  fi
  echo "$ids"
}

run_job() {  # run_job [flink run options...] -- [job args...]
  local opts=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do opts+=("$1"); shift; done
  [ "${1:-}" = "--" ] && shift
  "$FLINK_HOME/bin/flink" run -m localhost:8081 -d "${opts[@]}" \
    -pyexec "$py" -pyclientexec "$py" \
    -py "$root/jobs/vigil_job.py" "$@"
}

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
  add-tm)
    "$FLINK_HOME/bin/taskmanager.sh" start ;;
  cancel)
    "$FLINK_HOME/bin/flink" cancel -m localhost:8081 "${2:-$(running_job)}" ;;
  submit)
    shift
    run_job -- "$@" ;;
  savepoint)
    jid="${2:-$(running_job)}"
    mkdir -p "$savepoints"
    "$FLINK_HOME/bin/flink" stop -m localhost:8081 --savepointPath "file://$savepoints" "$jid" ;;
  restore)
    [ -n "${2:-}" ] || { echo "usage: $0 restore SAVEPOINT_PATH [job args]" >&2; exit 2; }
    sp="$2"; shift 2
    run_job -s "$sp" -- "$@" ;;
  down)
    "$FLINK_HOME/bin/taskmanager.sh" stop-all || true
    "$FLINK_HOME/bin/jobmanager.sh" stop-all || true
    echo "flink cluster stopped" ;;
  *) echo "usage: $0 up|add-tm|submit [job args]|savepoint [JOBID]|cancel [JOBID]|restore PATH [job args]|down" >&2; exit 2 ;;
esac
