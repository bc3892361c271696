#!/bin/sh
# `make package-check`: builds the packages inside a clean minimal Debian 12 (a copy of the boot
# test's cached tree, tests/systemd_boot/make_tree.sh) that has only what debian/control's
# Build-Depends bring (apt-get build-dep), so a missing Build-Depends shows here and not on a
# Debian build daemon. Needs root and systemd-nspawn; downloads the compilers from the Debian
# archive and compiles everything once: minutes, hence not part of `make test`.
#   usage: check-build-depends.sh JOBS
set -eu
jobs=${1:-2}
here=$(cd "$(dirname "$0")" && pwd)
tree=$("$here/../tests/systemd_boot/make_tree.sh")
run=$(mktemp -d /var/tmp/zexec-build-depends.XXXXXX)
trap 'rm -rf --one-file-system "$run"' EXIT
cp -a --reflink=auto "$tree" "$run/root"
"$here/stage-source.sh" "$run/root/src/zexec"
# Not booted: a plain container is enough to install and build (network: the host's, for apt).
timeout 1800 systemd-nspawn --quiet --keep-unit --register=no -D "$run/root" --chdir=/src/zexec \
  --setenv=DEBIAN_FRONTEND=noninteractive --setenv=DEB_BUILD_OPTIONS="parallel=$jobs nocheck" \
  sh -c 'apt-get build-dep -y -q ./ >/tmp/build-dep.log 2>&1 || { tail -20 /tmp/build-dep.log; exit 1; }
         dpkg-buildpackage -b -us -uc >/tmp/build.log 2>&1 || { tail -40 /tmp/build.log; exit 1; }
         ls /src/*.deb'
echo "the packages build in a clean Debian 12 with only their Build-Depends"
