#!/usr/bin/env bash
# cgroup v2 smoke test of buildcell: boots Debian's kernel under qemu with a
# pure cgroup v2 hierarchy (cgroup_no_v1=all) from an initramfs holding
# buildcell, its shared libraries, static busybox and generated bundles, runs
# smoke.sh there and judges the PASS/FAIL lines it prints on the serial
# console. Needed because CI hosts are cgroup v1 "hybrid": the v2 code paths
# cannot run there for real.
#
#   sudo integration/qemu-v2/run.sh            # ci/build-release.sh, then tests target/release/buildcell
#   sudo integration/qemu-v2/run.sh PATH/TO/buildcell
#
# Environment: QEMU_TIMEOUT (seconds, default 300),
# QEMU_CACHE (kernel cache, default /var/cache/buildcell-qemu), VERBOSE=1
# (print the whole console log, not only the check lines), KEEP=1 (keep the
# work directory). Exit status: 0 when every check passed, 1 when a check
# failed, SMOKE-DONE never appeared or qemu timed out, 2 for setup errors.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
say() { printf '==> qemu-v2: %s\n' "$*"; }
die() { printf 'qemu-v2: %s\n' "$*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "run as root (it installs qemu-system-x86 and builds device nodes): sudo $0"
start=$(date +%s)

cache=${QEMU_CACHE:-/var/cache/buildcell-qemu}
timeout_s=${QEMU_TIMEOUT:-300}

# --- host packages (nothing to do when present) ---------------------------
need=(qemu-system-x86 busybox-static jq cpio gzip)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- the kernel: extracted from the .deb, never installed on the host ------
# linux-image-amd64 is the meta package; its dependency names the real image
# (linux-image-6.1.0-NN-amd64 on bookworm). QEMU_KERNEL_PACKAGE pins one.
image_package() {
  if [ -n "${QEMU_KERNEL_PACKAGE:-}" ]; then echo "$QEMU_KERNEL_PACKAGE"; return; fi
  apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}
kpkg=$(image_package)
if [ -z "$kpkg" ]; then # no package lists yet (fresh machine)
  apt-get update -qq
  kpkg=$(image_package)
fi
[ -n "$kpkg" ] || die "cannot find the kernel package behind linux-image-amd64 (apt-cache depends linux-image-amd64); set QEMU_KERNEL_PACKAGE=linux-image-VERSION-amd64"
if [ ! -s "$cache/$kpkg/vmlinuz" ]; then
  mkdir -p "$cache"
  dl=$(mktemp -d "$cache/dl.XXXXXX")
  chmod 0777 "$dl" # apt-get download drops to the _apt user
  say "downloading $kpkg into $cache (once; later runs reuse it)"
  if ! (cd "$dl" && apt-get download -q "$kpkg" >/dev/null 2>&1); then
    # stale package lists: the version they name is gone from the mirror
    apt-get update -qq
    kpkg=$(image_package)
    (cd "$dl" && apt-get download -q "$kpkg" >/dev/null) || { rm -rf "$dl"; die "apt-get download $kpkg failed"; }
  fi
  # Only vmlinuz is kept: everything the test needs is built in (cgroups,
  # namespaces, seccomp, tmpfs, devtmpfs, initramfs, 8250 console), so no
  # module is loaded and the VM needs no disk.
  dpkg-deb --fsys-tarfile "$dl"/"$kpkg"_*.deb | tar -x -C "$dl" ./boot
  rm -rf "$cache/$kpkg"
  mkdir -p "$cache/$kpkg"
  cp "$dl"/boot/vmlinuz-* "$cache/$kpkg/vmlinuz"
  cp "$dl"/boot/config-* "$cache/$kpkg/config"
  rm -rf "$dl"
  # older kernels of earlier runs
  find "$cache" -mindepth 1 -maxdepth 1 -type d -name 'linux-image-*' ! -name "$kpkg" -exec rm -rf {} +
fi
vmlinuz=$cache/$kpkg/vmlinuz

# --- buildcell ------------------------------------------------------------
bc=${1:-$repo/target/release/buildcell}
if [ $# -eq 0 ]; then
  # always: a no-op when the binary is fresh, and never a stale binary tested
  say "ci/build-release.sh"
  "$repo/ci/build-release.sh" --quiet
fi
[ -x "$bc" ] || die "$bc: not an executable"

# --- the initramfs --------------------------------------------------------
work=$(mktemp -d /tmp/buildcell-qemu-v2.XXXXXX)
cleanup() {
  if [ "${KEEP:-0}" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
stage=$work/initramfs
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,dev,proc,sys,run,tmp,etc,var/log,newroot}

# static busybox with its applets, for /init and as the containers' rootfs
bb=/bin/busybox # busybox-static: conflicts with the dynamic busybox, so this is the static one
install_busybox() { # DIR
  mkdir -p "$1"/bin "$1"/sbin "$1"/usr/bin "$1"/usr/sbin
  cp "$bb" "$1/bin/busybox"
  local a
  "$bb" --list-full | while read -r a; do
    [ "$a" = bin/busybox ] || [ -e "$1/$a" ] || ln -s /bin/busybox "$1/$a"
  done
}
install_busybox "$stage"
mknod -m 600 "$stage/dev/console" c 5 1
mknod -m 666 "$stage/dev/null" c 1 3

# buildcell, with its libraries and the loader at the paths ldd names when
# it is linked dynamically (plain cargo build; ci/build-release.sh links it
# static, and ldd then names none)
cp "$bc" "$stage/usr/local/bin/buildcell"
libs=$(ldd "$bc" 2>/dev/null | grep -Eo '/[^ ]+' | sort -u || true)
for lib in $libs; do
  mkdir -p "$stage$(dirname "$lib")"
  cp -L "$lib" "$stage$lib"
done

# the containers' rootfs: busybox only
rootfs=$stage/rootfs
install_busybox "$rootfs"
mkdir -p "$rootfs"/{proc,sys,dev,tmp,etc,root}
echo 'root:x:0:0:root:/root:/bin/sh' > "$rootfs/etc/passwd"
echo 'root:x:0:' > "$rootfs/etc/group"

# bundles: `buildcell spec`, without the user namespace (root in the VM),
# shared read-only rootfs, cgroupsPath /smoke/<name>, then per-check changes
"$bc" spec --bundle "$work" >/dev/null
base=$work/config.json
bundle() { # NAME JQ-FILTER
  mkdir -p "$stage/bundles/$1"
  jq --arg name "$1" '
    .process.terminal = false
    | .root = {path: "/rootfs", readonly: true}
    | .linux.namespaces |= map(select(.type != "user"))
    | del(.linux.uidMappings, .linux.gidMappings)
    | .linux.cgroupsPath = "/smoke/" + $name
    | '"$2" "$base" > "$stage/bundles/$1/config.json"
}
# (1) OOM: dd's 200 MiB buffer is filled by read(2) from /dev/zero
bundle oom '.process.args = ["dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"]
  | .linux.resources = {memory: {limit: 33554432}}'
# (2) pids: fork until the limit refuses, then stay
bundle pids '.process.args = ["sh", "-c", "(while true; do sleep 300 & done) 2>&1 | head -n 1; echo loop-ended; exec sleep 300"]
  | .linux.resources = {pids: {limit: 10}, memory: {limit: 67108864}}'
# (3) cpu: shares 512 -> weight 20, quota/period -> cpu.max, cpuset
bundle cpu '.process.args = ["sleep", "300"]
  | .linux.resources = {cpu: {shares: 512, quota: 50000, period: 100000, cpus: "0"}}'
# (4, 5, 7, 8) pause/resume, update, kill --all, delete: a few processes
bundle multi '.process.args = ["sh", "-c", "sleep 300 & sleep 300 & wait"]'
# (6) devices: deny all, plus /dev/kmsg (c 1:11) that no rule allows
bundle devices '.process.args = ["sh", "-c", "if echo x > /dev/null; then echo NULL-OK; else echo NULL-DENIED; fi; if echo buildcell-qemu-v2-device-write > /dev/kmsg; then echo WRITE-OK; else echo WRITE-DENIED; fi; if mknod /dev/k c 1 11 && echo buildcell-qemu-v2-mknod-write > /dev/k; then echo MKNOD-OK; else echo MKNOD-DENIED; fi"]
  | .process.capabilities |= with_entries(.value += ["CAP_MKNOD"])
  | .linux.devices = [{path: "/dev/kmsg", type: "c", major: 1, minor: 11, fileMode: 420, uid: 0, gid: 0}]
  | .linux.resources = {devices: [{allow: false, access: "rwm"}]}'
# (9) no cgroupsPath: <own cgroup>/<id>, i.e. /sys/fs/cgroup/<id> from the root cgroup
bundle relative '.process.args = ["true"] | del(.linux.cgroupsPath)'

# (10) Landlock on an older ABI (Debian's 6.1: ABI 2, no TCP rules): a
# bundle under build-network (landlock = require, TCP connect 80/443) must
# be refused naming ABI 4; the same under a best-effort copy must run and
# say in its state what was not enforced. A user namespace of its own with
# an unprivileged range (the profiles require one and refuse a map of host
# root; the VM's tmpfs cannot be idmapped on 6.1, so buildcell could not
# add one); busybox stays readable and executable for that range.
bundle landlock '.process.args = ["true"]
  | .linux.namespaces += [{type: "user"}]
  | .linux.uidMappings = [{containerID: 0, hostID: 100000, size: 65536}]
  | .linux.gidMappings = [{containerID: 0, hostID: 100000, size: 65536}]'
# The cgroup checks exercise the OCI contract (devices, CAP_MKNOD, bundles
# without a user namespace): they run under engine-compat, the default of
# this VM's config; the Landlock checks name their profiles.
mkdir -p "$stage/etc/buildcell/profiles"
printf 'default_profile = "engine-compat"\n' > "$stage/etc/buildcell/config.toml"
printf 'extends = "build-network"\n[landlock]\nmode = "best-effort"\n' \
  > "$stage/etc/buildcell/profiles/network-best-effort.toml"
# The cgroup checks: engine-compat without a required user namespace (this
# VM's tmpfs root cannot be idmapped on 6.1; smoke.sh checks the refusal).
printf 'extends = "engine-compat"\n[namespaces]\nnew = ["mount"]\n' \
  > "$stage/etc/buildcell/profiles/smoke-no-userns.toml"

install -m 755 "$here/init" "$stage/init"
install -m 755 "$here/smoke.sh" "$stage/smoke.sh"

initrd=$work/initrd.gz
(cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) > "$initrd"
say "initramfs $(du -h "$initrd" | cut -f1), kernel $kpkg, buildcell $bc"

# --- boot -----------------------------------------------------------------
# Software emulation only: it boots and runs the checks in ~15 s, and nested
# KVM is not dependable (here qemu aborts on an MSR with -cpu max and -cpu host).
accel_args=(-accel tcg -cpu max)
log=$work/console.log
say "booting (${accel_args[*]}, timeout ${timeout_s}s)"
boot_start=$(date +%s)
qemu_rc=0
timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 \
  "${accel_args[@]}" -m 1024 -smp 2 \
  -nographic -no-reboot -net none \
  -kernel "$vmlinuz" -initrd "$initrd" \
  -append "console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init init=/init systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all SMOKE_DEBUG=${VERBOSE:-0}" \
  </dev/null >"$log" 2>&1 || qemu_rc=$?
end=$(date +%s)
# serial console: CRLF line ends, and SeaBIOS's escape sequences before the first line
tr -d '\r' <"$log" | sed -E 's/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1b[c()][0-9A-Za-z]?//g' >"$log.txt"

if [ "${VERBOSE:-0}" = 1 ]; then
  cat "$log.txt"
else
  grep -E '^(PASS|FAIL|GAP|INFO) ' "$log.txt" || true
fi
result=0
if [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
  echo "FAIL qemu timed out after ${timeout_s}s"
  result=1
fi
done_line=$(grep -E '^SMOKE-DONE ' "$log.txt" | tail -n 1 || true)
if [ -z "$done_line" ]; then
  echo "FAIL SMOKE-DONE never appeared (qemu exit $qemu_rc); last console lines:"
  tail -n 30 "$log.txt" | sed 's/^/    /'
  result=1
else
  echo "$done_line"
  echo "$done_line" | grep -q ' failed=0$' || result=1
  grep -q '^FAIL ' "$log.txt" && result=1
fi
say "boot+checks $((end - boot_start))s, total $((end - start))s"
[ "$result" = 0 ] && say "all checks passed" || say "FAILED (KEEP=1 VERBOSE=1 $0 to see everything)"
exit "$result"
