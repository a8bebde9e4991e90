#!/usr/bin/env bash
# Engines under policy: each root engine (podman, buildah, containerd's ctr,
# dockerd) asks buildcell, under its default profile `build`, for what
# `build` never gives (the host's network, --privileged, a bind of
# /etc/shadow); buildcell refuses before anything is created, and the
# engine shows buildcell's violation list to its user. The control: the
# same engine, same flags, with the binary called as buildcell-engine-compat
# (profiles/engine-compat.toml), runs the container.
#
#   sudo integration/policy-engines.sh /path/to/buildcell
#
# Uses the helpers of the shared integration recipes (lib/common.sh: work
# dir, cleanup, image building, check/check_rc, summary), called, not
# copied. Last line: "N passed, N failed, N skipped".
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
for d in "${BUILDCELL_RECIPES:-}" "$HERE/../../shared/integration-recipes" /work/shared/integration-recipes; do
  if [ -n "$d" ] && [ -f "$d/lib/common.sh" ]; then RECIPES_DIR=$(cd "$d" && pwd); break; fi
done
[ -n "${RECIPES_DIR:-}" ] || { echo "policy-engines.sh: integration recipes not found" >&2; exit 2; }
export RECORD=0 QUIET_CALLS=1
# shellcheck source=/dev/null
. "$RECIPES_DIR/lib/common.sh"
need_root
BC=${1:?usage: $0 /path/to/buildcell}
recipe_init policy-engines "$BC"
note_new /run/containerd /run/containerd/s /run/containerd/fifo /run/containerd/runc \
  /opt/containerd /opt/containerd/bin /opt/containerd/lib /run/docker /run/docker/plugins

# Two names for one binary: `buildcell` (profile build) and
# `buildcell-engine-compat`; no config file, so these are the built-ins.
mkdir -p "$WORK/bin"; chmod 755 "$WORK/bin"
cp "$RT_REAL" "$WORK/bin/buildcell"
cp "$RT_REAL" "$WORK/bin/buildcell-engine-compat"
chmod 755 "$WORK/bin"/*
BUILD=$WORK/bin/buildcell COMPAT=$WORK/bin/buildcell-engine-compat
REFUSED="profile build refuses this bundle"

make_rootfs_tar "$WORK/rootfs.tar"
make_oci_archive "$WORK/rootfs.tar" "$WORK/image.tar" localhost/policy:lab '["/bin/sh"]'
IMG=localhost/policy:lab

section "podman (root) under build"
P=(podman --root "$WORK/podman/storage" --runroot "$WORK/podman/run" --cgroup-manager cgroupfs
   --events-backend none --storage-driver overlay)
# podman as root asks for nofile/nproc 1048576, which this process may lack
# the capability to grant (the recipes' containers.conf does the same).
ULIMITS=()
for u in $(rlimit_defaults); do ULIMITS+=(--ulimit "$u"); done
on_exit "${P[*]} rm -af -t 0 >/dev/null 2>&1; umount_under $WORK/podman"
"${P[@]}" load -q -i "$WORK/image.tar" >/dev/null
check_rc "podman run --network host: refused" 126 "$REFUSED" \
  "${P[@]}" --runtime "$BUILD" run --rm --network host "$IMG" true
check_rc "podman run --network host: names the network" 126 "no network namespace, so the host's network would be shared" \
  "${P[@]}" --runtime "$BUILD" run --rm --network host "$IMG" true
check_rc "podman run --privileged: names the capabilities" 126 "CAP_SYS_ADMIN" \
  "${P[@]}" --runtime "$BUILD" run --rm --network none --privileged "$IMG" true
check_rc "podman run -v /etc/shadow: never" 126 "bind of /etc/shadow exposes /etc/shadow" \
  "${P[@]}" --runtime "$BUILD" run --rm --network none -v /etc/shadow:/x:ro "$IMG" true
check "podman run --network host under engine-compat runs" "compat-ok" \
  "${P[@]}" --runtime "$COMPAT" run --rm "${ULIMITS[@]}" --network host "$IMG" echo compat-ok
section_end podman

# build itself runs an engine's default container: podman with its storage
# where podman keeps it (under /var/lib/containers and /run/containers,
# which build allows to bind from), no network, as root: looks-like-root.
section "podman (root) default container under build"
PS=/var/lib/containers/buildcell-policy-$$ PR=/run/containers/buildcell-policy-$$
P2=(podman --root "$PS" --runroot "$PR" --cgroup-manager cgroupfs --events-backend none
    --storage-driver overlay)
on_exit "${P2[*]} rm -af -t 0 >/dev/null 2>&1; umount_under $PS; umount_under $PR; rm -rf $PS $PR"
"${P2[@]}" load -q -i "$WORK/image.tar" >/dev/null
check "podman run --network none under build runs, root inside" "uid=0(root)" \
  "${P2[@]}" --runtime "$BUILD" run --rm "${ULIMITS[@]}" --network none "$IMG" id
check_rc "podman run -v /var/lib/containers (the whole tree): never" 126 \
  "bind of /var/lib/containers exposes /var/lib/containers/storage/libpod" \
  "${P2[@]}" --runtime "$BUILD" run --rm "${ULIMITS[@]}" --network none -v /var/lib/containers:/x "$IMG" true
check "podman run -v NAMED_VOLUME under build runs (volumes stay allowed)" "vol-ok" \
  "${P2[@]}" --runtime "$BUILD" run --rm "${ULIMITS[@]}" --network none -v bcvol:/data "$IMG" \
  sh -c 'echo ok > /data/f && echo vol-$(cat /data/f)'
check "podman run under build: the profile is in the state" "org.buildcell.policy.profile" \
  sh -c "${P2[*]} --runtime $BUILD run -d --name st ${ULIMITS[*]} --network none $IMG sleep 30 >/dev/null &&
         $BUILD state \$(${P2[*]} inspect -f '{{.Id}}' st)"
check "podman run under build: an unprivileged host uid" "unprivileged" \
  sh -c "pid=\$(${P2[*]} inspect -f '{{.State.Pid}}' st); u=\$(awk '/^Uid:/{print \$2}' /proc/\$pid/status);
         [ \"\$u\" -ge 65536 ] && echo unprivileged \$u"
"${P2[@]}" rm -f -t 0 st >/dev/null 2>&1 || true
section_end podman-build

section "buildah (root) under build"
B=(buildah --root "$WORK/buildah/storage" --runroot "$WORK/buildah/run" --storage-driver overlay)
on_exit "${B[*]} rm -a >/dev/null 2>&1; umount_under $WORK/buildah"
mkdir -p "$WORK/ctx"
printf 'FROM oci-archive:%s\nRUN echo step-ran\n' "$WORK/image.tar" >"$WORK/ctx/Containerfile"
check_rc "buildah bud --network host: refused, violation shown" 1 "$REFUSED" \
  "${B[@]}" bud --runtime "$BUILD" --isolation oci --network host -t localhost/p1:lab "$WORK/ctx"
check "buildah bud --network host under engine-compat builds" "step-ran" \
  "${B[@]}" bud --runtime "$COMPAT" --isolation oci --network host -t localhost/p2:lab "$WORK/ctx"
section_end buildah

section "containerd (ctr) under build"
C=$WORK/containerd; mkdir -p "$C"
SOCK=$C/containerd.sock
cat >"$C/config.toml" <<TOML
version = 2
root = "$C/root"
state = "$C/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$C/opt"
TOML
containerd --config "$C/config.toml" >"$C/containerd.log" 2>&1 &
CPID=$!
on_exit "kill $CPID; for i in \$(seq 50); do kill -0 $CPID 2>/dev/null || break; sleep 0.2; done; cgroup_kill policy; cgroup_rmdir policy; runtime_state_purge /run/containerd/runc/policy"
CTR=(ctr --address "$SOCK" -n policy)
for _ in $(seq 100); do "${CTR[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done
"${CTR[@]}" images import "$WORK/image.tar" >/dev/null
check_rc "ctr run --net-host: refused, violation shown" 1 "$REFUSED" \
  "${CTR[@]}" run --rm --runc-binary "$BUILD" --net-host "$IMG" pol1 true
check_rc "ctr run --privileged: names the capabilities" 1 "CAP_SYS_ADMIN" \
  "${CTR[@]}" run --rm --runc-binary "$BUILD" --privileged "$IMG" pol2 true
check "ctr run --net-host under engine-compat runs" "compat-ok" \
  "${CTR[@]}" run --rm --runc-binary "$COMPAT" --net-host "$IMG" pol3 echo compat-ok
section_end containerd

section "dockerd under build"
D=$WORK/docker; mkdir -p "$D"
echo '{}' >"$D/daemon.json"
dockerd --config-file "$D/daemon.json" --data-root "$D/data" --exec-root "$D/exec" \
  --pidfile "$D/dockerd.pid" -H "unix://$D/docker.sock" --iptables=false --ip6tables=false \
  --bridge=none --userland-proxy=false --add-runtime "bcbuild=$BUILD" \
  --add-runtime "bccompat=$COMPAT" >"$D/dockerd.log" 2>&1 &
DPID=$!
on_exit "kill $DPID; for i in \$(seq 100); do kill -0 $DPID 2>/dev/null || break; sleep 0.2; done; umount_under $D"
DK=(docker -H "unix://$D/docker.sock")
for _ in $(seq 150); do "${DK[@]}" version >/dev/null 2>&1 && break; sleep 0.2; done
"${DK[@]}" import "$WORK/rootfs.tar" "$IMG" >/dev/null
check_rc "docker run --network host: refused, violation shown" 125 "$REFUSED" \
  "${DK[@]}" run --rm --runtime bcbuild --network host "$IMG" true
check_rc "docker run --privileged: names the capabilities" 125 "CAP_SYS_ADMIN" \
  "${DK[@]}" run --rm --runtime bcbuild --network none --privileged "$IMG" true
check "docker run --network host under engine-compat runs" "compat-ok" \
  "${DK[@]}" run --rm --runtime bccompat --network host "$IMG" echo compat-ok
section_end docker

summary
