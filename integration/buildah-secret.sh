#!/bin/bash
# integration/buildah-secret.sh RUNTIME: a build secret through buildah and
# buildcell. `buildah bud --secret id=tok,src=FILE` of a RUN step that uses
# the secret on a command line: the step sees the value, and the value is in
# no audit log (the record shows <redacted:tok>), no layer of the image and
# no history entry. As root (the audit logs of rootless engines live under
# the engine's private HOME). Uses the shared recipes' helpers
# (../shared/integration-recipes/lib/common.sh) and prints their
# PASS/FAIL lines and summary; exit 1 on any failure.
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
for d in "${BUILDCELL_RECIPES:-}" "$REPO/../shared/integration-recipes" /work/shared/integration-recipes; do
  if [ -n "$d" ] && [ -f "$d/lib/common.sh" ]; then RECIPES_DIR=$(cd "$d" && pwd); break; fi
done
[ -n "${RECIPES_DIR:-}" ] || { echo "buildah-secret.sh: integration recipes not found" >&2; exit 2; }
# shellcheck source=/dev/null
source "$RECIPES_DIR/lib/common.sh"
need_root
apt_ensure buildah netavark uidmap busybox-static jq
recipe_init buildah-secret "${1:-}"
note_new /run/runc /run/containers /run/containers/networks \
    /var/lib/containers /var/lib/containers/cache /var/lib/containers/cache/blob-info-cache-v1.boltdb
BC=$RT_REAL
LOGDIR=${BUILDCELL_AUDIT_DIR:-/var/log/buildcell}

make_rootfs_tar "$WORK/rootfs.tar"
CTX=$WORK/context
mkdir -p "$CTX" "$WORK/root/storage" "$WORK/root/run" "$WORK/root/networks" "$WORK/root/tmp"
SECRET="bc-secret-$RANDOM$RANDOM-value"
printf '%s\n' "$SECRET" >"$WORK/tok"
chmod 600 "$WORK/tok"
# /bin/echo (not the shell's builtin): the value is on an exec'd command line.
cat >"$CTX/Containerfile" <<'CF'
FROM localhost/busybox:lab
RUN --mount=type=secret,id=tok /bin/echo "used $(cat /run/secrets/tok)" > /dev/null && echo secret-step-done
RUN echo after > /after
CF
printf '[storage]\ndriver = "overlay"\ngraphroot = "%s/storage"\nrunroot = "%s/run"\n' \
  "$WORK/root" "$WORK/root" >"$WORK/root/storage.conf"
printf '[network]\nnetwork_backend = "netavark"\nnetwork_config_dir = "%s/networks"\n' \
  "$WORK/root" >"$WORK/root/containers.conf"
B=(env CONTAINERS_STORAGE_CONF="$WORK/root/storage.conf" CONTAINERS_CONF="$WORK/root/containers.conf"
   TMPDIR="$WORK/root/tmp" buildah)
on_exit '"${B[@]}" rm -a; "${B[@]}" rmi -a -f'

section "buildah bud --secret with $RT_NAME"
_mkbase() {
  local c; c=$("${B[@]}" from scratch) &&
  "${B[@]}" add "$c" "$WORK/rootfs.tar" / &&
  "${B[@]}" config --cmd /bin/sh --env PATH=/usr/sbin:/usr/bin:/sbin:/bin "$c" &&
  "${B[@]}" commit -q "$c" localhost/busybox:lab && "${B[@]}" rm "$c"
}
check "base image from the busybox rootfs" "" _mkbase
touch "$WORK/marker"
sleep 0.01
check "bud --secret id=tok (the RUN step uses it)" "secret-step-done" \
  "${B[@]}" bud --runtime "$RT" --isolation oci --network none --secret "id=tok,src=$WORK/tok" \
  -t localhost/secret:lab -f "$CTX/Containerfile" "$CTX"

_logs() { find "$LOGDIR" -maxdepth 1 -name '*.log' -newer "$WORK/marker" | sort; }
_redacted() {
  local l found=0
  for l in $(_logs); do
    "$BC" audit verify "$l" >/dev/null || { echo "does not verify: $l"; return 1; }
    grep -qF '"used <redacted:tok>"' "$l" && found=1
  done
  [ "$found" = 1 ] && echo redacted-record-found
}
check "audit: the step's record shows <redacted:tok>, every log verifies" "redacted-record-found" _redacted
_absent() {  # LABEL FILES...: the value must not be in them
  local what=$1; shift
  if grep -rqaF -- "$SECRET" "$@"; then echo "the secret's value is in $what"; return 1; fi
  echo "absent from $what"
}
check "audit: the value is in no log" "absent" bash -c "$(declare -f _absent _logs); LOGDIR=$LOGDIR WORK=$WORK SECRET=$SECRET; _absent 'the audit logs' \$(_logs) /dev/null"
_image() {
  "${B[@]}" push --disable-compression -q localhost/secret:lab "dir:$WORK/image" >/dev/null || return 1
  _absent "the image's layers and config" "$WORK/image"
}
check "image: the value is in no layer" "absent" _image
_history() {
  # The inspect output holds the OCI and Docker configs, with History.
  "${B[@]}" inspect localhost/secret:lab >"$WORK/inspect.json" || return 1
  grep -q '"History"' "$WORK/inspect.json" || { echo "no history in inspect"; return 1; }
  grep -qF 'mount=type=secret' "$WORK/inspect.json" || { echo "the RUN step is not in the history"; return 1; }
  _absent "the image's history" "$WORK/inspect.json"
}
check "history: the value is in no entry" "absent" _history
section_end "buildah bud --secret"
summary
