#!/usr/bin/env bash
# Fuzz every parser of hostile input (fuzz/fuzz_targets/*.rs) for SECONDS
# each: fuzz/run.sh [SECONDS_PER_TARGET] (default $FUZZ_SECONDS, else 60).
# Longer runs: FUZZ_SECONDS=3600 fuzz/run.sh, or fuzz/run.sh 3600.
#
# Installs cargo-fuzz (pinned) if it is missing, builds the targets with
# debug assertions (overflow checks) into fuzz/target, and runs them
# $FUZZ_JOBS at a time (default: the number of cores), each on its seeds
# (fuzz/corpus/TARGET, never written) plus a working corpus kept in
# fuzz/target/corpus/TARGET. Prints each target's executions and whether
# it crashed (the crashing input is kept in fuzz/target/artifacts/TARGET/),
# then `N passed, N failed, 0 skipped`; exits non-zero on any crash.
#
# FUZZ_TARGETS="a b": only these. FUZZ_SANITIZER=address: with ASan (about
# 5x slower; the targets run no unsafe code of buildcell's own).
set -uo pipefail
cd "$(dirname "$0")/.."

secs=${1:-${FUZZ_SECONDS:-60}}
case $secs in '' | *[!0-9]*) echo "fuzz/run.sh: SECONDS must be a number, not $secs" >&2; exit 2 ;; esac
jobs=${FUZZ_JOBS:-$(nproc)}
sanitizer=${FUZZ_SANITIZER:-none}
read -r -a targets <<<"${FUZZ_TARGETS:-config_json profile_toml seccomp_json exec_process update_resources audit_verify}"
cargo_fuzz_version=0.13.2

export HOME="${HOME:-/root}"
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
say() { printf '==> %s\n' "$*"; }

if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $cargo_fuzz_version"; then
  say "installing cargo-fuzz $cargo_fuzz_version"
  if ! cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked --quiet; then
    echo "fuzz/run.sh: cannot install cargo-fuzz $cargo_fuzz_version"
    echo "0 passed, ${#targets[@]} failed, 0 skipped"
    exit 1
  fi
fi
# libfuzzer-sys compiles libFuzzer with the C++ compiler.
if ! command -v c++ >/dev/null && [ "$(id -u)" = 0 ]; then
  say "installing g++ (libFuzzer is C++)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++ >/dev/null
fi
# cargo fuzz's sanitizer flags are nightly ones; the stable toolchain takes
# them with RUSTC_BOOTSTRAP (not needed without a sanitizer).
[ "$sanitizer" = none ] || export RUSTC_BOOTSTRAP=1

bin_dir=fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release
mkdir -p fuzz/target/logs
say "building ${#targets[@]} fuzz targets (sanitizer: $sanitizer, debug assertions on)"
for t in "${targets[@]}"; do
  if ! cargo fuzz build -s "$sanitizer" --debug-assertions "$t" >fuzz/target/logs/build.log 2>&1; then
    cat fuzz/target/logs/build.log >&2
    echo "fuzz/run.sh: cannot build fuzz target $t"
    echo "0 passed, ${#targets[@]} failed, 0 skipped"
    exit 1
  fi
done

# run_one TARGET: fuzz it for $secs seconds; its log in fuzz/target/logs/.
run_one() {
  local t=$1
  mkdir -p "fuzz/target/corpus/$t" "fuzz/target/artifacts/$t"
  "$bin_dir/$t" "fuzz/target/corpus/$t" "fuzz/corpus/$t" \
    -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="fuzz/target/artifacts/$t/" >"fuzz/target/logs/$t.log" 2>&1
  echo $? >"fuzz/target/logs/$t.rc"
}

# The targets' tiny bundle (a rootfs and key files) goes here, not to /tmp.
rm -rf fuzz/target/tmp
mkdir -p fuzz/target/tmp
export TMPDIR=$PWD/fuzz/target/tmp

say "fuzzing each target for $secs s, $jobs at a time"
start=$(date +%s)
running=0
for t in "${targets[@]}"; do
  rm -f "fuzz/target/logs/$t.rc"
  if [ "$running" -ge "$jobs" ]; then
    wait -n
    running=$((running - 1))
  fi
  run_one "$t" &
  running=$((running + 1))
done
wait

passed=0
failed=0
for t in "${targets[@]}"; do
  log=fuzz/target/logs/$t.log
  rc=$(cat "fuzz/target/logs/$t.rc" 2>/dev/null || echo 1)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  # Without the final stats (a crash): libFuzzer's last progress line.
  [ -n "$execs" ] || execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
  if [ "$rc" = 0 ] && [ -z "$artifact" ]; then
    passed=$((passed + 1))
    echo "fuzz $t: ok, ${execs:-?} executions in $secs s (${rate:-?}/s), no crash"
  else
    failed=$((failed + 1))
    echo "fuzz $t: FAILED (exit $rc) after ${execs:-?} executions; input: ${artifact:-none written}; log: $log"
    grep -m1 -A3 -E 'panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|==ERROR' "$log" | sed 's/^/    /'
    # The input itself, to reproduce a crash found on another machine (CI).
    grep -m1 '^Base64: ' "$log" | sed 's/^/    input as /'
  fi
done
echo "fuzzing took $(($(date +%s) - start)) s"
echo "$passed passed, $failed failed, 0 skipped"
[ "$failed" = 0 ]
