#!/bin/sh
# stage-source.sh DEST: the source package's tree in DEST: the tracked files (and new ones not
# ignored; never a build folder) with packaging/debian as debian/. DEST's obj-* build folder,
# if any, is kept, and tar keeps the files' times, so a rebuild there compiles only what changed.
set -eu
dest=$1
src=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$dest"
find "$dest" -mindepth 1 -maxdepth 1 ! -name 'obj-*' -exec rm -rf {} +
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$src" && git ls-files -z --cached --others --exclude-standard) |
    (cd "$src" && tar --null --no-recursion -T - -cf -) | tar -xf - -C "$dest"
else
  (cd "$src" && tar --exclude='./build*' --exclude=./.git -cf - .) | tar -xf - -C "$dest"
fi
cp -a "$src/packaging/debian" "$dest/debian"
