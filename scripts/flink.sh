#!/usr/bin/env bash
# A local Apache Flink session cluster for tests and benchmarks, from PyPI packages alone.
#
#   scripts/flink.sh start DIR [REST_PORT [VERSION]]   installs Flink VERSION into its venv
#                                            (once), writes a loopback-only config under DIR,
#                                            starts a JobManager and a TaskManager, waits until
#                                            the TaskManager joined
#   scripts/flink.sh stop DIR                stops both by their pid files
#   scripts/flink.sh lib [VERSION]           prints Flink's lib folder (for javac -cp "$LIB/*")
#
# VERSION defaults to $FLINK_VERSION, else 2.3.0; 1.19 and later are supported (PyPI carries
# 1.17-1.20 and 2.0-2.3). 2.3.0 lives in .venv-flink, any other version in .venv-flink-X.Y
# (e.g. .venv-flink-1.20); FLINK_VENV overrides the folder.
# FLINK_SLOTS sets the TaskManager's task slots (default 8; a job of parallelism 1 takes one).
# Needs python3 (venv) and Java 17. REST_PORT defaults to 8081. Everything the cluster writes
# (logs, pids, checkpoints, savepoints, uploaded jars) stays under DIR. FLINK_EXTRA_CONF adds
# flat `key: value` lines to the config (e.g. `jobmanager.scheduler: adaptive`, the scheduler
# that rescales a running job through `PUT /jobs/ID/resource-requirements`); FLINK_TASKMANAGERS
# starts that many TaskManagers (default 1), their pids in DIR/pid/*taskexecutor.pid.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version="${FLINK_VERSION:-2.3.0}"

usage() { echo "usage: $0 start DIR [REST_PORT [VERSION]] | stop DIR | lib [VERSION]" >&2; exit 2; }

# The venv of $version.
set_venv() {
  if [ -n "${FLINK_VENV:-}" ]; then
    venv="$FLINK_VENV"
  elif [ "$version" = 2.3.0 ]; then
    venv="$root/.venv-flink"
  else
    venv="$root/.venv-flink-$(echo "$version" | cut -d. -f1-2)"
  fi
}

flink_home() {
  "$venv/bin/python" -c 'import pyflink,os;print(os.path.dirname(os.path.abspath(pyflink.__file__)))'
}

install() {
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import pyflink' 2>/dev/null \
    && [ -f "$(flink_home)/lib/flink-dist-$version.jar" ]; then
    return
  fi
  echo "installing Flink $version into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps \
    "apache-flink-libraries==$version" "apache-flink==$version" >&2
}

write_config() {
  local dir="$1" port="$2" home="$3"
  local opts rpc_port
  # The JobManager's RPC port must be fixed (the TaskManager dials it): a free one.
  rpc_port="$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')"
  # Java 17 needs the shipped --add-opens list.
  opts="$(sed -n 's/^ *all: *\(--add-.*\)$/\1/p' "$home/conf/config.yaml" | head -n1)"
  mkdir -p "$dir/conf" "$dir/log" "$dir/pid" "$dir/tmp" "$dir/upload" "$dir/checkpoints" "$dir/savepoints"
  cp "$home/conf/log4j.properties" "$dir/conf/" 2>/dev/null || true
  cp "$home/conf/log4j-console.properties" "$dir/conf/" 2>/dev/null || true
  cat >"$dir/conf/config.yaml" <<YAML
env:
  java:
    opts:
      all: $opts
  log:
    dir: $dir/log
  pid:
    dir: $dir/pid
jobmanager:
  bind-host: 127.0.0.1
  rpc:
    address: 127.0.0.1
    port: $rpc_port
  memory:
    process:
      size: 1024m
taskmanager:
  bind-host: 127.0.0.1
  host: 127.0.0.1
  numberOfTaskSlots: ${FLINK_SLOTS:-8}
  memory:
    process:
      size: 1024m
    managed:
      size: 64m
rest:
  address: 127.0.0.1
  bind-address: 127.0.0.1
  port: $port
web:
  upload:
    dir: $dir/upload
  refresh-interval: 500
io:
  tmp:
    dirs: $dir/tmp
blob:
  server:
    port: 0
restart-strategy:
  type: none
execution:
  checkpointing:
    dir: file://$dir/checkpoints
    savepoint-dir: file://$dir/savepoints
YAML
  if [ -n "${FLINK_EXTRA_CONF:-}" ]; then
    printf '%s\n' "$FLINK_EXTRA_CONF" >>"$dir/conf/config.yaml"
  fi
}

wait_ready() {
  local port="$1" dir="$2" tms="${FLINK_TASKMANAGERS:-1}"
  for _ in $(seq 1 120); do
    if curl -fsS "http://127.0.0.1:$port/overview" 2>/dev/null | grep -q "\"taskmanagers\":$tms,"; then
      echo "Flink $version ready at http://127.0.0.1:$port" >&2
      return 0
    fi
    sleep 0.5
  done
  echo "Flink did not come up within 60 s; logs in $dir/log:" >&2
  tail -n 30 "$dir"/log/*.log >&2 || true
  return 1
}

cmd="${1:-}"
case "$cmd" in
  start)
    [ $# -ge 2 ] || usage
    dir="$(mkdir -p "$2" && cd "$2" && pwd)"
    port="${3:-8081}"
    version="${4:-$version}"
    set_venv
    install
    home="$(flink_home)"
    write_config "$dir" "$port" "$home"
    echo "$venv" >"$dir/venv"
    export FLINK_CONF_DIR="$dir/conf" FLINK_LOG_DIR="$dir/log" FLINK_PID_DIR="$dir/pid"
    "$home/bin/jobmanager.sh" start >/dev/null
    for _ in $(seq 1 "${FLINK_TASKMANAGERS:-1}"); do
      "$home/bin/taskmanager.sh" start >/dev/null
    done
    wait_ready "$port" "$dir"
    ;;
  stop)
    [ $# -ge 2 ] || usage
    dir="$(cd "$2" 2>/dev/null && pwd)" || { echo "no cluster folder $2" >&2; exit 0; }
    if [ -f "$dir/venv" ]; then venv="$(cat "$dir/venv")"; else set_venv; fi
    home="$(flink_home)"
    export FLINK_CONF_DIR="$dir/conf" FLINK_LOG_DIR="$dir/log" FLINK_PID_DIR="$dir/pid"
    # The JobManager first: its jobs are suspended with it rather than failed by a
    # TaskManager going away.
    "$home/bin/jobmanager.sh" stop >/dev/null 2>&1 || true
    "$home/bin/taskmanager.sh" stop >/dev/null 2>&1 || true
    # Whatever the scripts missed: the pids they recorded.
    for f in "$dir"/pid/*.pid; do
      [ -f "$f" ] || continue
      while read -r pid; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
      done <"$f"
      rm -f "$f"
    done
    echo "Flink stopped ($dir)" >&2
    ;;
  lib)
    version="${2:-$version}"
    set_venv
    install
    echo "$(flink_home)/lib"
    ;;
  *) usage ;;
esac
