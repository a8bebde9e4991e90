#!/bin/bash
# integration/userns-check.sh RECIPE RUNTIME: looks-like-root seen from the
# host, after a root recipe (integration/run.sh calls it): the recipe's
# engine, as root, runs containers once more with the runtime, and the host
# checks that
#   - their processes run as an unprivileged host uid: the first id of the
#     range their added user namespace maps 0 to (never 0, a user namespace
#     other than the host's);
#   - files they write into a volume (a bind of a host directory) are owned
#     as a root engine expects: by host root, and by host 1000 after a
#     chown to 1000;
#   - a setuid-root binary (a copy of the tests' probe, mode 4755, owned by
#     host root) run by uid 1000 gains no host privilege: it becomes the
#     container's root, which on the host is the range's first uid;
#   - (buildah bud, BuildKit) files a RUN step writes land in the image's
#     layer owned by host root / host 1000.
# RECIPE: podman-root | buildah | containerd (ctr and CRI) | docker (and
# BuildKit). Uses the shared recipes' helpers (lib/common.sh) and prints
# their PASS/FAIL lines and summary; exit 1 on any failure.
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
for d in "${BUILDCELL_RECIPES:-}" "$REPO/../shared/integration-recipes" /work/shared/integration-recipes; do
  if [ -n "$d" ] && [ -f "$d/lib/common.sh" ]; then RECIPES_DIR=$(cd "$d" && pwd); break; fi
done
[ -n "${RECIPES_DIR:-}" ] || { echo "userns-check.sh: integration recipes not found" >&2; exit 2; }
recipe=${1:-}; shift || true
case $recipe in
  podman-root|buildah|containerd|docker) ;;
  *) echo "usage: $0 podman-root|buildah|containerd|docker RUNTIME" >&2; exit 2 ;;
esac
RECORD=0
# shellcheck source=/dev/null
source "$RECIPES_DIR/lib/common.sh"
need_root
recipe_init "userns-$recipe" "${1:-}"
# The engine must add nothing of its own and buildcell must use its default.
unset BUILDCELL_ID_POOL

# The probe of the tests (examples/probe.rs): `probe sleep N` sleeps with
# the ids it was started with, so a setuid copy can be looked at.
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
PROBE=""
for p in "$TARGET/release/examples/probe" "$TARGET/debug/examples/probe"; do
  [ -x "$p" ] && { PROBE=$p; break; }
done
if [ -z "$PROBE" ]; then
  export HOME=${HOME:-/root}
  command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
  (cd "$REPO" && cargo build --release --quiet --example probe) >&2 || die "cargo build --example probe failed"
  PROBE=$TARGET/release/examples/probe
fi

# The image: the recipes' busybox rootfs, plus the libraries the probe needs.
make_rootfs "$WORK/rootfs"
for lib in $(ldd "$PROBE" | grep -o '/[^ ]*'); do
  mkdir -p "$WORK/rootfs$(dirname "$lib")"; cp "$lib" "$WORK/rootfs$lib"
done
tar --numeric-owner -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" .
IMG=localhost/busybox-userns:lab
# The volume: a host directory owned by root, with the setuid-root probe.
VOL=$WORK/vol
mkdir -p "$VOL"; chmod 755 "$VOL"
install -m 4755 -o root -g root "$PROBE" "$VOL/probe"
ROOT_SCRIPT='touch /vol/by-root && mkdir /vol/by-1000 && chown 1000:1000 /vol/by-1000 && exec sleep 7301'

# _find ARGV...: the host pid of the process whose argv is exactly ARGV
# (waits up to 20 s).
_find() {
  local i pid
  for i in $(seq 200); do
    pid=$(pgrep -f -x -- "$*" | head -1)
    [ -n "$pid" ] && { echo "$pid"; return 0; }
    sleep 0.1
  done
  return 1
}
# _view PID: "R E S F START COUNT OTHER" (uids, uid_map's first line,
# 1 when in a user namespace other than the host's).
_view() {
  local pid=$1 r e s f start count other=0
  read -r _ r e s f < <(grep '^Uid:' "/proc/$pid/status")
  read -r _ start count < "/proc/$pid/uid_map"
  [ "$(readlink "/proc/$pid/ns/user")" != "$(readlink /proc/self/ns/user)" ] && other=1
  echo "$r $e $s $f $start $count $other"
}
# _root_proc ARGV...: it runs as the range's root: every uid = the range's
# first id, which is not 0, in another user namespace.
_root_proc() {
  local pid r e s f start count other
  pid=$(_find "$@") || { echo "no process '$*' on the host"; return 1; }
  read -r r e s f start count other < <(_view "$pid")
  echo "host pid $pid: uid real=$r effective=$e saved=$s fs=$f; uid_map 0 $start $count"
  [ "$other" = 1 ] && [ "$count" = 65536 ] && [ "$start" != 0 ] || { echo "not in an added user namespace"; return 1; }
  [ "$r" = "$start" ] && [ "$e" = "$start" ] && [ "$s" = "$start" ] && [ "$f" = "$start" ] && echo unprivileged
}
# _suid_proc ARGV...: uid 1000 ran a setuid-root binary: real = range+1000;
# effective = the range's root (the bit honoured) or range+1000 (a nosuid
# volume); never host root.
_suid_proc() {
  local pid r e s f start count other
  pid=$(_find "$@") || { echo "no process '$*' on the host"; return 1; }
  read -r r e s f start count other < <(_view "$pid")
  echo "host pid $pid: uid real=$r effective=$e saved=$s fs=$f; uid_map 0 $start $count"
  [ "$other" = 1 ] && [ "$start" != 0 ] || return 1
  for u in "$r" "$e" "$s" "$f"; do [ "$u" != 0 ] || { echo "host root"; return 1; }; done
  [ "$r" = $((start + 1000)) ] || return 1
  if [ "$e" = "$start" ]; then echo "no host privilege: setuid honoured, euid = container root = host $start"
  elif [ "$e" = "$r" ]; then echo "no host privilege: setuid not honoured (nosuid volume or no_new_privs), euid = host $e"
  else return 1; fi
}
# _owned DIR: what the root container wrote into the volume.
_owned() {
  local a b
  a=$(stat -c %u:%g "$1/by-root" 2>&1); b=$(stat -c %u:%g "$1/by-1000" 2>&1)
  echo "by-root $a, by-1000 $b"
  [ "$a" = 0:0 ] && [ "$b" = 1000:1000 ] && echo owned-as-expected
}
# _layer DIR: what a RUN step wrote into the image, in its layer on the host.
_layer() {
  local a b
  a=$(stat -c %u:%g "$1/step-root" 2>&1); b=$(stat -c %u:%g "$1/step-1000" 2>&1)
  echo "step-root $a, step-1000 $b"
  [ "$a" = 0:0 ] && [ "$b" = 1000:1000 ] && echo owned-as-expected
}
# checkv NAME EXPECTED CMD...: `check`, and on success what CMD saw too
# (the host's view is the point of these checks).
checkv() {
  local name=$1 want=$2 out rc=0; shift 2
  out=$("$@" 2>&1 </dev/null) || rc=$?
  if [ $rc -eq 0 ] && grep -qF -- "$want" <<<"$out"; then
    PASSED=$((PASSED+1)); printf 'PASS %-52s\n' "$name" >&2
    printf '%s\n' "$out" | sed 's/^/       > /' >&2
  else
    FAILED=$((FAILED+1)); printf 'FAIL %-52s (rc=%s, wanted %q)\n' "$name" "$rc" "$want" >&2
    printf '%s\n' "$out" | tail -n 15 | sed 's/^/     | /' >&2
  fi
}
_kill_proc() { local pid; pid=$(_find "$@") && kill -KILL "$pid"; return 0; }
printf 'FROM %s\nRUN touch /step-root && mkdir /step-1000 && chown 1000:1000 /step-1000\n' "$IMG" >"$WORK/Containerfile"

case $recipe in
podman-root)
  mkdir -p "$WORK/podman/storage" "$WORK/podman/run" "$WORK/podman/tmp"
  printf '[storage]\ndriver = "overlay"\ngraphroot = "%s/podman/storage"\nrunroot = "%s/podman/run"\n' "$WORK" "$WORK" >"$WORK/podman/storage.conf"
  # As the recipe: without CAP_SYS_RESOURCE podman's default nofile/nproc
  # (1048576) cannot be set by any runtime.
  printf '[containers]\n%s\n' "$(rlimit_defaults | awk '{printf "default_ulimits = [\"%s\", \"%s\"]", $1, $2}')" >"$WORK/podman/containers.conf"
  printf '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\ntmp_dir = "%s/podman/tmp"\n[network]\nnetwork_backend = "netavark"\nnetwork_config_dir = "%s/podman/networks"\n' \
    "$WORK" "$WORK" >>"$WORK/podman/containers.conf"
  export CONTAINERS_CONF=$WORK/podman/containers.conf CONTAINERS_STORAGE_CONF=$WORK/podman/storage.conf
  P=(podman --runtime "$RT")
  on_exit 'podman rm -a -f -t 0; podman rmi -a -f; cgroup_rmdir libpod_parent'
  section "userns: podman (root) with $RT_NAME, seen from the host"
  check "podman import" "" "${P[@]}" import "$WORK/rootfs.tar" "$IMG"
  check "run -d -v VOL:/vol (writes as root)" "" "${P[@]}" run -d --name u-root --network none -v "$VOL:/vol" "$IMG" sh -c "$ROOT_SCRIPT"
  checkv "userns: container runs as an unprivileged host uid" "unprivileged" _root_proc sleep 7301
  checkv "userns: volume files owned by host root / host 1000" "owned-as-expected" _owned "$VOL"
  # Without a seccomp profile: buildcell installs a profile with
  # no_new_privs set, under which no setuid bit is honoured at all.
  check "run -d -u 1000 -v VOL:/vol:suid /vol/probe (setuid root)" "" "${P[@]}" run -d --name u-suid --network none -u 1000:1000 \
    --security-opt seccomp=unconfined -v "$VOL:/vol:suid" "$IMG" /vol/probe sleep 7302
  checkv "userns: setuid-root binary gains no host privilege" "no host privilege" _suid_proc /vol/probe sleep 7302
  "${P[@]}" rm -f -t 0 u-root u-suid >/dev/null 2>&1 || true
  section_end "userns: podman"
  ;;
buildah)
  mkdir -p "$WORK/b/storage" "$WORK/b/run" "$WORK/b/tmp" "$WORK/b/networks"
  printf '[storage]\ndriver = "overlay"\ngraphroot = "%s/b/storage"\nrunroot = "%s/b/run"\n' "$WORK" "$WORK" >"$WORK/b/storage.conf"
  printf '[network]\nnetwork_backend = "netavark"\nnetwork_config_dir = "%s/b/networks"\n' "$WORK" >"$WORK/b/containers.conf"
  B=(env CONTAINERS_STORAGE_CONF="$WORK/b/storage.conf" CONTAINERS_CONF="$WORK/b/containers.conf" TMPDIR="$WORK/b/tmp" buildah)
  on_exit '"${B[@]}" rm -a; "${B[@]}" rmi -a -f'
  note_new /run/runc /run/containers /run/containers/networks \
    /var/lib/containers /var/lib/containers/cache /var/lib/containers/cache/blob-info-cache-v1.boltdb
  section "userns: buildah (root) with $RT_NAME, seen from the host"
  _mkbase() {
    local c; c=$("${B[@]}" from scratch) && "${B[@]}" add "$c" "$WORK/rootfs.tar" / &&
      "${B[@]}" config --env PATH=/usr/sbin:/usr/bin:/sbin:/bin "$c" && "${B[@]}" commit -q "$c" "$IMG" && "${B[@]}" rm "$c"
  }
  check "base image" "" _mkbase
  C=$("${B[@]}" from --pull=never "$IMG")
  R=("${B[@]}" run --runtime "$RT" --isolation oci --network none)
  "${R[@]}" -v "$VOL:/vol" "$C" -- sh -c "$ROOT_SCRIPT" >"$WORK/run-root.log" 2>&1 &
  checkv "userns: buildah run runs as an unprivileged host uid" "unprivileged" _root_proc sleep 7301
  _kill_proc sleep 7301; wait || true
  checkv "userns: volume files owned by host root / host 1000" "owned-as-expected" _owned "$VOL"
  "${R[@]}" --user 1000:1000 -v "$VOL:/vol" "$C" -- /vol/probe sleep 7302 >"$WORK/run-suid.log" 2>&1 &
  checkv "userns: setuid-root binary gains no host privilege" "no host privilege" _suid_proc /vol/probe sleep 7302
  _kill_proc /vol/probe sleep 7302; wait || true
  check "bud: a RUN step that chowns" "" "${B[@]}" bud --runtime "$RT" --isolation oci --network none -t localhost/userns-built:lab -f "$WORK/Containerfile" "$WORK"
  _bud_layer() {
    local c m; c=$("${B[@]}" from --pull=never localhost/userns-built:lab) && m=$("${B[@]}" mount "$c") || return 1
    _layer "$m"; local rc=$?; "${B[@]}" umount "$c" >/dev/null; "${B[@]}" rm "$c" >/dev/null; return $rc
  }
  checkv "userns: bud RUN step's files owned by host root / host 1000" "owned-as-expected" _bud_layer
  section_end "userns: buildah"
  ;;
containerd)
  note_new /run/containerd /run/containerd/s /run/containerd/fifo /run/containerd/runc
  C=$WORK/containerd
  SOCK=$C/containerd.sock
  NS=userns-$$
  HANDLER=recipe
  mkdir -p "$C/cni" "$WORK/pods"
  cat >"$C/config.toml" <<TOML
version = 2
root = "$C/root"
state = "$C/state"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = "$C/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$C/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:lab"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    conf_dir = "$C/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.$HANDLER]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.$HANDLER.options]
        BinaryName = "$RT"
        Root = "$C/handler-root"
TOML
  containerd --config "$C/config.toml" >"$C/containerd.log" 2>&1 &
  CTRD_PID=$!
  on_exit "kill $CTRD_PID; for i in \$(seq 50); do kill -0 $CTRD_PID 2>/dev/null || break; sleep 0.2; done
    cgroup_kill $NS k8s.io; runtime_state_purge /run/containerd/runc/$NS $C/handler-root/k8s.io; cgroup_rmdir $NS"
  CTR=(ctr --address "$SOCK")
  _rm_tasks() {
    local ns t
    for ns in "$NS" k8s.io; do
      for t in $("${CTR[@]}" -n "$ns" task ls -q); do "${CTR[@]}" -n "$ns" task kill -a -s SIGKILL "$t"; done
      sleep 0.5
      for t in $("${CTR[@]}" -n "$ns" task ls -q); do "${CTR[@]}" -n "$ns" task rm -f "$t"; done
      for t in $("${CTR[@]}" -n "$ns" container ls -q); do "${CTR[@]}" -n "$ns" container rm "$t"; done
    done
  }
  on_exit _rm_tasks
  for i in $(seq 100); do "${CTR[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done
  section "userns: containerd (ctr, CRI) with $RT_NAME, seen from the host"
  check "containerd is up (CRI plugin loaded)" "cri" sh -c "ctr --address $SOCK plugins ls | awk '\$2==\"cri\" && \$4==\"ok\" {print \$2}'"
  make_oci_archive "$WORK/rootfs.tar" "$WORK/img.tar" "$IMG"
  make_oci_archive "$WORK/rootfs.tar" "$WORK/pause.tar" localhost/pause:lab '["sleep","2147483647"]'
  check "ctr image import" "$IMG" "${CTR[@]}" -n "$NS" images import "$WORK/img.tar"
  check "ctr image import into k8s.io" "" sh -c "ctr --address $SOCK -n k8s.io images import $WORK/img.tar && ctr --address $SOCK -n k8s.io images import $WORK/pause.tar"
  M=(--mount "type=bind,src=$VOL,dst=/vol,options=rbind:rw")
  check "ctr run -d --mount VOL (writes as root)" "" "${CTR[@]}" -n "$NS" run -d --runc-binary "$RT" "${M[@]}" "$IMG" u-root sh -c "$ROOT_SCRIPT"
  checkv "userns: ctr container runs as an unprivileged host uid" "unprivileged" _root_proc sleep 7301
  checkv "userns: volume files owned by host root / host 1000" "owned-as-expected" _owned "$VOL"
  # ctr has no --user: busybox su (as root, no password) makes the 1000.
  check "ctr run -d: uid 1000 runs /vol/probe (setuid root)" "" "${CTR[@]}" -n "$NS" run -d --runc-binary "$RT" "${M[@]}" "$IMG" u-suid \
    su -s /bin/sh user -c 'exec /vol/probe sleep 7302'
  checkv "userns: setuid-root binary gains no host privilege" "no host privilege" _suid_proc /vol/probe sleep 7302
  _rm_tasks >/dev/null 2>&1 || true
  _cri() {
    TMPDIR="$WORK" /usr/bin/python3 "$HERE/cri-userns.py" --sock "$SOCK" --handler "$HANDLER" --image "$IMG" \
      --logdir "$WORK/pods" --recipes "$RECIPES_DIR/lib" 2>&1
  }
  _cri_rc=0; _cri_out=$(_cri) || _cri_rc=$?
  { grep -E '^(PASS|FAIL) ' <<<"$_cri_out" || true; } >&2
  _n_pass=$(grep -c '^PASS ' <<<"$_cri_out" || true)
  _n_fail=$(grep -c '^FAIL ' <<<"$_cri_out" || true)
  PASSED=$((PASSED + _n_pass)); FAILED=$((FAILED + _n_fail))
  if [ "$_cri_rc" != 0 ] && ! grep -q '^FAIL ' <<<"$_cri_out"; then
    FAILED=$((FAILED+1)); printf 'FAIL %-52s (rc=%s)\n' "userns: CRI pod" "$_cri_rc" >&2
    printf '%s\n' "$_cri_out" | tail -n 15 | sed 's/^/     | /' >&2
  fi
  section_end "userns: containerd"
  ;;
docker)
  note_new /opt/containerd /opt/containerd/bin /opt/containerd/lib \
    /run/containerd /run/containerd/s /run/containerd/fifo /run/containerd/runc \
    /run/docker /run/docker/plugins /run/runc
  D=$WORK/docker
  mkdir -p "$D" "$WORK/bk-path"
  echo '{}' >"$D/daemon.json"
  # BuildKit runs the first runc on dockerd's PATH: a script that execs the
  # runtime by its own path, so it keeps its name (buildcell-NAME picks the
  # profile; a symlink named runc would not).
  printf '#!/bin/sh\nexec %q "$@"\n' "$RT" >"$WORK/bk-path/runc"
  chmod 755 "$WORK/bk-path/runc"
  DOCKER=/usr/bin/docker
  DK=("$DOCKER" -H "unix://$D/docker.sock")
  PATH="$WORK/bk-path:$PATH" dockerd --config-file "$D/daemon.json" --data-root "$D/data" --exec-root "$D/exec" \
    --pidfile "$D/dockerd.pid" -H "unix://$D/docker.sock" --add-runtime "recipe=$RT" --iptables=false \
    --ip6tables=false --ip-forward=false --bridge=none --userland-proxy=false >>"$D/dockerd.log" 2>&1 &
  DPID=$!
  # BuildKit's containers an interrupted build leaves (runtime state in
  # its default root), as the recipe's bk_purge.
  _bk_purge() {
    local id
    for id in $(ls "$D/data/buildkit/executor" 2>/dev/null); do
      cgroup_kill "docker/buildkit/$id"; "$RT_REAL" delete --force "$id" >/dev/null 2>&1
    done
    return 0
  }
  on_exit "\"\${DK[@]}\" rm -f u-root u-suid; kill $DPID; for i in \$(seq 100); do kill -0 $DPID 2>/dev/null || break; sleep 0.2; done; _bk_purge; umount_under '$D'; cgroup_rmdir docker"
  for i in $(seq 150); do "${DK[@]}" version >/dev/null 2>&1 && break; sleep 0.2; done
  section "userns: dockerd (--runtime, BuildKit) with $RT_NAME, seen from the host"
  check "docker import" "sha256:" "${DK[@]}" import "$WORK/rootfs.tar" "$IMG"
  RUN=("${DK[@]}" run -d --runtime recipe --network none -v "$VOL:/vol")
  check "run -d -v VOL:/vol (writes as root)" "" "${RUN[@]}" --name u-root "$IMG" sh -c "$ROOT_SCRIPT"
  checkv "userns: container runs as an unprivileged host uid" "unprivileged" _root_proc sleep 7301
  checkv "userns: volume files owned by host root / host 1000" "owned-as-expected" _owned "$VOL"
  # Without a seccomp profile: see podman-root above.
  check "run -d -u 1000 /vol/probe (setuid root)" "" "${RUN[@]}" --name u-suid -u 1000:1000 \
    --security-opt seccomp=unconfined "$IMG" /vol/probe sleep 7302
  checkv "userns: setuid-root binary gains no host privilege" "no host privilege" _suid_proc /vol/probe sleep 7302
  "${DK[@]}" rm -f u-root u-suid >/dev/null 2>&1 || true
  printf 'FROM %s\nRUN touch /step-root && mkdir /step-1000 && chown 1000:1000 /step-1000 && sleep 5.7306\n' "$IMG" >"$WORK/Dockerfile"
  DOCKER_BUILDKIT=1 "${DK[@]}" build --progress plain --network none -t localhost/userns-bk:lab "$WORK" \
    >"$WORK/bk.log" 2>&1 &
  BK=$!
  checkv "userns: BuildKit RUN step runs as an unprivileged host uid" "unprivileged" _root_proc sleep 5.7306
  BK_RC=0; wait "$BK" || BK_RC=$?
  _bk_done() { [ "$BK_RC" = 0 ] && echo built || { tail -5 "$WORK/bk.log"; return 1; }; }
  check "BuildKit build (a 6 s RUN step)" "built" _bk_done
  _bk_layer() {
    local up; up=$("${DK[@]}" image inspect -f '{{.GraphDriver.Data.UpperDir}}' localhost/userns-bk:lab) || return 1
    _layer "$up"
  }
  checkv "userns: BuildKit RUN step's files owned by host root / host 1000" "owned-as-expected" _bk_layer
  section_end "userns: docker"
  ;;
esac
summary
