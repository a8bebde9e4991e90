#!/usr/bin/env bash
# Run the real-engine integration recipes (podman root and rootless, buildah,
# containerd ctr + CRI, dockerd + BuildKit) against an OCI runtime and judge
# every check against integration/expected/<recipe>.txt, the checks known to
# fail for buildcell today (strict: a listed check that passes fails the run,
# so the lists can only shrink).
#
#   sudo integration/run.sh                      # buildcell (target/release, built if missing)
#   sudo integration/run.sh --baseline           # runc first, then buildcell, side by side
#   sudo RECIPES="podman-root buildah" integration/run.sh [RUNTIME]
#   sudo integration/run.sh --write-expected[=REASON] [RUNTIME]
#        rewrite expected/<recipe>.txt from this run's failures (reasons of
#        lines still failing are kept; new lines get REASON or "TODO: <detail>")
#
# The recipes are called, never copied: $BUILDCELL_RECIPES, else
# <repo>/../shared/integration-recipes, else /work/shared/integration-recipes.
#
# Environment: RECIPES (default: all five, run-all.sh's order), OUT (keep the
# logs there; default a new /tmp/buildcell-integ-XXXXXX), RECIPE_TIMEOUT
# (seconds per recipe, default 900), EXPECTED_DIR (default
# integration/expected when the runtime is named buildcell, else none: every
# check must pass), ROOTLESS_USER (default $BUILDCELL_TEST_USER or bctest,
# the user of ci/test.sh), RECORD / KEEP / PODMAN_BRIDGE / BUILDAH_MODES
# (passed through to the recipes). Exit status 0 when every recipe matched
# its list, 1 otherwise, 2 for usage/setup errors.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

baseline=0 write=0 reason="" rt=""
for arg in "$@"; do
  case $arg in
    --baseline) baseline=1 ;;
    --write-expected) write=1 ;;
    --write-expected=*) write=1; reason=${arg#--write-expected=} ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "integration/run.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    *) [ -z "$rt" ] || { echo "integration/run.sh: one RUNTIME only" >&2; exit 2; }; rt=$arg ;;
  esac
done

die() { echo "integration/run.sh: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "run as root (the recipes start daemons and switch to the rootless user themselves)"

for d in "${BUILDCELL_RECIPES:-}" "$REPO/../shared/integration-recipes" /work/shared/integration-recipes; do
  if [ -n "$d" ] && [ -x "$d/run-all.sh" ]; then RECIPES_DIR=$(cd "$d" && pwd); break; fi
done
[ -n "${RECIPES_DIR:-}" ] || die "integration recipes not found: set BUILDCELL_RECIPES, or put them at $REPO/../shared/integration-recipes or /work/shared/integration-recipes"
[ -z "${BUILDCELL_RECIPES:-}" ] || [ "$RECIPES_DIR" -ef "$BUILDCELL_RECIPES" ] ||
  die "BUILDCELL_RECIPES=$BUILDCELL_RECIPES has no run-all.sh"

RECIPES=${RECIPES:-podman-root podman-rootless buildah containerd docker}
for r in $RECIPES; do
  [ -x "$RECIPES_DIR/$r.sh" ] || die "no recipe $RECIPES_DIR/$r.sh (RECIPES=$RECIPES)"
done

if [ -z "$rt" ]; then
  rt=$REPO/target/release/buildcell
  if [ ! -x "$rt" ]; then
    echo "==> building $rt (ci/build-release.sh)" >&2
    "$REPO/ci/build-release.sh" --quiet || die "ci/build-release.sh failed"
  fi
fi
rt_path=$(command -v "$rt") || die "runtime $rt not found"
rt_path=$(readlink -f "$rt_path")
rt_name=$(basename "$rt_path")

if [ -z "${EXPECTED_DIR+x}" ]; then
  if [ "$rt_name" = buildcell ]; then EXPECTED_DIR=$HERE/expected; else EXPECTED_DIR=""; fi
fi
[ "$write" = 0 ] || [ -n "$EXPECTED_DIR" ] || EXPECTED_DIR=$HERE/expected

# Everything the recipes install anyway, installed up front so that apt-get
# does not land inside a timed recipe (costs one dpkg-query each when present).
"$HERE/install.sh" || die "integration/install.sh failed"

export ROOTLESS_USER=${ROOTLESS_USER:-${BUILDCELL_TEST_USER:-bctest}}
OUT=${OUT:-$(mktemp -d /tmp/buildcell-integ-XXXXXX)}
mkdir -p "$OUT"; chmod 755 "$OUT"

# The rootless recipes exec the runtime as $ROOTLESS_USER (inside the
# engine's user namespace): give them a copy in a world-readable directory,
# under its own base name (podman passes --log-format json by name), so a
# repo under /root or a cargo build during the run cannot get in the way.
stage() {
  local src=$1 dir=$OUT/bin/$2 name=${3:-$(basename "$1")}
  mkdir -p "$dir"; chmod 755 "$OUT/bin" "$dir"
  cp "$src" "$dir/$name"; chmod 755 "$dir/$name"
  echo "$dir/$name"
}

# run_recipes LABEL RUNTIME: every recipe, one at a time, into $OUT/LABEL/.
run_recipes() {
  local label=$1 runtime=$2 dir=$OUT/$1 r t0 rc dt
  mkdir -p "$dir"
  echo "==> $label: $runtime  (recipes: $RECIPES_DIR; logs: $dir)" >&2
  for r in $RECIPES; do
    t0=$(date +%s.%N)
    touch "$dir/$r.start"
    # timeout signals the whole process group: the recipe's own trap then
    # runs its cleanup (containers, daemons, mounts, cgroups). -k: last resort.
    timeout -k 60 "${RECIPE_TIMEOUT:-900}" "$RECIPES_DIR/$r.sh" "${RUNTIME_OF[$r]:-$runtime}" >"$dir/$r.log" 2>&1 </dev/null
    rc=$?
    dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
    echo "$rc" >"$dir/$r.rc"; echo "$dt" >"$dir/$r.secs"
    printf '    %-16s exit %-3s %6ss  %s\n' "$r" "$rc" "$dt" \
      "$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$dir/$r.log" | tail -1 || true)" >&2
  done
}

checks=(python3 "$HERE/checks.py")
# A recipe's runtime when it is not the pass's own (rootless podman needs a
# copy its user can run); set per pass below, empty for runc's baseline.
declare -A RUNTIME_OF=()
if [ "$baseline" = 1 ]; then
  [ -x /usr/sbin/runc ] || die "--baseline needs /usr/sbin/runc (apt-get install runc)"
  run_recipes runc-baseline "$(stage /usr/sbin/runc baseline)"
fi
# buildcell runs every recipe twice (PASSES, default "build engine-compat"):
#
#  - build: called as buildcell-build-recipes, the shipped `build` profile
#    plus binds from /tmp (integration/profiles/build-recipes.toml: the
#    recipes keep their engines' state under /tmp/recipe-*, where a build
#    host has /var/lib/containers & co., which build allows). The checks
#    that need more than build (host network, --privileged, ...) are listed
#    with the reason in integration/expected-build/<recipe>.txt, strictly:
#    a listed check that passes, or an unlisted one that fails, fails the run.
#  - engine-compat: called as buildcell-engine-compat (the profile a
#    RuntimeClass handler per profile would select by name): every check
#    must pass, those of the build lists included. A copy under that name,
#    not the symlink deploy/install.sh makes: the recipes resolve the
#    runtime with readlink -f and run it (and BuildKit's runc shim) by the
#    resolved name. deploy/ itself is checked by integration/deploy-check.sh;
#    integration/policy-engines.sh shows each engine reporting build's refusals.
results=()
if [ "$rt_name" = buildcell ]; then
  for pass in ${PASSES:-build engine-compat}; do
    case $pass in
      build)
        # A config of this run naming the test profile's directory, readable
        # by the rootless user; a wrapper (a file of its own: readlink -f
        # stops there) sets it and runs the binary under the profile's name.
        mkdir -p "$OUT/etc/profiles"; chmod 755 "$OUT/etc" "$OUT/etc/profiles"
        cp "$HERE/profiles/build-recipes.toml" "$OUT/etc/profiles/"
        printf 'default_profile = "build"\nprofile_dirs = ["%s"]\n' "$OUT/etc/profiles" >"$OUT/etc/config.toml"
        chmod 644 "$OUT/etc/config.toml" "$OUT/etc/profiles/build-recipes.toml"
        bin=$(stage "$rt_path" build buildcell-build-recipes)
        printf '#!/bin/sh\nBUILDCELL_CONFIG=%s; export BUILDCELL_CONFIG\nexec %s "$@"\n' \
          "$OUT/etc/config.toml" "$bin" >"$OUT/bin/build/run-build-recipes"
        chmod 755 "$OUT/bin/build/run-build-recipes"
        RUNTIME_OF=()
        run_recipes "$rt_name-build" "$OUT/bin/build/run-build-recipes"
        results+=("$OUT/$rt_name-build|$rt_name under build|${EXPECTED_BUILD_DIR:-$HERE/expected-build}")
        ;;
      engine-compat)
        under_test=$(stage "$rt_path" under-test buildcell-engine-compat)
        # Rootless podman runs the runtime with a private HOME inside the
        # recipe's temporary directory, deleted at its end with the audit logs
        # in it: for that recipe a wrapper of the same name points
        # XDG_STATE_HOME at a directory of this run, so its containers' logs
        # can be checked like the root engines' (audit-check.sh below).
        ROOTLESS_STATE=$OUT/rootless-state
        install -d -m 700 -o "$ROOTLESS_USER" -g "$ROOTLESS_USER" "$ROOTLESS_STATE"
        mkdir -p "$OUT/bin/rootless"; chmod 755 "$OUT/bin/rootless"
        printf '#!/bin/sh\nXDG_STATE_HOME=%s; export XDG_STATE_HOME\nexec %s "$@"\n' \
          "$ROOTLESS_STATE" "$under_test" >"$OUT/bin/rootless/buildcell-engine-compat"
        chmod 755 "$OUT/bin/rootless/buildcell-engine-compat"
        RUNTIME_OF=([podman-rootless]=$OUT/bin/rootless/buildcell-engine-compat)
        run_recipes "$rt_name" "$under_test"
        results+=("$OUT/$rt_name|$rt_name under engine-compat|$EXPECTED_DIR")
        compat_ran=1
        ;;
      *) die "unknown pass $pass in PASSES (build, engine-compat)" ;;
    esac
  done
else
  run_recipes "$rt_name" "$(stage "$rt_path" under-test)"
  results+=("$OUT/$rt_name|$rt_name|$EXPECTED_DIR")
fi

# buildcell's own promise on top of the recipes' checks: every container
# an engine ran (as root, and rootless podman's) left an audit log that
# verifies and holds what ran.
audit_status=0
if [ "$rt_name" = buildcell ] && [ -n "${compat_ran:-}" ]; then
  echo "==> audit logs of the engines' containers" >&2
  for r in $RECIPES; do
    logdir=/var/log/buildcell
    case $r in
      podman-rootless) logdir=$ROOTLESS_STATE/buildcell/audit ;;
      *rootless*) continue ;;
    esac
    "$HERE/audit-check.sh" "$r" "$OUT/$rt_name/$r.start" "$rt_path" "$logdir" >"$OUT/$rt_name/$r.audit" 2>&1 || audit_status=1
    sed "s/^/    $r: /" "$OUT/$rt_name/$r.audit" >&2
  done
fi

# Looks-like-root seen from the host: each root recipe's engine once more,
# its containers' host uids, volume files and a setuid-root binary checked
# from outside (integration/userns-check.sh).
userns_status=0
if [ "$rt_name" = buildcell ] && [ -n "${compat_ran:-}" ]; then
  echo "==> looks-like-root: the root engines' containers seen from the host" >&2
  upass=0 ufail=0
  # As the recipes: called as buildcell-engine-compat (volumes under
  # /tmp, setuid probes; engine-compat keeps looks-like-root).
  compat_rt=$(stage "$rt_path" userns-check buildcell-engine-compat)
  for r in $RECIPES; do
    case $r in *rootless*) continue ;; esac
    "$HERE/userns-check.sh" "$r" "$compat_rt" >"$OUT/$rt_name/$r.userns" 2>&1 || userns_status=1
    grep -E '^(PASS|FAIL|SKIP) |^       > |^     \| ' "$OUT/$rt_name/$r.userns" | sed "s/^/    $r: /" >&2
    upass=$((upass + $(grep -c '^PASS ' "$OUT/$rt_name/$r.userns"))) || true
    ufail=$((ufail + $(grep -c '^FAIL ' "$OUT/$rt_name/$r.userns"))) || true
  done
  echo "looks-like-root: $upass passed, $ufail failed" >&2
fi

status=0
for res in "${results[@]}"; do
  IFS='|' read -r rdir rlabel rexp <<<"$res"
  if [ "$write" = 1 ]; then
    "${checks[@]}" write-expected --results "$rdir" --recipes "$RECIPES" --expected "$rexp" --reason "$reason"
  fi
  args=(--recipes "$RECIPES" --results "$rdir" --label "$rlabel" --expected "$rexp")
  [ "$baseline" = 0 ] || args+=(--baseline-results "$OUT/runc-baseline" --baseline-label "runc")
  "${checks[@]}" report "${args[@]}" || status=1
done
[ "$audit_status" = 0 ] || { echo "audit checks FAILED" >&2; status=1; }
[ "$userns_status" = 0 ] || { echo "looks-like-root checks FAILED" >&2; status=1; }
echo "logs: $OUT" >&2
exit $status
