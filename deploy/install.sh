#!/usr/bin/env bash
# Install buildcell on a build host (as root), from a repository checkout:
#
#   ci/build-release.sh && sudo deploy/install.sh [--prefix /usr/local] [--bin FILE]
#   sudo deploy/install.sh --uninstall [--prefix /usr/local]
#
# Installs, each only when missing or different (a second run changes nothing):
#   PREFIX/bin/buildcell                 the binary (root-owned, 0755: a binary its own
#                                        containers could write is CVE-2019-5736's door)
#   PREFIX/bin/buildcell-NAME            one symlink per shipped profile (profiles/*.toml):
#                                        called by that name, buildcell applies profile NAME
#   PREFIX/lib/buildcell/buildkit/runc   the BuildKit wrapper (deploy/buildkit/runc)
#   /etc/buildcell/profiles/*.toml       the shipped profiles (replaced on upgrade)
#   /etc/buildcell/seccomp/*.json        the seccomp profiles they name
#   /etc/buildcell/cni/*.conflist        the loopback-only CNI network of the buildcell-build and
#                                        -strict CRI handlers (deploy/cni; replaced on upgrade)
#   /etc/buildcell/config.toml           deploy/config.toml, only when absent (edits are kept)
#   /etc/buildcell/audit.key (+ .pub)    `buildcell audit keygen`, only when absent
#   /var/log/buildcell/                  the audit log directory (0700)
#   /var/lib/containers/tmp/             where deploy/containers/buildcell.conf has buildah
#                                        make its RUN steps' bundles (0700; buildah
#                                        does not create it)
# The engines' own configuration is not touched: deploy/README.md says which
# file goes where. --uninstall removes the binary, the links, the wrapper,
# the shipped profiles and seccomp files; it keeps config.toml, the audit key
# and the logs (auditors still need them) and says so.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

prefix=/usr/local bin="" uninstall=0
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) prefix=${2:?--prefix needs a directory}; shift ;;
    --prefix=*) prefix=${1#--prefix=} ;;
    --bin) bin=${2:?--bin needs a file}; shift ;;
    --bin=*) bin=${1#--bin=} ;;
    --uninstall) uninstall=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "deploy/install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
die() { echo "deploy/install.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root: it installs into $prefix and /etc/buildcell (sudo $0 $*)"
case $prefix in /*) ;; *) die "--prefix $prefix is not an absolute path" ;; esac
prefix=${prefix%/}

ETC=/etc/buildcell
BIN=$prefix/bin
LIB=$prefix/lib/buildcell
profiles=()
for f in "$REPO"/profiles/*.toml; do profiles+=("$(basename "$f" .toml)"); done
[ ${#profiles[@]} -gt 0 ] || die "no profiles in $REPO/profiles"

say() { printf '%-10s %s\n' "$1" "$2"; }

# put MODE SRC DST: install SRC as DST (root-owned) unless identical.
put() {
  local mode=$1 src=$2 dst=$3
  if [ -f "$dst" ] && [ ! -L "$dst" ] && cmp -s "$src" "$dst" &&
     [ "$(stat -c '%a %u %g' "$dst")" = "$mode 0 0" ]; then
    say unchanged "$dst"; return
  fi
  local what=installed; [ -e "$dst" ] && what=updated
  install -D -o root -g root -m "$mode" "$src" "$dst.new.$$"
  mv -f "$dst.new.$$" "$dst"
  say "$what" "$dst"
}
# link NAME: PREFIX/bin/NAME -> buildcell (relative, so the prefix can move).
link() {
  local dst=$BIN/$1
  if [ "$(readlink "$dst" 2>/dev/null)" = buildcell ]; then say unchanged "$dst -> buildcell"; return; fi
  [ ! -e "$dst" ] || [ -L "$dst" ] || die "$dst exists and is not a symlink; move it away first"
  ln -sfn buildcell "$dst"
  say installed "$dst -> buildcell"
}
# remove PATH: delete a file or symlink we installed.
remove() { if [ -e "$1" ] || [ -L "$1" ]; then rm -f "$1"; say removed "$1"; fi; }

if [ "$uninstall" = 1 ]; then
  remove "$BIN/buildcell"
  for p in "${profiles[@]}"; do remove "$BIN/buildcell-$p"; remove "$ETC/profiles/$p.toml"; done
  remove "$LIB/buildkit/runc"
  rmdir "$LIB/buildkit" "$LIB" 2>/dev/null || true
  for f in "$REPO"/seccomp/*.json; do remove "$ETC/seccomp/$(basename "$f")"; done
  for f in "$HERE"/cni/*.conflist; do remove "$ETC/cni/$(basename "$f")"; done
  rmdir "$ETC/profiles" "$ETC/seccomp" "$ETC/cni" 2>/dev/null || true
  if rmdir /var/lib/containers/tmp 2>/dev/null; then say removed /var/lib/containers/tmp; fi
  for k in "$ETC/config.toml" "$ETC/audit.key" "$ETC/audit.key.pub" /var/log/buildcell; do
    [ -e "$k" ] && say kept "$k"
  done
  exit 0
fi

if [ -z "$bin" ]; then
  bin=$REPO/target/release/buildcell
  [ -x "$bin" ] || die "$bin not found: build it first (ci/build-release.sh), or give --bin FILE"
fi
[ -x "$bin" ] && [ -f "$bin" ] || die "--bin $bin is not an executable file"
"$bin" --version >/dev/null 2>&1 || die "$bin --version fails: not a buildcell binary for this machine"

put 755 "$bin" "$BIN/buildcell"
# Leave the binary to be read back from disk by its first calls: a file just
# written stays in the page cache in the folios its writer made, and every
# call then maps more of it (a rootless `run` peaked at 3,360 KiB with the
# installed copy as written, 3,044 KiB read back: bench/NOTES.md, "Memory").
sync "$BIN/buildcell" && dd if="$BIN/buildcell" iflag=nocache count=0 status=none || true
for p in "${profiles[@]}"; do link "buildcell-$p"; done

# The BuildKit wrapper names the binary by its installed path.
tmp=$(mktemp); trap 'rm -f "$tmp"' EXIT
sed "s#/usr/local/bin/buildcell#$BIN/buildcell#g" "$HERE/buildkit/runc" >"$tmp"
put 755 "$tmp" "$LIB/buildkit/runc"

install -d -o root -g root -m 755 "$ETC" "$ETC/profiles" "$ETC/seccomp" "$ETC/cni"
for p in "${profiles[@]}"; do put 644 "$REPO/profiles/$p.toml" "$ETC/profiles/$p.toml"; done
for f in "$REPO"/seccomp/*.json; do put 644 "$f" "$ETC/seccomp/$(basename "$f")"; done
for f in "$HERE"/cni/*.conflist; do put 644 "$f" "$ETC/cni/$(basename "$f")"; done
if [ -e "$ETC/config.toml" ]; then say kept "$ETC/config.toml"; else put 644 "$HERE/config.toml" "$ETC/config.toml"; fi

# The audit signing key (README "The audit log"): the default path of
# every root call; auditors get audit.key.pub.
if [ -e "$ETC/audit.key" ]; then
  say kept "$ETC/audit.key"
else
  "$BIN/buildcell" audit keygen "$ETC/audit.key" >/dev/null || die "buildcell audit keygen $ETC/audit.key failed"
  say created "$ETC/audit.key (public key: $ETC/audit.key.pub)"
fi
install -d -o root -g root -m 700 /var/log/buildcell
[ -d /var/lib/containers/tmp ] || { install -d -o root -g root -m 700 /var/lib/containers/tmp; say created /var/lib/containers/tmp; }

# Each file must now load as the binary sees it: a broken profile or config
# fails here, not in the first build.
for p in "${profiles[@]}"; do
  "$BIN/buildcell-$p" policy show "$p" >/dev/null || die "profile $p does not load: $BIN/buildcell-$p policy show $p"
done
say ok "buildcell $("$BIN/buildcell" --version | head -1 | awk '{print $NF}') in $BIN, profiles: ${profiles[*]}, default: $(sed -n 's/^default_profile *= *"\(.*\)"/\1/p' "$ETC/config.toml" | head -1)"
