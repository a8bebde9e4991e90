#!/usr/bin/env bash
# Install the Debian packages the integration recipes need
# (shared/integration-recipes/README.md, "The Debian packages used"), plus
# runc and crun for the baseline and the benchmark. Only what is missing is
# installed, so a second run costs one dpkg-query per package and nothing else.
# The recipes would install these themselves (apt_ensure) in the middle of a
# timed run; installing them up front keeps apt out of the recipe wall times.
#   sudo integration/install.sh
set -euo pipefail

pkgs=(podman conmon catatonit buildah containerd docker.io netavark uidmap passwd
      iproute2 util-linux busybox-static jq bsdutils python3-grpcio python3-grpc-tools
      runc crun)
# The CNI plugins (/usr/lib/cni) of deploy-check.sh's CRI pods on a pod
# network (it also installs them itself, apt-get only when missing).
pkgs+=(containernetworking-plugins)
# Extra tools of the harness and bench/lifecycle.py (GNU time for peak RSS).
pkgs+=(hyperfine time python3)

if [ "$(id -u)" != 0 ]; then
  echo "integration/install.sh: run as root (apt-get install)" >&2
  exit 2
fi

missing=()
for p in "${pkgs[@]}"; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "integration/install.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt=(apt-get -qq -o DPkg::Lock::Timeout=600)
# --no-install-recommends as the recipes do: netavark is listed explicitly
# (without it apt would pick containernetworking-plugins for podman).
if ! "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
  "${apt[@]}" update >/dev/null
  "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null
fi
