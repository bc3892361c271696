#!/bin/sh
# `make package`: the four .debs (zexec, libzexec0, libzexec-dev, python3-zexec, and their
# -dbgsym) from packaging/debian, built by dpkg-buildpackage on a copy of the sources in
# OUT/zexec, so the checkout stays free of debian/ and of debhelper's litter. The copy keeps its
# CMake build folder (obj-*) between runs: a rebuild compiles only what changed.
#   usage: build-debs.sh OUT_DIR JOBS
set -eu
out=$(realpath -m "$1")
jobs=$2
src=$(cd "$(dirname "$0")/.." && pwd)
stage=$out/zexec

mkdir -p "$stage"
find "$stage" -mindepth 1 -maxdepth 1 ! -name 'obj-*' -exec rm -rf {} +
# The tracked files and the new ones not ignored (a build folder never goes in); tar keeps
# their times, so make sees unchanged sources as unchanged.
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$src" && git ls-files -z --cached --others --exclude-standard) |
    (cd "$src" && tar --null --no-recursion -T - -cf -) | tar -xf - -C "$stage"
else
  (cd "$src" && tar --exclude='./build*' --exclude=./.git -cf - .) | tar -xf - -C "$stage"
fi
cp -a "$src/packaging/debian" "$stage/debian"

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
