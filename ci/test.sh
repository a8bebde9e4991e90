#!/usr/bin/env bash
# The whole test suite of buildcell, from a fresh machine: installs what the
# tests need, creates the unprivileged test user, then runs fmt, clippy, the
# unit tests and the tests of the real binary (as root and as that user).
# Run it as root (it installs packages): `bash ci/test.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "ci/test.sh: run as root (it installs packages and creates the test user bctest): sudo bash ci/test.sh" >&2
  exit 2
fi
export CI="${CI:-true}" CARGO_TERM_COLOR=never
export HOME="${HOME:-/root}"
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"

# Debian packages the tests use: newuidmap/newgidmap (uidmap), runuser and
# unshare (util-linux), script (bsdutils), useradd (passwd), the rootfs of
# the OCI tests (busybox-static), the kernel headers the build reads the
# syscall names from (linux-libc-dev), strace (the audit.sync test counts
# fdatasync calls), iproute2 (ip netns, the joined-netns policy test). The engines come with
# integration/install.sh.
need=(uidmap util-linux bsdutils passwd busybox-static linux-libc-dev strace iproute2)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The unprivileged user of the tests, with a subordinate id range.
user=${BUILDCELL_TEST_USER:-bctest}
if ! id "$user" >/dev/null 2>&1; then
  say "creating test user $user"
  useradd --create-home --shell /bin/sh "$user"
fi
for f in /etc/subuid /etc/subgid; do
  touch "$f"
  if ! grep -q "^$user:" "$f"; then
    say "adding a subordinate range for $user to $f"
    # A range above every range already in the file.
    start=$(awk -F: 'BEGIN{m=200000} {e=$2+$3; if (e>m) m=e} END{print m}' "$f")
    echo "$user:$start:65536" >> "$f"
  fi
done
export BUILDCELL_TEST_USER="$user"

say "cargo fmt --check"
cargo fmt --check
say "cargo clippy --all-targets -- -D warnings"
cargo clippy --quiet --all-targets -- -D warnings
say "cargo doc --no-deps (broken or private intra-doc links are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps
say "cargo test (unit tests, then the real binary as root and as $user)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test 2>&1 | tee "$log" || status=$?
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END{print s+0}')
failed=$(grep -Eo '^test result: .* ([0-9]+) failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END{print s+0}')
if [ "$status" != 0 ] && [ "$failed" = 0 ]; then failed=1; fi

say "integration: podman, buildah, containerd, docker (+BuildKit) against target/release/buildcell"
ci/build-release.sh --quiet
integ_log=$(mktemp)
integ=0
integration/run.sh 2>&1 | tee "$integ_log" || integ=$?
# Every engine check counts in the total.
# One summary line per pass ("buildcell under build: ...", "buildcell: ...").
ipass=$(sed -n 's/^buildcell[a-z -]*: \([0-9]*\) passed, .*/\1/p' "$integ_log" | awk '{s+=$1} END{print s+0}')
ifail=$(sed -n 's/^buildcell[a-z -]*: [0-9]* passed, [0-9]* failed as expected, \([0-9]*\) failed unexpectedly.*/\1/p' "$integ_log" | awk '{s+=$1} END{print s+0}')
# ... and the looks-like-root checks from the host after the root engines.
upass=$(sed -n 's/^looks-like-root: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$integ_log" | tail -1)
ufail=$(sed -n 's/^looks-like-root: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$integ_log" | tail -1)
passed=$((passed + ${ipass:-0} + ${upass:-0}))
failed=$((failed + ${ifail:-0} + ${ufail:-0}))
if [ "$integ" != 0 ]; then
  status=1
  [ "${ifail:-0}" != 0 ] || [ "${ufail:-0}" != 0 ] || failed=$((failed + 1))
fi
rm -f "$integ_log"

# run_script DESCRIPTION SCRIPT ARGS...: a script whose last line is
# "N passed, N failed, N skipped"; its counts join the total.
run_script() {
  local what=$1 out rc=0 sp sf
  shift
  say "$what"
  out=$(mktemp)
  "$@" 2>&1 | tee "$out" || rc=$?
  sp=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed, [0-9]* skipped$/\1/p' "$out" | tail -1)
  sf=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed, [0-9]* skipped$/\2/p' "$out" | tail -1)
  passed=$((passed + ${sp:-0}))
  failed=$((failed + ${sf:-0}))
  if [ "$rc" != 0 ]; then
    status=1
    [ "${sf:-0}" != 0 ] || failed=$((failed + 1))
  fi
  rm -f "$out"
}
# The release binary's function order still names the functions of this
# toolchain's build (ci/build-release.sh; a stale order costs ~1 MiB per call).
run_script "release code layout: ci/symbol-order.txt against the link map (ci/symbol-order.py --check)" \
  python3 ci/symbol-order.py --check target/release/buildcell.map
# buildah keeps its state under /tmp here, which `build` does not let bind:
# the secret check runs as buildcell-engine-compat (as the recipes do).
cp target/release/buildcell target/release/buildcell-engine-compat
run_script "build secret through buildah: in no audit log, layer or history entry (integration/buildah-secret.sh)" \
  integration/buildah-secret.sh target/release/buildcell-engine-compat
run_script "engines under policy: build refuses, each engine shows the violations (integration/policy-engines.sh)" \
  integration/policy-engines.sh target/release/buildcell
# deploy/ as an operator uses it: install.sh (in a private mount namespace,
# so the machine's /etc and /usr/local stay untouched), then podman, buildah,
# containerd (ctr, CRI handlers), dockerd and BuildKit pointed at buildcell
# by their deploy files alone; the profile each container got is checked.
# Its CRI pods on a pod network use Debian's containernetworking-plugins
# (integration/install.sh installs it; the script runs apt-get only if it is
# missing), with a loopback-only network and a bridge of its own (deleted at
# exit, no iptables rule).
run_script "deploy/: install.sh, then every engine through its deploy file (integration/deploy-check.sh)" \
  integration/deploy-check.sh target/release/buildcell
# Every parser of hostile input under cargo-fuzz, 60 s per target (two at a
# time): one passed per target that ran without a crash.
run_script "fuzzing: config.json, profiles, seccomp JSON, exec --process, update, audit logs (fuzz/run.sh 60)" \
  fuzz/run.sh 60

# The benchmarks of bench/ in their short form (parts 1-3: lifecycle,
# exec-heavy step, peak RSS; a few rounds each, side by side with runc and
# crun): they must run; their ratios against issue 7's targets are printed,
# the published tables are bench/RESULTS.md (bench/run.sh without --smoke).
run_script "benchmarks, short: buildcell vs runc and crun (bench/run.sh --smoke)" \
  bench/run.sh --smoke
say "cgroup v2 smoke test: buildcell in a pure-v2 kernel under qemu (integration/qemu-v2/run.sh)"
if bash integration/qemu-v2/run.sh target/release/buildcell; then passed=$((passed + 1)); else status=1; failed=$((failed + 1)); fi
echo "total: $passed passed, $failed failed"
exit "$status"
