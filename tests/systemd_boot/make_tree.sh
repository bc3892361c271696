#!/bin/sh
# make_tree.sh: print the path of a cached minimal Debian 12 tree that boots under
# systemd-nspawn, building it first when it is missing (a few minutes, once per cache key).
#
# The tree lives outside the source tree, in ${ZEXEC_ROOTFS_CACHE:-/var/cache/zexec-tests}, named
# after a hash of everything that shapes it (this script's version, suite, mirror, package list),
# so changing the list builds a new tree instead of trusting an old one. boot_test.sh never
# boots the cached tree itself, only a throw-away copy: the cache stays as debootstrap left it.
set -eu

# Bump when the steps below change what ends up in the tree.
SCRIPT_VERSION=1
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
# What boots (systemd, systemd-sysv for /sbin/init, dbus) and what zexec's packages need at
# run time, so that installing them in the test needs no network: the libraries zexecd links
# (ldd; `dpkg-deb -f zexec_*.deb Depends`: libzmq5, libspdlog1.10, libfmt9, libsystemd0,
# libcpp-httplib0.11, libsqlite3-0, libstdc++6; toml++ is header-only here) and the Python
# client's modules.
# debootstrap does not resolve virtual packages: python3-zmq's python3-cffi-backend-api-* is
# python3-cffi-backend, named here.
INCLUDE=systemd,systemd-sysv,dbus,python3,python3-zmq,python3-cffi-backend,python3-msgpack,libzmq5,libspdlog1.10,libfmt9,libsystemd0,libcpp-httplib0.11,libsqlite3-0,libstdc++6

CACHE=${ZEXEC_ROOTFS_CACHE:-/var/cache/zexec-tests}
KEY=$(printf '%s\n' "$SCRIPT_VERSION" "$SUITE" "$MIRROR" "$INCLUDE" | sha256sum | cut -c1-12)
TREE=$CACHE/$SUITE-$KEY

say() { echo "make_tree: $*" >&2; }

# --path: where the tree is (or would be), building nothing.
if [ "${1:-}" = --path ]; then
  echo "$TREE"
  exit 0
fi

# A tree is only ever renamed into place once complete, so existing means usable.
if [ -d "$TREE" ]; then
  echo "$TREE"
  exit 0
fi

mkdir -p "$CACHE"
# One builder at a time per key; a second run waits, then finds the tree the first one made.
exec 9>"$CACHE/.lock-$SUITE-$KEY"
flock -w 1800 9 || { say "timed out waiting for another build of $TREE"; exit 1; }
if [ -d "$TREE" ]; then
  echo "$TREE"
  exit 0
fi

# Built next to its final place (same file system, so the rename is atomic). An interrupted
# build leaves at worst a .build-* folder, which nothing trusts and the next build removes.
remove_build() {
  # debootstrap mounts /proc and /sys inside the target; an interruption can leave them there,
  # and rm must not walk into them: every mount point below it goes first, deepest first
  # (findmnt -R would only find a path that is one itself).
  awk -v p="$1/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" || :; done
  rm -rf --one-file-system "$1" || say "could not remove $1"
}
# What a killed build (SIGKILL, power loss: no trap ran) left; we hold the lock, so none is live.
for old in "$CACHE/.build-$SUITE-$KEY."*; do
  [ ! -d "$old" ] || remove_build "$old"
done
WORK=$(mktemp -d "$CACHE/.build-$SUITE-$KEY.XXXXXX")
trap 'remove_build "$WORK"' EXIT
trap 'exit 130' INT TERM HUP

start=$(date +%s)
say "building $TREE (debootstrap $SUITE from $MIRROR)"
ROOT=$WORK/root
if ! debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOT" "$MIRROR" >&2; then
  # The folder goes with the trap; its log says why, so show the end of it first.
  tail -n 40 "$ROOT/debootstrap/debootstrap.log" >&2 || :
  say "debootstrap failed"
  exit 1
fi

# The point-release and security updates too, so apt in the test resolves what the host built
# against; the lists are fetched now, so a run resolves anything missing from deb.debian.org.
cat >"$ROOT/etc/apt/sources.list" <<LIST
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb ${MIRROR%/debian}/debian-security $SUITE-security main
LIST
# No machine-id: each booted copy makes its own (a shared baked-in id would be one machine).
: >"$ROOT/etc/machine-id"
# systemd-firstboot would prompt on the console, which a test has not got.
ln -sf /dev/null "$ROOT/etc/systemd/system/systemd-firstboot.service"
# nspawn (not chroot) sets up /proc, /dev and resolv.conf for apt and tears them down itself.
systemd-nspawn --quiet --register=no --keep-unit --machine="zexec-tree-$$" -D "$ROOT" \
  sh -c 'apt-get update -q && apt-get clean' >&2
echo "$SCRIPT_VERSION $SUITE $MIRROR $INCLUDE" >"$ROOT/.zexec-tree"

mv -T "$ROOT" "$TREE"
say "built $TREE in $(($(date +%s) - start)) s"
echo "$TREE"
