#!/usr/bin/env bash
# Every benchmark of buildcell against runc and crun, side by side in one
# run; writes bench/RESULTS.md (the exact commands, the tables, the ratios
# against the targets of issue 7) and bench/lifecycle.png.
#
#   sudo bench/run.sh            # the default sizes (about 10 minutes here, plus any wait for the engine lock, $BUILDCELL_ENGINE_LOCK or /run/lock/buildcell-engines.lock)
#   sudo bench/run.sh --quick    # smaller rounds (about 5 minutes), same tables
#   sudo bench/run.sh --full     # the load part at full scale (50 steps at once,
#                                # 2,000 create/start/delete cycles by 50 workers)
#   sudo bench/run.sh --smoke    # the short version the test command runs (about
#                                # 1 minute): parts 1-3 with tiny rounds, no build
#                                # or load part (tests/load.rs and the buildah
#                                # recipe cover those), results into $OUT only
#
# Environment: BUILDCELL (default target/release/buildcell, built if missing),
# OUT (keep the raw outputs there; default a new /var/tmp/buildcell-bench-XXXXXX),
# RESULTS (default bench/RESULTS.md), PLOT (default bench/lifecycle.png).
# --report-only with OUT of an earlier run: measure nothing, only write
# RESULTS.md and the plot again from its outputs (after editing bench/NOTES.md).
# The parts: lifecycle.py (1; again with 0.3 s idle before each run, but not
# in --smoke), phases.py (where the lifecycle time goes),
# exec_oci.py (2), exec_ladder.py (the exec audit's cost, part by part), rss.py (3), build.py (4, buildah under the engine lock),
# load.py (the load part). Each prints its own table; see each file's header.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
quick=0 full=0 smoke=0 report_only=0
for arg in "$@"; do
  case $arg in
    --quick) quick=1 ;;
    --full) full=1 ;;
    --smoke) smoke=1 ;;
    --report-only) report_only=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/run.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "bench/run.sh: run as root (sudo bench/run.sh)" >&2; exit 2; }

# What the parts need, installed only when missing.
need=()
for pair in hyperfine:hyperfine /usr/bin/time:time busybox:busybox-static runc:runc crun:crun \
            strace:strace buildah:buildah runuser:util-linux flock:util-linux; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
# apt's python: python3-matplotlib is installed for it, not for a pyenv python3 on PATH
PY=${PYTHON:-/usr/bin/python3}
# (for the plot; --smoke draws none)
[ $smoke = 1 ] || "$PY" -c 'import matplotlib' 2>/dev/null || need+=(python3-matplotlib)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> apt-get install ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2
fi

BC=${BUILDCELL:-$REPO/target/release/buildcell}
if [ ! -x "$BC" ]; then
  echo "==> ci/build-release.sh" >&2
  "$REPO/ci/build-release.sh" --quiet
fi
OUT=${OUT:-$(mktemp -d /var/tmp/buildcell-bench-XXXXXX)}
if [ $smoke = 1 ]; then
  # A check that the benchmarks still run and what they say today, not the
  # published record: bench/RESULTS.md is only written by a full or quick run.
  RESULTS=${RESULTS:-$OUT/RESULTS.md}
  PLOT=${PLOT:-$OUT/lifecycle.png}
else
  RESULTS=${RESULTS:-$HERE/RESULTS.md}
  PLOT=${PLOT:-$HERE/lifecycle.png}
fi
mkdir -p "$OUT"

if [ $smoke = 1 ]; then
  LC="--rounds 1 --runs 5"; EX="--rounds 1 --runs 1 --execs 300"; RS="--reps 1 --execs 300"; PHS="--reps 3"; BD=""
  # the debug build cargo test made: a check that the ladder runs, no numbers to keep
  XL="--rounds 1 --runs 1 --execs 300 --pinned-only --example $REPO/target/debug/examples/exec_ladder"
elif [ $quick = 1 ]; then
  LC="--rounds 3 --runs 10"; EX="--rounds 2 --runs 1"; RS="--reps 3"; PHS="--reps 10"; BD="--rounds 1"
  XL="--rounds 3 --runs 2"
  LI="--rounds 2 --runs 5"
else
  LC="--rounds 10 --runs 20"; EX="--rounds 3 --runs 2"; RS="--reps 5"; PHS="--reps 30"; BD="--rounds 3"
  XL="--rounds 5 --runs 2"
  LI="--rounds 3 --runs 10"
fi
LD=""; [ $full = 1 ] && LD="--full"

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
t_start=$(date -u +%FT%TZ)
cmds=()
parts_ok=0 parts_failed=0
part() {  # NAME COMMAND...: run one part, its stdout to $OUT/NAME.md
  local name=$1; shift
  echo "==> $name: $*" >&2
  cmds+=("$*")
  local t0=$SECONDS
  if "$@" >"$OUT/$name.md" 2>"$OUT/$name.err"; then parts_ok=$((parts_ok + 1)); else
    parts_failed=$((parts_failed + 1))
    echo "    $name FAILED (exit $?): see $OUT/$name.err" >&2
    { echo; echo "**$name failed**: \`$*\` exited non-zero; last lines of its stderr:"; echo '```'
      tail -5 "$OUT/$name.err"; echo '```'; } >>"$OUT/$name.md"
  fi
  echo "    $name: $((SECONDS - t0)) s" >&2
}
B="--buildcell $BC"
if [ $report_only = 1 ]; then
  [ -f "$OUT/cmds" ] || { echo "bench/run.sh: --report-only needs OUT of an earlier run" >&2; exit 2; }
  mapfile -t cmds <"$OUT/cmds"; read -r t_start load_before load_after quick full <"$OUT/meta"
else
part lifecycle "$PY" "$HERE/lifecycle.py" $LC --buildcell "$BC" --json "$OUT/lifecycle.json"
if [ $smoke = 0 ]; then
  # Build steps come seconds apart: the same lifecycle with the host idle
  # before each run (bench/NOTES.md, "Lifecycle").
  part lifecycle-idle "$PY" "$HERE/lifecycle.py" $LI --pause 0.3 --buildcell "$BC" --json "$OUT/lifecycle-idle.json"
fi
part phases "$PY" "$HERE/phases.py" $PHS $B
part exec "$PY" "$HERE/exec_oci.py" $EX $B --json "$OUT/exec.json"
part ladder "$PY" "$HERE/exec_ladder.py" $XL
part rss "$PY" "$HERE/rss.py" $RS $B --json "$OUT/rss.json"
if [ $smoke = 0 ]; then
  part build "$PY" "$HERE/build.py" $BD $B --json "$OUT/build.json"
  part load "$PY" "$HERE/load.py" $LD $B --json "$OUT/load.json"
fi
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
printf '%s\n' "${cmds[@]}" >"$OUT/cmds"
echo "$t_start ${load_before// /,} ${load_after// /,} $quick $full" >"$OUT/meta"
fi
if [ $smoke = 0 ] && [ -s "$OUT/lifecycle.json" ]; then "$PY" "$HERE/plot.py" "$OUT/lifecycle.json" "$PLOT" >&2; fi

# The targets of issue 7, judged from the JSON of this run.
"$PY" - "$OUT" >"$OUT/verdicts.md" <<'EOF'
import json, os, sys
out = sys.argv[1]
def load(n):
    p = os.path.join(out, n)
    return json.load(open(p)) if os.path.exists(p) and os.path.getsize(p) else None
print("| target | measured | met |\n|---|---|---|")
for name, how in (("lifecycle.json", ""), ("lifecycle-idle.json", ", 0.3 s idle before each")):
    for r in (load(name) or {}).get("results", []):
        if "buildcell" in r["ratio"] and r["ref"] == "crun":
            v = r["ratio"]["buildcell"]
            print(f"| 1. lifecycle ({r['mode']}, {r['form']}{how}) <= 0.7x crun | {v:.2f}x | {'yes' if v <= 0.7 else 'no'} |")
ex = load("exec.json")
for r in (ex or {}).get("results", []):
    v = r["ratio"]["buildcell (audit)"]
    print(f"| 2. {ex['execs']} execs ({r['mode']}) <= 1.15x crun | {v:.2f}x | {'yes' if v <= 1.15 else 'no'} |")
rs = load("rss.json")
for mode, o in (rs or {}).items():
    b, c = o["rss_kib"]["buildcell"], o["rss_kib"]["crun"]
    for s in b:
        print(f"| 3. peak RSS of `{s}` ({mode}) <= crun's | {b[s]:.0f} KiB vs {c[s]:.0f} KiB ({b[s] / c[s]:.2f}x) | {'yes' if b[s] <= c[s] else 'no'} |")
    for k, v in o["supervisor"].items():
        h = v["vmhwm_kib"]
        print(f"| 3. supervisor, {k} ({mode}) < 4 MiB | {h} KiB | {'yes' if h is not None and h < 4096 else 'no'} |")
ld = load("load.json")
if ld:
    bad = ld["failures"] or any(ld["leaks"].values())
    print(f"| load: every lifecycle succeeds, nothing left behind | {len(ld['failures'])} failures, "
          f"leaks: {sum(len(v) for v in ld['leaks'].values())} | {'no' if bad else 'yes'} |")
EOF

{
  echo "# Benchmarks: buildcell against runc and crun"
  echo
  echo "Generated by \`sudo bench/run.sh$( [ $smoke = 1 ] && echo ' --smoke')$( [ $quick = 1 ] && echo ' --quick')$( [ $full = 1 ] && echo ' --full')\` on $t_start"
  echo "(buildcell $(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD -- src Cargo.toml || echo '+changes'),"
  echo "$(runc --version | head -1), $(crun --version | head -1), buildah $(buildah --version | awk '{print $3}'),"
  echo "kernel $(uname -r), $(nproc) CPUs, cgroup v1 hybrid host)."
  echo
  # The 1-minute load average at the start says whether something else ran
  # (the load part itself raises it by the end).
  first_load=${load_before//,/ }
  if awk -v l="${first_load%% *}" 'BEGIN{exit !(l >= 1.5)}'; then
    echo "**Taken under load**: this VM's 2 CPUs were shared with other work"
  else
    echo "**Taken on a quiet host** (the load part raises the load average by its end), on a VM of 2 CPUs"
  fi
  echo "(load average ${load_before//,/ } at the start, ${load_after//,/ } at the end). Absolute times are noisy;"
  echo "the ratios are what to read: every table compares runtimes measured in the same rounds,"
  echo "interleaved, and reports medians. crun 1.8 needs a private mount namespace without"
  echo "/sys/fs/cgroup/unified on this hybrid host: parts 1-3 and the load run every runtime in one"
  echo "such namespace (the same cgroup v1 view for all). buildcell runs with its defaults: the"
  echo "\`build\` profile (seccomp, Landlock, cgroup limits, looks-like-root user namespace for a root"
  echo "bundle), every exec recorded in its audit log by the supervisor; runc and crun with theirs."
  echo "Before peak RSS is measured, every runtime's binary is dropped from the page cache and read"
  echo "back by its own page faults, as an installed binary is (bench/NOTES.md, \"Memory\")."
  echo
  echo "## Targets"
  echo
  cat "$OUT/verdicts.md"
  echo
  echo "## 1. \`/bin/true\` lifecycle"
  echo
  echo "![lifecycle distribution per runtime](lifecycle.png)"
  cat "$OUT/lifecycle.md"
  echo
  echo "### The same with the host idle 0.3 s before each run"
  echo
  echo "Build steps come seconds apart, not back to back (bench/NOTES.md, \"Lifecycle\")."
  cat "$OUT/lifecycle-idle.md" 2>/dev/null || echo "(not run by --smoke)"
  echo
  echo "### Where the lifecycle time goes"
  cat "$OUT/phases.md"
  echo
  echo "## 2. Exec-heavy step"
  cat "$OUT/exec.md"
  echo
  echo "### Where the exec cost goes, rung by rung (examples/exec_ladder.rs: a pid namespace, no other isolation)"
  cat "$OUT/ladder.md"
  echo
  echo "## 3. Peak RSS"
  cat "$OUT/rss.md"
  echo
  echo "## 4. A real build with buildah"
  cat "$OUT/build.md" 2>/dev/null || echo "(not run by --smoke)"
  echo
  echo "## Load"
  cat "$OUT/load.md" 2>/dev/null || echo "(not run by --smoke)"
  echo
  [ -f "$HERE/NOTES.md" ] && cat "$HERE/NOTES.md" && echo
  echo "## Commands of this run"
  echo
  echo '```'
  printf '%s\n' "${cmds[@]}" | sed "s#$REPO/##g; s#$OUT#\$OUT#g"
  echo '```'
} >"$RESULTS"
echo "==> wrote $RESULTS and $PLOT (raw outputs: $OUT)" >&2
if [ $smoke = 1 ]; then
  # The ratios of this run in the test log, next to the targets.
  cat "$OUT/verdicts.md"
fi
# One line the test command counts: a part that failed fails the run.
echo "$parts_ok passed, $parts_failed failed, 0 skipped"
[ $parts_failed = 0 ]
