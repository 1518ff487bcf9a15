#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests and benchmarks, from Debian's `postgresql` package.
#
#   scripts/postgres.sh start DIR [PORT]   installs postgresql if missing, makes a cluster under
#                                          DIR (owned by the `postgres` user: Postgres refuses
#                                          to run as root), starts it on 127.0.0.1:PORT (a free
#                                          port when not given), creates the database
#                                          `jobkeeper`, and prints its URL
#   scripts/postgres.sh stop DIR           stops it (fast shutdown); `stop DIR immediate` is a
#                                          crash (no shutdown checkpoint)
#   scripts/postgres.sh url DIR            prints the URL of the server started under DIR
#
# The server trusts local connections (`initdb -A trust`): it is for tests on one machine only.
# Everything it writes (data, socket, log) stays under DIR.
set -euo pipefail

usage() { echo "usage: $0 start DIR [PORT] | stop DIR [immediate] | url DIR" >&2; exit 2; }

bin_dir() {
  local pg_config
  for pg_config in /usr/lib/postgresql/*/bin/pg_ctl; do
    [ -x "$pg_config" ] && { dirname "$pg_config"; return; }
  done
  return 1
}

install() {
  bin_dir >/dev/null 2>&1 && return
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq postgresql </dev/null
  bin_dir >/dev/null
}

as_postgres() { runuser -u postgres -- "$@"; }

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

[ $# -ge 2 ] || usage
cmd="$1" dir="$2"
case "$cmd" in
  start)
    [ "$(id -u)" = 0 ] || { echo "$0: run as root (the server runs as the postgres user through runuser)" >&2; exit 1; }
    install
    bin="$(bin_dir)"
    port="${3:-$(free_port)}"
    mkdir -p "$dir"
    chown postgres: "$dir"
    chmod 700 "$dir"
    as_postgres "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 >"$dir/initdb.log"
    as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
    as_postgres "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qAt \
      -c "CREATE DATABASE jobkeeper" >/dev/null
    echo "$port" >"$dir/port"
    echo "postgres://postgres@127.0.0.1:$port/jobkeeper"
    ;;
  stop)
    bin="$(bin_dir)"
    [ -d "$dir/data" ] || exit 0
    as_postgres "$bin/pg_ctl" -D "$dir/data" -m "${3:-fast}" -w stop >/dev/null 2>&1 || true
    ;;
  url)
    [ -f "$dir/port" ] || { echo "$0: no server started under $dir" >&2; exit 1; }
    echo "postgres://postgres@127.0.0.1:$(cat "$dir/port")/jobkeeper"
    ;;
  *) usage ;;
esac
