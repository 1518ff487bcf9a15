#!/usr/bin/env bash
# Runs every test of jobkeeper on a fresh machine: installs what the tests need, checks
# formatting and lints, starts two local Flink clusters (2.3.0 and 1.20.3), a Spark standalone
# cluster and a throwaway PostgreSQL server (all stopped again on exit, whatever happens), runs
# unit and end-to-end tests (every test binary, even after a failing one), then fuzzes each
# parser for 15 s (scripts/fuzz.sh).
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

need() { command -v "$1" >/dev/null 2>&1; }

log "checking tools"
missing=()
need git || missing+=(git)
need javac || missing+=(openjdk-17-jdk-headless)
need systemd-analyze || missing+=(systemd)
# The status page is tested in a real browser; /metrics is checked with promtool.
need chromium || missing+=(chromium)
need promtool || missing+=(prometheus)
need curl || missing+=(curl)
# YARN with Kerberos (tests/yarn_kerberos.rs): a real MIT KDC, apache2 with mod_auth_gssapi
# demanding SPNEGO, and GSSAPI headers and libclang to build the `kerberos` feature.
need krb5kdc || missing+=(krb5-kdc krb5-admin-server)
need apache2 || missing+=(apache2)
[ -f /usr/lib/apache2/modules/mod_auth_gssapi.so ] || missing+=(libapache2-mod-auth-gssapi)
[ -f /usr/include/gssapi/gssapi.h ] || missing+=(libkrb5-dev)
ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || missing+=(libclang-dev)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" </dev/null
fi
git --version; javac -version; cargo --version; chromium --version; promtool --version 2>&1 | sed -n 1p

log "python venv with aiosmtpd (a real SMTP server for the alert tests)"
if [ ! -x .venv/bin/python ]; then
  need python3 || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq python3 python3-venv </dev/null; }
  python3 -m venv .venv 2>/dev/null || {
    rm -rf .venv
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq python3-venv </dev/null
    python3 -m venv .venv
  }
fi
.venv/bin/python -c "import aiosmtpd" 2>/dev/null || .venv/bin/pip install -q --disable-pip-version-check aiosmtpd
export JOBKEEPER_TEST_PYTHON="$PWD/.venv/bin/python"

# A clean build gains nothing from incremental files, which take gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

log "disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free here"

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy --all-targets --features kerberos -- -D warnings"
cargo clippy --all-targets --locked --features kerberos -- -D warnings

log "Debian package: cargo deb, dpkg -i, the unit verified, the binary run (scripts/deb-check.sh)"
scripts/deb-check.sh

log "Flink 2.3.0 and 1.20.3 session clusters for tests/flink.rs (scripts/flink.sh)"
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
flink_dir="$(mktemp -d /tmp/jobkeeper-flink.XXXXXX)"
flink120_dir="$(mktemp -d /tmp/jobkeeper-flink-1.20.XXXXXX)"
flink_port="${JOBKEEPER_FLINK_PORT:-$(free_port)}"
flink120_port="$(free_port)"
stop_flink() {
  scripts/flink.sh stop "$flink_dir" || true; rm -rf "$flink_dir"
  scripts/flink.sh stop "$flink120_dir" || true; rm -rf "$flink120_dir"
}
trap stop_flink EXIT
scripts/flink.sh start "$flink_dir" "$flink_port" 2.3.0
export JOBKEEPER_FLINK_URL="http://127.0.0.1:$flink_port"
JOBKEEPER_FLINK_LIB="$(scripts/flink.sh lib 2.3.0)"
export JOBKEEPER_FLINK_LIB
scripts/flink.sh start "$flink120_dir" "$flink120_port" 1.20.3
export JOBKEEPER_FLINK_1_20_URL="http://127.0.0.1:$flink120_port"
JOBKEEPER_FLINK_1_20_LIB="$(scripts/flink.sh lib 1.20.3)"
export JOBKEEPER_FLINK_1_20_LIB

log "Spark 4.3.0 standalone cluster for tests/spark.rs (scripts/spark.sh)"
spark_dir="$(mktemp -d /tmp/jobkeeper-spark.XXXXXX)"
spark_master_port="$(free_port)" spark_rest_port="$(free_port)" spark_ui_port="$(free_port)" spark_worker_ui_port="$(free_port)"
pg_dir="$(mktemp -d /tmp/jobkeeper-postgres.XXXXXX)"
stop_clusters() {
  stop_flink
  scripts/spark.sh stop "$spark_dir" || true; rm -rf "$spark_dir"
  scripts/postgres.sh stop "$pg_dir" || true; rm -rf "$pg_dir"
}
trap stop_clusters EXIT
scripts/spark.sh start "$spark_dir" "$spark_master_port" "$spark_rest_port" "$spark_ui_port" "$spark_worker_ui_port"
export JOBKEEPER_SPARK_URL="http://127.0.0.1:$spark_rest_port"
export JOBKEEPER_SPARK_MASTER="spark://127.0.0.1:$spark_master_port"
export JOBKEEPER_SPARK_UI="http://127.0.0.1:$spark_ui_port"
JOBKEEPER_SPARK_JARS="$(scripts/spark.sh jars)"
export JOBKEEPER_SPARK_JARS

# tests/ha.rs (three daemons, one leader) uses this server, the 2.3.0 cluster above, and a
# PostgreSQL server of its own for the restarts it makes (scripts/postgres.sh again); it needs
# root for cgroups, unshare and runuser.
log "PostgreSQL for the store's tests on Postgres (scripts/postgres.sh)"
JOBKEEPER_TEST_POSTGRES_URL="$(scripts/postgres.sh start "$pg_dir")"
export JOBKEEPER_TEST_POSTGRES_URL

log "cargo test"
out=$(mktemp)
trap 'rm -f "$out"; stop_clusters' EXIT
status=0
# Only this run's screenshots are kept.
rm -rf target/screenshots
# `kerberos`: GSSAPI for YARN's SPNEGO (tests/yarn.rs and tests/yarn_kerberos.rs use the 1.20.3
# cluster above; tests/support/ has the stand-in ResourceManager and `flink` CLI).
cargo test --all-targets --locked --features kerberos --no-fail-fast 2>&1 | tee "$out" || status=$?
# tests/status_page.rs leaves screenshots of the status page at 800 jobs in target/screenshots/;
# they are copied to the artifacts folder (JOBKEEPER_ARTIFACTS, default target/artifacts), which
# CI keeps.
artifacts="${JOBKEEPER_ARTIFACTS:-target/artifacts}"
rm -rf "$artifacts/screenshots"
mkdir -p "$artifacts/screenshots"
artifacts="$(cd "$artifacts" && pwd)"
if compgen -G 'target/screenshots/*.png' >/dev/null; then
  cp target/screenshots/*.png "$artifacts/screenshots/"
  log "status page screenshots kept in $artifacts/screenshots/: $(cd "$artifacts/screenshots" && ls -- *.png | tr '\n' ' ')"
else
  log "no status page screenshots in target/screenshots/ (tests/status_page.rs did not take them); $artifacts/screenshots/ is empty"
fi

log "fuzzing: each target of fuzz/ for 15 s (scripts/fuzz.sh)"
fuzz_status=0
scripts/fuzz.sh 15 2>&1 | tee -a "$out" || fuzz_status=$?
[ "$status" -ne 0 ] || status=$fuzz_status

# One closing line for the whole run, summed over every test binary (a fuzz target counts as one).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /^fuzz: [0-9]+ passed, [0-9]+ failed$/ { p += $2; f += $4 }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "$out"
exit "$status"
