#!/usr/bin/env bash
# Fuzzes jobkeeper's parsers: runs every target of fuzz/ (job files, daemon configs, cron
# expressions, webhook payloads, SQL text) for the given time against the committed corpus, and fails on
# any crash. Works on the stable toolchain: cargo-fuzz with `--sanitizer none` (libFuzzer's
# coverage guidance without a sanitizer, which safe Rust does not need).
# Usage: scripts/fuzz.sh [seconds-per-target]   (default 60)
# New inputs found go to a temporary folder, not to fuzz/corpus/; a crashing input is kept in
# fuzz/artifacts/<target>/ and replayed with `cargo fuzz run -s none <target> <file>`.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
targets=(job_file daemon_config cron webhook sql_split)
cargo_fuzz_version=0.13.2

log() { printf '\n==> %s\n' "$*"; }

# libFuzzer is built from source by the libfuzzer-sys crate: it needs a C++ compiler.
if ! command -v c++ >/dev/null 2>&1; then
  log "installing g++ (libFuzzer is C++)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq g++ </dev/null
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "$cargo_fuzz_version"; then
  log "installing cargo-fuzz $cargo_fuzz_version"
  cargo install --locked --quiet cargo-fuzz --version "$cargo_fuzz_version" </dev/null
fi

log "building the fuzz targets (cargo fuzz build -s none)"
cargo fuzz build -s none

work="$(mktemp -d /tmp/jobkeeper-fuzz.XXXXXX)"
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
for t in "${targets[@]}"; do
  case "$t" in
    cron) max_len=256 ;;
    webhook) max_len=8192 ;;
    *) max_len=16384 ;;
  esac
  mkdir -p "$work/$t" "fuzz/corpus/$t"
  log "$t: ${seconds}s"
  # The first folder receives new inputs; the committed corpus is only read.
  if cargo fuzz run -s none "$t" "$work/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -max_len="$max_len" -print_final_stats=1 \
    >"$work/$t.log" 2>&1 </dev/null; then
    passed=$((passed + 1))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log")
    corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
    echo "$t: ok, ${execs:-?} inputs run (committed corpus: $corpus files)"
  else
    failed=$((failed + 1))
    echo "$t: CRASH"
    grep -v -E '^#[0-9]+' "$work/$t.log" | tail -n 40 || true
  fi
done
echo
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
