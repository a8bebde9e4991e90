#!/usr/bin/env bash
# integration/audit-check.sh RECIPE MARKER BUILDCELL [LOGDIR]
#
# After a recipe ran its engine against buildcell as root: every container
# the engine created left an audit log in LOGDIR (default
# /var/log/buildcell) newer than MARKER; each must verify, and together they
# must hold the commands the recipe's checks ran. Prints PASS/FAIL lines in
# the recipes' format; exit 1 on any failure.
#
# Rootless podman's containers log under the XDG_STATE_HOME that run.sh's
# wrapper gives them (the recipe's own HOME is deleted when it ends).
set -uo pipefail
recipe=$1 marker=$2 bc=$3 logdir=${4:-/var/log/buildcell}
failed=0
pass() { printf 'PASS %-52s %s\n' "$1" "${2:-}"; }
fail() { printf 'FAIL %-52s %s\n' "$1" "${2:-}"; failed=1; }

# What each recipe's containers must have executed (text in an argv).
case $recipe in
  podman-root|podman-rootless) want=("echo exec-ok" "echo hi") ;;  # `podman exec` (audited through the hand-over) and `run`
  buildah) want=("echo step") ;;                     # the RUN steps of `buildah bud`
  containerd) want=("echo exec-ok") ;;               # `ctr task exec`
  docker) want=("echo hi-docker" "echo bk-step") ;;  # `docker run`, and BuildKit's `runc run` per RUN step
  *) want=() ;;
esac

mapfile -t logs < <(find "$logdir" -maxdepth 1 -name '*.log' -newer "$marker" 2>/dev/null | sort)
if [ ${#logs[@]} -eq 0 ]; then
  fail "audit: $recipe left audit logs" "(none in $logdir newer than the recipe's start)"
  exit 1
fi
bad=0
for l in "${logs[@]}"; do
  out=$("$bc" audit verify "$l" 2>&1) || { bad=$((bad+1)); echo "     | $out"; }
done
if [ $bad -eq 0 ]; then
  pass "audit: ${#logs[@]} container logs verify"
else
  fail "audit: every container log verifies" "($bad of ${#logs[@]} do not)"
fi
for w in "${want[@]}"; do
  if python3 - "$w" "${logs[@]}" <<'PY'
import json, sys
want, logs = sys.argv[1], sys.argv[2:]
for path in logs:
    for line in open(path, encoding="utf-8", errors="replace"):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("type") == "exec" and want in " ".join(r.get("argv") or []):
            sys.exit(0)
sys.exit(1)
PY
  then
    pass "audit: an exec record holds \"$w\""
  else
    fail "audit: an exec record holds \"$w\"" "(not in ${#logs[@]} logs)"
  fi
done
exit $failed
