#!/usr/bin/env bash
# The files of deploy/, used exactly as an operator uses them: buildcell is
# installed with deploy/install.sh, then each engine is pointed at it by its
# deploy file alone (no --runtime path on the command line unless that file
# names it) and runs a container or a build; the profile that applied is read
# from the container's audit log (first record, `profile`) or its state
# (annotation org.buildcell.policy.profile), and every log must verify with
# the installed key's public half.
#
#   sudo integration/deploy-check.sh /path/to/buildcell
#
# podman (root and rootless) and buildah: CONTAINERS_CONF=deploy/containers/buildcell.conf;
# containerd: a config made of this run's paths + deploy/containerd/buildcell.toml
# appended (ctr, and CRI pods through the handlers of
# deploy/kubernetes/runtimeclass.yaml: hostNetwork, a loopback-only pod
# network, a bridge pod network; containerd's root and state at their
# default paths, bound from the work dir in the private mount namespace, so
# pods bind what they bind on a production host); dockerd: --config-file
# deploy/docker/daemon.json, with the PATH of deploy/docker/buildkit-path.conf
# (BuildKit's runc wrapper). Nothing of the machine changes: the script runs in
# a private mount namespace where /etc, /usr/local and /var/log are overlays
# whose upper layers live in its work directory, so install.sh writes the real
# paths (/usr/local/bin, /etc/buildcell, /var/log/buildcell) that the deploy
# files name, and all of it is gone when the script ends. Daemons get their
# own sockets and roots and are stopped at exit (the shared recipes' helpers).
# Last line: "N passed, N failed, N skipped".
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
DEPLOY=$REPO/deploy
BC_SRC=$(readlink -f "${1:?usage: $0 /path/to/buildcell}")
[ "$(id -u)" = 0 ] || { echo "deploy-check.sh: run as root" >&2; exit 2; }

# Into a private mount namespace first (once): the overlays below must never
# be seen by the host.
if [ "${DEPLOY_CHECK_PRIVATE:-}" != 1 ]; then
  exec unshare --mount --propagation private env DEPLOY_CHECK_PRIVATE=1 "$0" "$@"
fi

for d in "${BUILDCELL_RECIPES:-}" "$REPO/../shared/integration-recipes" /work/shared/integration-recipes; do
  if [ -n "$d" ] && [ -f "$d/lib/common.sh" ]; then RECIPES_DIR=$(cd "$d" && pwd); break; fi
done
[ -n "${RECIPES_DIR:-}" ] || { echo "deploy-check.sh: integration recipes not found" >&2; exit 2; }
export RECORD=0 QUIET_CALLS=1
# the rootless user of ci/test.sh (as integration/run.sh)
export ROOTLESS_USER=${ROOTLESS_USER:-${BUILDCELL_TEST_USER:-bctest}}
# shellcheck source=/dev/null
. "$RECIPES_DIR/lib/common.sh"
need_root
recipe_init deploy-check "$BC_SRC"

# The overlays: lower = the host's directory, upper = ours.
for dir in /etc /usr/local /var/log; do
  o=$WORK/overlay$(echo "$dir" | tr / _)
  mkdir -p "$o/upper" "$o/work"
  mount -t overlay overlay -o "lowerdir=$dir,upperdir=$o/upper,workdir=$o/work" "$dir" ||
    die "cannot mount an overlay on $dir"
done
# The audit log directory is this run's own, empty: through the overlay the
# host's /var/log/buildcell would show, with the logs other buildcell runs on
# the machine write into it meanwhile, and "the logs newer than a mark" would
# count theirs.
mkdir -p -m 700 "$WORK/log-buildcell" /var/log/buildcell
mount --bind "$WORK/log-buildcell" /var/log/buildcell || die "cannot bind a directory on /var/log/buildcell"

ID=$$
BC=/usr/local/bin/buildcell
PUB=/etc/buildcell/audit.key.pub
LOGDIR=/var/log/buildcell
# Engine state where the build profile lets engines bind their files from
# (mounts.bind_read_write): a directory of this run under each.
PSTORE=/var/lib/containers/buildcell-deploy-$ID PRUN=/run/containers/buildcell-deploy-$ID
DROOT=/var/lib/docker/buildcell-deploy-$ID
note_new /var/lib/docker /run/containerd /run/containerd/s /run/containerd/fifo /run/containerd/runc \
  /run/containerd/runc/k8s.io /opt/containerd /opt/containerd/bin /opt/containerd/lib \
  /run/docker /run/docker/plugins /run/containers /var/lib/containers/tmp
on_exit "umount_under $PSTORE; umount_under $PRUN; umount_under $DROOT; rm -rf $PSTORE $PRUN $DROOT"

# log_of ID: the audit log of container ID (its newest).
log_of() { ls -t "$LOGDIR/$1"-*.log 2>/dev/null | head -1; }
# check_logs NAME PROFILE WHY COUNT LOG...: COUNT logs (any number >= 1 if
# COUNT is "+"), each verifies with the installed key's public half and its
# first record names PROFILE, selected by WHY (its annotation
# org.buildcell.policy.selected-by: "called as buildcell-NAME" or
# "default_profile of /etc/buildcell/config.toml").
check_logs() {
  local name=$1 want=$2 why=$3 n=$4 l got out bad=""; shift 4
  if [ $# -eq 0 ] || { [ "$n" != + ] && [ $# != "$n" ]; }; then
    check "$name" "$n audit logs" sh -c "echo 'found $# audit logs, wanted $n'; exit 1"; return
  fi
  for l in "$@"; do
    got=$(head -1 "$l" | jq -r '"\(.profile)|\(.annotations["org.buildcell.policy.selected-by"])"')
    [ "$got" = "$want|$why" ] || bad="$bad $(basename "$l"): $got;"
    out=$($BC audit verify --key "$PUB" "$l" 2>&1) || bad="$bad $out;"
  done
  check "$name" "$# logs: profile $want ($why), verified" \
    sh -c "[ -z \"\$1\" ] && echo '$# logs: profile $want ($why), verified' || { echo \"at fault:\$1\"; exit 1; }" _ "$bad"
}
CONF="default_profile of /etc/buildcell/config.toml"

section "install: deploy/install.sh into /usr/local and /etc/buildcell"
check "install.sh installs binary, links, wrapper, profiles, key" "ok " "$DEPLOY/install.sh" --bin "$BC_SRC"
_installed() {
  local f missing=""
  for f in $BC /usr/local/lib/buildcell/buildkit/runc /etc/buildcell/config.toml /etc/buildcell/audit.key $PUB \
           /etc/buildcell/seccomp/default.json; do [ -e "$f" ] || missing="$missing $f"; done
  for f in "$DEPLOY"/cni/*.conflist; do
    cmp -s "$f" "/etc/buildcell/cni/$(basename "$f")" || missing="$missing cni/$(basename "$f")"
  done
  for p in "$REPO"/profiles/*.toml; do
    p=$(basename "$p" .toml)
    [ "$(readlink "/usr/local/bin/buildcell-$p")" = buildcell ] || missing="$missing buildcell-$p"
    cmp -s "$REPO/profiles/$p.toml" "/etc/buildcell/profiles/$p.toml" || missing="$missing profiles/$p.toml"
  done
  [ "$(stat -c '%U %a' $BC)" = "root 755" ] || missing="$missing (binary owner/mode $(stat -c '%U %a' $BC))"
  [ "$(stat -c '%a' /etc/buildcell/audit.key)" = 600 ] || missing="$missing (audit.key mode)"
  [ -z "$missing" ] && echo "all in place" || { echo "missing:$missing"; return 1; }
}
check "  ...every file in place, binary root 0755, key 0600" "all in place" _installed
_idempotent() {
  local out; out=$("$DEPLOY/install.sh" --bin "$BC_SRC") || return 1
  printf '%s\n' "$out"
  ! grep -Ev '^(unchanged|kept|ok) ' <<<"$out" >/dev/null && echo "nothing changed"
}
check "  ...a second run changes nothing (idempotent)" "nothing changed" _idempotent
check "  ...profiles load from /etc/buildcell/profiles" "strict           /etc/buildcell/profiles/strict.toml" $BC policy list
check "  ...the default comes from /etc/buildcell/config.toml" "profile build (default_profile of /etc/buildcell/config.toml)" \
  $BC step -v -- true
# Every shipped profile has its name in each deploy file.
_every_profile() {
  local p miss=""
  for p in "$REPO"/profiles/*.toml; do
    p=$(basename "$p" .toml)
    grep -q "runtimes.buildcell-$p.options\]" "$DEPLOY/containerd/buildcell.toml" || miss="$miss containerd:$p"
    grep -q "\"/usr/local/bin/buildcell-$p\"" "$DEPLOY/containerd/buildcell.toml" || miss="$miss containerd-binary:$p"
    [ "$p" = engine-compat ] && continue   # never for production: no RuntimeClass, no engine entry
    grep -q "^handler: buildcell-$p$" "$DEPLOY/kubernetes/runtimeclass.yaml" || miss="$miss runtimeclass:$p"
    grep -q "^buildcell-$p = \[\"/usr/local/bin/buildcell-$p\"\]" "$DEPLOY/containers/buildcell.conf" || miss="$miss containers.conf:$p"
    jq -e --arg p "buildcell-$p" '.runtimes[$p].path == "/usr/local/bin/\($p)"' "$DEPLOY/docker/daemon.json" >/dev/null || miss="$miss daemon.json:$p"
  done
  [ -z "$miss" ] && echo "every profile in every file" || { echo "missing:$miss"; return 1; }
}
check "deploy files: one entry per shipped profile" "every profile in every file" _every_profile
section_end install

section "buildcell step: the installed key signs the log"
mark=$WORK/mark-step; touch "$mark"; sleep 0.01
check "step runs under the default profile" "deploy-step-ok" $BC step -- sh -c 'echo deploy-step-ok'
mapfile -t L < <(find $LOGDIR -maxdepth 1 -name '*.log' -newer "$mark")
check_logs "  ...its log: profile build, verifies with audit.key.pub" build "$CONF" 1 "${L[@]}"
check "  ...and is signed (key_id of the installed key)" "checkpoint" sh -c "grep -h '\"type\":\"checkpoint\"' ${L[*]:-/dev/null} | head -1"
section_end step

make_rootfs_tar "$WORK/rootfs.tar"
make_oci_archive "$WORK/rootfs.tar" "$WORK/image.tar" localhost/deploy:lab '["/bin/sh"]'
make_oci_archive "$WORK/rootfs.tar" "$WORK/pause.tar" localhost/pause:lab '["sleep","2147483647"]'
IMG=localhost/deploy:lab
ULIMITS=()
for u in $(rlimit_defaults); do ULIMITS+=(--ulimit "$u"); done
# strict: no capability at all, nproc at most 4096 (profiles/strict.toml)
STRICT=(--cap-drop all --ulimit nproc=4096:4096)
CAPS=(CAP_AUDIT_WRITE CAP_CHOWN CAP_DAC_OVERRIDE CAP_FOWNER CAP_FSETID CAP_KILL CAP_MKNOD
      CAP_NET_BIND_SERVICE CAP_NET_RAW CAP_SETFCAP CAP_SETGID CAP_SETPCAP CAP_SETUID CAP_SYS_CHROOT)

section "podman (root): CONTAINERS_CONF=deploy/containers/buildcell.conf"
export CONTAINERS_CONF=$DEPLOY/containers/buildcell.conf
P=(podman --root "$PSTORE" --runroot "$PRUN" --storage-driver overlay --events-backend none)
on_exit "CONTAINERS_CONF=$CONTAINERS_CONF ${P[*]} rm -af -t 0"
"${P[@]}" load -q -i "$WORK/image.tar" >/dev/null
check "podman info: the default runtime is buildcell" "buildcell $BC" \
  "${P[@]}" info --format '{{.Host.OCIRuntime.Name}} {{.Host.OCIRuntime.Path}}'
check "podman run (no --runtime): root inside" "uid=0(root)" \
  "${P[@]}" run --rm "${ULIMITS[@]}" --network none "$IMG" id
check "podman run -d: state names the profile" '"org.buildcell.policy.profile": "build"' \
  sh -c "${P[*]} run -d --name pd ${ULIMITS[*]} --network none $IMG sleep 60 >/dev/null &&
         $BC state \$(${P[*]} inspect -f '{{.Id}}' pd)"
pid_=$("${P[@]}" inspect -f '{{.Id}}' pd 2>/dev/null || true)
"${P[@]}" rm -f -t 0 pd >/dev/null 2>&1 || true
check_logs "  ...its audit log: profile build, verifies" build "$CONF" 1 $(log_of "$pid_")
check_rc "podman run --network host: build's refusal shown" 126 "profile build refuses this bundle" \
  "${P[@]}" run --rm "${ULIMITS[@]}" --network host "$IMG" true
check_rc "podman --runtime buildcell-strict: read-only root" 1 "Read-only file system" \
  "${P[@]}" --runtime buildcell-strict run --rm "${ULIMITS[@]}" "${STRICT[@]}" --network none "$IMG" touch /x
check "podman --runtime buildcell-strict -d: state names strict" '"org.buildcell.policy.profile": "strict"' \
  sh -c "${P[*]} --runtime buildcell-strict run -d --name ps ${ULIMITS[*]} ${STRICT[*]} --network none $IMG sleep 60 >/dev/null &&
         $BC state \$(${P[*]} inspect -f '{{.Id}}' ps)"
"${P[@]}" rm -f -t 0 ps >/dev/null 2>&1 || true
section_end podman

# Rootless podman reads the same conf (the containers.conf.d drop-in applies
# to every user); buildcell runs as root of podman's user namespace, with
# the user's state and an unsigned log under the user's home (no key).
section "podman (rootless, $ROOTLESS_USER): CONTAINERS_CONF=deploy/containers/buildcell.conf"
ensure_rootless_user
on_exit "as_user CONTAINERS_CONF=$CONTAINERS_CONF podman rm -af -t 0; as_user podman system migrate"
as_user CONTAINERS_CONF="$CONTAINERS_CONF" podman load -q -i "$WORK/image.tar" >/dev/null
RLHOME=$WORK/home-$ROOTLESS_USER
check "podman run (rootless, no --runtime): root inside" "uid=0(root)" \
  as_user CONTAINERS_CONF="$CONTAINERS_CONF" podman run --rm --cidfile "$RLHOME/rl.cid" --network none "$IMG" id
RLLOG=$RLHOME/.local/state/buildcell/audit
_rl_profile() {
  local l; l=$(ls -t "$RLLOG/$(cat "$RLHOME/rl.cid")"-*.log 2>/dev/null | head -1)
  [ -n "$l" ] || { echo "no audit log in $RLLOG"; return 1; }
  head -1 "$l" | jq -r '"\(.profile) (\(.annotations["org.buildcell.policy.selected-by"]))"'
  "$BC" audit verify "$l"
}
check "  ...its audit log (user's home): profile build from /etc/buildcell" "build ($CONF)" _rl_profile
section_end podman-rootless

section "buildah (root): CONTAINERS_CONF=deploy/containers/buildcell.conf"
B=(buildah --root "$PSTORE" --runroot "$PRUN" --storage-driver overlay)
on_exit "CONTAINERS_CONF=$CONTAINERS_CONF ${B[*]} rm -a"
mkdir -p "$WORK/ctx"
printf 'FROM oci-archive:%s\nRUN echo deploy-step-1 > /s1\nRUN cat /s1 && id -u\n' "$WORK/image.tar" >"$WORK/ctx/Containerfile"
mark=$WORK/mark-buildah; touch "$mark"; sleep 0.01
# TMPDIR unset, as on a build host: buildah 1.28 binds each RUN step's
# hosts, resolv.conf, hostname and .containerenv from /var/tmp/buildahNNN,
# which build allows (mounts.bind_read_write "/var/tmp/buildah*").
check "buildah bud (no --runtime, no TMPDIR): the RUN steps run" "deploy-step-1" \
  env -u TMPDIR "${B[@]}" bud --isolation oci --network none -t localhost/deploy-built:lab "$WORK/ctx"
mapfile -t L < <(find $LOGDIR -maxdepth 1 -name 'buildah-*.log' -newer "$mark")
check_logs "  ...one log per RUN step (2): profile build, verify" build "$CONF" 2 "${L[@]}"
section_end buildah
unset CONTAINERS_CONF

section "containerd: its config + deploy/containerd/buildcell.toml"
# Pods on a pod network: containerd's CRI plugin makes the sandbox's network
# namespace with the CNI plugins of Debian's containernetworking-plugins
# (/usr/lib/cni; installed here only when missing, as ci/test.sh's
# integration/install.sh does up front). Two networks, one containerd:
#  - the node's network (the CRI plugin's conf_dir): a bridge of this run
#    (name and /24 from the PID, no gateway address, no masquerade: no
#    iptables rule) with host-local IPAM (its leases in the work dir), then
#    `loopback`: the pod gets eth0. buildcell-build-network and
#    buildcell-engine-compat pods get it;
#  - the loopback-only network of deploy/cni (installed in /etc/buildcell/cni),
#    which deploy/containerd/buildcell.toml gives the buildcell-build and
#    -strict handlers (cni_conf_dir): the pod's netns holds only lo.
#    `loopback` alone is not a network containerd's CRI accepts (it takes the
#    pod's IP from the result's eth0 entry and fails RunPodSandbox without
#    one: "failed to find network info for sandbox"; tried), so the chain is
#    `static` (the IPAM plugin run as the first plugin: it reports
#    127.0.0.1/8 as the pod's address and creates nothing), then `loopback`.
# The check's config adds one handler of its own, buildcell-build-nodenet:
# buildcell-build without cni_conf_dir, so its pods get the node's network,
# as they would if that line were dropped from the deploy file.
# The bridge is deleted at exit (the bridge plugin leaves it), and so are the
# /run/netns/cni-* files of this run should containerd not have removed them.
apt_ensure containernetworking-plugins
C=$WORK/containerd; mkdir -p "$C/cni-node" "$WORK/pods"
SOCK=$C/containerd.sock NS=deploy-$ID
BR=bcdeploy$((ID % 1000000)) SUBNET=10.213.$((ID % 250)).0/24
cat >"$C/cni-node/10-buildcell-deploy-bridge.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "buildcell-deploy-bridge", "plugins": [
  {"type": "bridge", "bridge": "$BR", "isGateway": false, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$SUBNET"}]], "dataDir": "$C/cni-ipam"}},
  {"type": "loopback"}]}
JSON
NETNS_BEFORE=$(ls /run/netns 2>/dev/null | tr '\n' ' ')
# (libcni's result cache: emptied by each pod's teardown)
note_new /run/netns /var/lib/cni /var/lib/cni/results
_cni_cleanup() {
  local n
  ip link del "$BR" 2>/dev/null
  for n in $(ls /run/netns 2>/dev/null); do
    case " $NETNS_BEFORE " in *" $n "*) ;; cni-*) umount "/run/netns/$n"; rm -f "/run/netns/$n" ;; esac
  done
}
on_exit _cni_cleanup
# containerd's root and state are the default paths, as on a production host
# (the profiles name /var/lib/containerd and containerd's CRI sandbox
# directory under /run/containerd): in this mount namespace only, they are
# directories of the work dir bound on those paths, until the section ends.
note_new /var/lib/containerd
mkdir -p "$C/root" "$C/state" /var/lib/containerd /run/containerd
mount --bind "$C/root" /var/lib/containerd && mount --bind "$C/state" /run/containerd ||
  die "cannot bind the work dir on /var/lib/containerd and /run/containerd"
on_exit "umount_under /run/containerd; umount_under /var/lib/containerd"
RESTRICT_OOM=false; cap_sys_resource || RESTRICT_OOM=true
containerd_start() {
  { cat <<TOML
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$C/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:lab"
  restrict_oom_score_adj = $RESTRICT_OOM
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$C/cni-node"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
TOML
    cat "$DEPLOY/containerd/buildcell.toml"
    cat <<TOML

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.buildcell-build-nodenet]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.buildcell-build-nodenet.options]
    BinaryName = "/usr/local/bin/buildcell-build"
    SystemdCgroup = false
TOML
  } >"$C/config.toml"
  containerd --config "$C/config.toml" >>"$C/containerd.log" 2>&1 &
  echo $! >"$C/containerd.pid"
  for _ in $(seq 100); do "${CTR[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done
}
containerd_stop() {
  local p; p=$(cat "$C/containerd.pid" 2>/dev/null) || return 0
  kill "$p" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
  rm -f "$C/containerd.pid"
}
on_exit "containerd_stop; cgroup_kill $NS $NS-cri; runtime_state_purge /run/containerd/runc/$NS; cgroup_rmdir $NS $NS-cri"
CTR=(ctr --address "$SOCK")
_ctr_clean() {  # (only while containerd runs: ctr would wait 10 s per call)
  local ns t
  [ -f "$C/containerd.pid" ] || return 0
  for ns in "$NS" k8s.io; do
    for t in $("${CTR[@]}" -n "$ns" task ls -q); do "${CTR[@]}" -n "$ns" task kill -a -s SIGKILL "$t"; done
    for t in $("${CTR[@]}" -n "$ns" task ls -q); do "${CTR[@]}" -n "$ns" task rm -f "$t"; done
    for t in $("${CTR[@]}" -n "$ns" container ls -q); do "${CTR[@]}" -n "$ns" container rm "$t"; done
  done
}
on_exit _ctr_clean
containerd_start
check "containerd starts with the handlers (CRI plugin ok)" "cri" \
  sh -c "ctr --address $SOCK plugins ls | awk '\$2==\"cri\" && \$4==\"ok\" {print \$2}'"
"${CTR[@]}" -n "$NS" images import "$WORK/image.tar" >/dev/null
"${CTR[@]}" -n k8s.io images import "$WORK/image.tar" >/dev/null
"${CTR[@]}" -n k8s.io images import "$WORK/pause.tar" >/dev/null
# ctr has no handler lookup: the BinaryName of the snippet, as the README says.
check "ctr run --runc-binary /usr/local/bin/buildcell" "ctr-ok" \
  "${CTR[@]}" -n "$NS" run --rm --runc-binary $BC "$IMG" dc1 echo ctr-ok
check_logs "  ...its audit log: profile build (config default), verifies" build "$CONF" 1 $(log_of dc1)
check_rc "ctr run --runc-binary .../buildcell-strict: read-only root" 1 "Read-only file system" \
  "${CTR[@]}" -n "$NS" run --rm --runc-binary /usr/local/bin/buildcell-strict \
  $(printf -- '--cap-drop %s ' "${CAPS[@]}") "$IMG" dc2 touch /x
check_logs "  ...its audit log: profile strict, verifies" strict "called as buildcell-strict" 1 $(log_of dc2)
CRI=(env TMPDIR="$WORK" /usr/bin/python3 "$HERE/deploy-cri.py" --sock "$SOCK" --image "$IMG"
     --logdir "$WORK/pods" --recipes "$RECIPES_DIR/lib" --cgroup-parent "/$NS-cri")
# What the pod's container shows of itself: who it runs as, its network devices.
POD_CMD='id; cat /proc/net/dev'
# _cri_run HANDLER PROFILE NETWORK [OPTION...]: a pod through HANDLER on NETWORK (pod:
# the handler's CNI network, host: hostNetwork), POD_CMD run in its
# container; the container's state names PROFILE. The output is kept in
# $WORK/cri-HANDLER-NETWORK.out for _cri_pod and _cri_logs, the sandbox's
# state in that file's .sandbox.
_cri_run() {
  local h=$1 want=$2 net=$3 out=$WORK/cri-$1-$3.out c="" st line
  shift 3   # the rest: more deploy-cri.py options
  : >"$out"
  coproc CRIP { "${CRI[@]}" --handler "$h" --network "$net" "$@" --exec "$POD_CMD" run 2>&1; }
  while read -r -u "${CRIP[0]}" line; do
    echo "$line" >>"$out"; echo "$line"
    case $line in container*) c=$(awk '{print $2}' <<<"$line"); break ;; esac
  done
  st=$($BC --root /run/containerd/runc/k8s.io state "$c" 2>&1) || true
  $BC --root /run/containerd/runc/k8s.io state "$(awk '/^sandbox /{print $2}' "$out")" >"$out.sandbox" 2>&1 || true
  echo "$st" | grep -E 'org.buildcell.policy.(profile|selected)'
  echo done >&"${CRIP[1]}"; wait "$CRIP_PID" || return 1
  grep -qF "\"org.buildcell.policy.profile\": \"$want\"" <<<"$st"
}
# _cri_pod HANDLER NETWORK: "uid=.. gid=..; devices: lo ..." from POD_CMD's output
_cri_pod() {
  local out=$WORK/cri-$1-$2.out
  [ -s "$out" ] || { echo "no pod output"; return 1; }
  grep -q '^exec rc 0$' "$out" || { cat "$out"; return 1; }
  echo "$(sed -n 's/^exec| \(uid=[^ ]*\) \(gid=[^ ]*\).*/\1 \2/p' "$out");" \
    "devices: $(sed -n 's/^exec| *\([a-z0-9]*\):.*/\1/p' "$out" | tr '\n' ' ' | sed 's/ $//')"
}
# _cri_logs HANDLER NETWORK: the audit logs of the pod's sandbox and container
_cri_logs() { local out=$WORK/cri-$1-$2.out; log_of "$(awk '/^sandbox /{print $2}' "$out")"; log_of "$(awk '/^container /{print $2}' "$out")"; }

# hostNetwork: the node's network and uts namespaces; only engine-compat.
check "CRI pod, handler buildcell-engine-compat (hostNetwork): runs" '"org.buildcell.policy.profile": "engine-compat"' \
  _cri_run buildcell-engine-compat engine-compat host
check "CRI pod, handler buildcell-build (hostNetwork): refused by build" "profile build refuses this bundle" \
  "${CRI[@]}" --handler buildcell-build --network host refused
# RuntimeClass buildcell-build: the handler's loopback-only network.
check "CRI pod, handler buildcell-build (its network: loopback only): runs" '"org.buildcell.policy.profile": "build"' \
  _cri_run buildcell-build build pod
check "  ...in its container: root of its user namespace, only lo" "uid=0(root) gid=0(root); devices: lo" \
  _cri_pod buildcell-build pod
check_logs "  ...sandbox's and container's logs: profile build, verify" build "called as buildcell-build" 2 \
  $(_cri_logs buildcell-build pod)
# strict allows no capability. containerd gives the sandbox's (pause)
# container the default set, which the CRI offers no way to drop: buildcell
# narrows a pod sandbox's capabilities to the profile's (said in its state)
# instead of refusing it. The pod's container drops ALL itself.
check "CRI pod, handler buildcell-strict (loopback only), container dropping ALL: runs" '"org.buildcell.policy.profile": "strict"' \
  _cri_run buildcell-strict strict pod --drop-all-caps
check "  ...in its container: root of its user namespace, only lo" "uid=0(root) gid=0(root); devices: lo" \
  _cri_pod buildcell-strict pod
check "  ...the sandbox's state: its capabilities dropped, not refused" "pod sandbox (pause)" \
  cat "$WORK/cri-buildcell-strict-pod.out.sandbox"
check_logs "  ...sandbox's and container's logs: profile strict, verify" strict "called as buildcell-strict" 2 \
  $(_cri_logs buildcell-strict pod)
# RuntimeClass buildcell-build-network: the node's network, eth0.
check "CRI pod, handler buildcell-build-network (node's network: bridge $BR): runs" '"org.buildcell.policy.profile": "build-network"' \
  _cri_run buildcell-build-network build-network pod
check "  ...in its container: root of its user namespace, lo and eth0" "uid=0(root) gid=0(root); devices: lo eth0" \
  _cri_pod buildcell-build-network pod
check_logs "  ...sandbox's and container's logs: profile build-network, verify" build-network "called as buildcell-build-network" 2 \
  $(_cri_logs buildcell-build-network pod)
# buildcell-build on the node's network: the refusal, with the pod's netns
# path (/var/run/netns/cni-UUID) as NETNS: one violation, eth0, nothing else.
_cri_refused() { "${CRI[@]}" --handler "$1" --network pod refused | sed 's/joined by path [^ ]* with/joined by path NETNS with/'; }
check "CRI pod, buildcell-build without its cni_conf_dir (node's network): refused for eth0 alone" \
  "profile build refuses this bundle (1 violation): linux.namespaces: network namespace is joined by path NETNS with links eth0; profile build allows network = loopback (nothing but lo)" \
  _cri_refused buildcell-build-nodenet
_ctr_clean >/dev/null 2>&1; containerd_stop
_cni_left() {
  local left="" n
  for n in $(ls /run/netns 2>/dev/null); do
    case " $NETNS_BEFORE " in *" $n "*) ;; *) left="$left netns:$n" ;; esac
  done
  ip link show "$BR" >/dev/null 2>&1 && ip -o link show master "$BR" | grep -q . && left="$left veths-on-$BR"
  [ -z "$left" ] && echo "no netns or veth left" || { echo "left:$left"; return 1; }
}
check "  ...containerd stopped: no pod netns or veth left" "no netns or veth left" _cni_left
umount_under /run/containerd; umount_under /var/lib/containerd
section_end containerd

section "dockerd: --config-file deploy/docker/daemon.json, PATH of deploy/docker/buildkit-path.conf"
D=$WORK/docker; mkdir -p "$D"
DPATH=$(sed -n 's/^Environment="PATH=\(.*\)"$/\1/p' "$DEPLOY/docker/buildkit-path.conf")
[ -n "$DPATH" ] || die "no PATH in deploy/docker/buildkit-path.conf"
PATH=$DPATH dockerd --config-file "$DEPLOY/docker/daemon.json" --data-root "$DROOT" --exec-root "$D/exec" \
  --pidfile "$D/dockerd.pid" -H "unix://$D/docker.sock" --iptables=false --ip6tables=false \
  --ip-forward=false --bridge=none --userland-proxy=false >"$D/dockerd.log" 2>&1 &
DPID=$!
on_exit "kill $DPID; for i in \$(seq 100); do kill -0 $DPID 2>/dev/null || break; sleep 0.2; done; umount_under $D; cgroup_rmdir docker"
DK=(/usr/bin/docker -H "unix://$D/docker.sock")
for _ in $(seq 150); do "${DK[@]}" version >/dev/null 2>&1 && break; sleep 0.2; done
check "dockerd: default runtime buildcell (from daemon.json)" "buildcell" "${DK[@]}" info --format '{{.DefaultRuntime}}'
"${DK[@]}" import "$WORK/rootfs.tar" "$IMG" >/dev/null
check "docker run (no --runtime): runs" "docker-ok" \
  "${DK[@]}" run --rm --cidfile "$D/dd1.cid" --network none "$IMG" echo docker-ok
check_logs "  ...its audit log: profile build, verifies" build "$CONF" 1 $(log_of "$(cat "$D/dd1.cid" 2>/dev/null)")
# docker adds two sysctls to every container (ip_unprivileged_port_start,
# ping_group_range) and strict allows none: docker's containers are refused
# under strict, and the refusal shows the entry selected strict.
check_rc "docker run --runtime buildcell-strict: strict applies (refuses docker's sysctls)" 125 "profile strict refuses this bundle" \
  "${DK[@]}" run --rm --runtime buildcell-strict --cap-drop ALL --network none "$IMG" touch /x
mkdir -p "$WORK/bk"
printf 'FROM %s\nRUN echo deploy-bk-1 > /bk1\nRUN cat /bk1 && id -u\n' "$IMG" >"$WORK/bk/Dockerfile"
mark=$WORK/mark-bk; touch "$mark"; sleep 0.01
check "BuildKit build (runc = deploy/buildkit/runc wrapper)" "naming to localhost/deploy-bk:lab" \
  env DOCKER_BUILDKIT=1 "${DK[@]}" build --progress plain --network none -t localhost/deploy-bk:lab "$WORK/bk"
# only BuildKit ran since the mark: one log per RUN step
_bk_logs() { find $LOGDIR -maxdepth 1 -name '*.log' -newer "$mark"; }
mapfile -t L < <(_bk_logs)
check_logs "  ...one log per RUN step (2): build, by the wrapper's name" build "called as buildcell-build" 2 "${L[@]}"
section_end docker

section "uninstall: deploy/install.sh --uninstall"
check "uninstall removes what it installed, keeps key and logs" "kept       /etc/buildcell/audit.key" \
  "$DEPLOY/install.sh" --uninstall
_gone() {
  local left=""
  for f in $BC /usr/local/bin/buildcell-build /usr/local/lib/buildcell /etc/buildcell/profiles /etc/buildcell/seccomp \
           /etc/buildcell/cni; do
    [ -e "$f" ] || [ -L "$f" ] && left="$left $f"
  done
  [ -z "$left" ] && [ -e $PUB ] && echo "removed; key kept" || { echo "left:$left"; return 1; }
}
check "  ...nothing of it left but config, key and logs" "removed; key kept" _gone
section_end uninstall
summary
