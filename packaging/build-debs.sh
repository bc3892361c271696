#!/bin/sh
# `make package`: the four .debs (zexec, libzexec0, libzexec-dev, python3-zexec, and their
# -dbgsym) from packaging/debian, built by dpkg-buildpackage on a copy of the sources in
# OUT/zexec (stage-source.sh), so the checkout stays free of debian/ and of debhelper's litter.
# The copy keeps its CMake build folder (obj-*) between runs: a rebuild compiles only what changed.
#   usage: build-debs.sh OUT_DIR JOBS
set -eu
out=$(realpath -m "$1")
jobs=$2
here=$(cd "$(dirname "$0")" && pwd)
stage=$out/zexec

"$here/stage-source.sh" "$stage"
rm -f "$out"/*.deb "$out"/*.changes "$out"/*.buildinfo
cd "$stage"
# -nc: keep obj-* (no clean first); -b: binary packages only; unsigned.
DEB_BUILD_OPTIONS="parallel=$jobs nocheck${DEB_BUILD_OPTIONS:+ $DEB_BUILD_OPTIONS}" \
  dpkg-buildpackage -b -us -uc -nc >"$out/build.log" 2>&1 || {
  tail -40 "$out/build.log" >&2
  echo "dpkg-buildpackage failed: the whole log is $out/build.log" >&2
  exit 1
}
ls "$out"/*.deb
