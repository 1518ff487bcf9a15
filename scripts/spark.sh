#!/usr/bin/env bash
# A local Apache Spark 4.3.0 standalone cluster (one master, one worker) for tests, benchmarks
# and the example, from PyPI's pyspark alone.
#
#   scripts/spark.sh start DIR [MASTER_PORT REST_PORT UI_PORT WORKER_UI_PORT]
#                                installs pyspark into .venv-spark (once), writes a loopback-only
#                                config under DIR, starts a master (with its REST submission
#                                server) and a worker, waits until the worker joined
#   scripts/spark.sh stop DIR    stops both by their pid files
#   scripts/spark.sh kill-master DIR
#                                kills the master with SIGKILL (the worker and its drivers stay)
#   scripts/spark.sh master DIR  starts the master of DIR again, on the ports DIR was started with
#   scripts/spark.sh jars        prints Spark's jars folder (for javac -cp "$JARS/*")
#
# Options of `start`, as environment variables:
#   SPARK_HIDE="PATH ..."        runs the worker (and so every driver and executor) in its own mount
#                                namespace with an empty tmpfs over each PATH, so it cannot see
#                                those folders: a stand-in for a worker on another host. Needs root
#                                and unshare(1). Each PATH must exist and must not hold DIR.
#   SPARK_RECOVERY=filesystem    the master keeps its drivers and apps in DIR/recovery
#                                (spark.deploy.recoveryMode FILESYSTEM) and recovers them when it
#                                starts again
#
# Ports default to 7077 (master), 6066 (REST), 8080 (master UI) and 8091 (worker UI: 8081 is
# Flink's). Needs python3 (venv) and Java 17. Everything the cluster writes (logs, pids, the
# worker's driver folders with each driver's stdout and stderr) stays under DIR; the worker's
# folder is DIR/work.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${SPARK_VENV:-$root/.venv-spark}"
version=4.3.0

usage() {
  echo "usage: $0 start DIR [MASTER_PORT REST_PORT UI_PORT WORKER_UI_PORT] | stop DIR | kill-master DIR | master DIR | jars" >&2
  exit 2
}

spark_home() {
  "$venv/bin/python" -c 'import pyspark,os;print(os.path.dirname(os.path.abspath(pyspark.__file__)))'
}

install() {
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import pyspark' 2>/dev/null \
    && [ -x "$(spark_home)/bin/spark-class" ]; then
    return
  fi
  echo "installing Spark $version into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "pyspark==$version" >&2
}

write_config() {
  local dir="$1" rest_port="$2"
  mkdir -p "$dir/conf" "$dir/log" "$dir/pid" "$dir/work" "$dir/local"
  cat >"$dir/conf/spark-env.sh" <<ENV
SPARK_LOCAL_IP=127.0.0.1
SPARK_MASTER_HOST=127.0.0.1
SPARK_DAEMON_MEMORY=512m
SPARK_WORKER_CORES=8
SPARK_WORKER_MEMORY=6g
SPARK_WORKER_DIR=$dir/work
SPARK_LOG_DIR=$dir/log
SPARK_PID_DIR=$dir/pid
SPARK_LOCAL_DIRS=$dir/local
ENV
  cat >"$dir/conf/spark-defaults.conf" <<CONF
spark.master.rest.enabled true
spark.master.rest.host 127.0.0.1
spark.master.rest.port $rest_port
spark.driver.host 127.0.0.1
spark.driver.bindAddress 127.0.0.1
spark.ui.enabled false
CONF
  if [ "${SPARK_RECOVERY:-}" = filesystem ]; then
    mkdir -p "$dir/recovery"
    cat >>"$dir/conf/spark-defaults.conf" <<CONF
spark.deploy.recoveryMode FILESYSTEM
spark.deploy.recoveryDirectory $dir/recovery
CONF
  elif [ -n "${SPARK_RECOVERY:-}" ]; then
    echo "SPARK_RECOVERY: only 'filesystem' is known, not '$SPARK_RECOVERY'" >&2
    exit 2
  fi
}

daemon_env() {
  local dir="$1"
  home="$(spark_home)"
  export SPARK_HOME="$home" SPARK_CONF_DIR="$dir/conf" SPARK_LOG_DIR="$dir/log" \
    SPARK_PID_DIR="$dir/pid" SPARK_IDENT_STRING="jobkeeper-test"
}

start_master() {
  local dir="$1" master_port="$2" ui_port="$3"
  "$home/sbin/spark-daemon.sh" start org.apache.spark.deploy.master.Master 1 \
    --host 127.0.0.1 --port "$master_port" --webui-port "$ui_port" >/dev/null
}

master_pid_file() {
  echo "$1/pid/spark-jobkeeper-test-org.apache.spark.deploy.master.Master-1.pid"
}

wait_ready() {
  local ui_port="$1" dir="$2"
  for _ in $(seq 1 120); do
    if curl -fsS "http://127.0.0.1:$ui_port/json/" 2>/dev/null | grep -q '"aliveworkers" *: *1'; then
      echo "Spark $version ready: master UI http://127.0.0.1:$ui_port" >&2
      return 0
    fi
    sleep 0.5
  done
  echo "Spark did not come up within 60 s; logs in $dir/log:" >&2
  tail -n 30 "$dir"/log/* >&2 || true
  return 1
}

cmd="${1:-}"
case "$cmd" in
  start)
    [ $# -ge 2 ] || usage
    dir="$(mkdir -p "$2" && cd "$2" && pwd)"
    master_port="${3:-7077}" rest_port="${4:-6066}" ui_port="${5:-8080}" worker_ui_port="${6:-8091}"
    install
    write_config "$dir" "$rest_port"
    echo "$master_port $ui_port" >"$dir/ports"
    daemon_env "$dir"
    start_master "$dir" "$master_port" "$ui_port"
    worker=("$home/sbin/spark-daemon.sh" start org.apache.spark.deploy.worker.Worker 1
      --host 127.0.0.1 --webui-port "$worker_ui_port" --work-dir "$dir/work"
      "spark://127.0.0.1:$master_port")
    if [ -n "${SPARK_HIDE:-}" ]; then
      # shellcheck disable=SC2016
      unshare --mount --propagation private sh -ec '
        for p in $SPARK_HIDE; do mount -t tmpfs -o size=1m,mode=0755 jobkeeper-hidden "$p"; done
        exec "$@"' worker "${worker[@]}" >/dev/null
    else
      "${worker[@]}" >/dev/null
    fi
    wait_ready "$ui_port" "$dir"
    ;;
  stop)
    [ $# -ge 2 ] || usage
    dir="$(cd "$2" 2>/dev/null && pwd)" || { echo "no cluster folder $2" >&2; exit 0; }
    daemon_env "$dir"
    # The worker first: it kills its drivers and executors on the way out.
    "$home/sbin/spark-daemon.sh" stop org.apache.spark.deploy.worker.Worker 1 >/dev/null 2>&1 || true
    "$home/sbin/spark-daemon.sh" stop org.apache.spark.deploy.master.Master 1 >/dev/null 2>&1 || true
    for f in "$dir"/pid/*.pid; do
      [ -f "$f" ] || continue
      while read -r pid; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
      done <"$f"
      rm -f "$f"
    done
    echo "Spark stopped ($dir)" >&2
    ;;
  kill-master)
    [ $# -ge 2 ] || usage
    pid_file="$(master_pid_file "$2")"
    [ -f "$pid_file" ] || { echo "no master pid file in $2" >&2; exit 1; }
    kill -9 "$(cat "$pid_file")"
    echo "Spark master killed ($2)" >&2
    ;;
  master)
    [ $# -ge 2 ] || usage
    dir="$(cd "$2" && pwd)"
    read -r master_port ui_port <"$dir/ports"
    daemon_env "$dir"
    start_master "$dir" "$master_port" "$ui_port"
    for _ in $(seq 1 120); do
      curl -fsS "http://127.0.0.1:$ui_port/json/" >/dev/null 2>&1 && { echo "Spark master up again" >&2; exit 0; }
      sleep 0.25
    done
    echo "the Spark master did not come up within 30 s; logs in $dir/log" >&2
    exit 1
    ;;
  jars)
    install
    echo "$(spark_home)/jars"
    ;;
  *) usage ;;
esac
