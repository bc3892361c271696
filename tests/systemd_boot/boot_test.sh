#!/bin/sh
# boot_test.sh DEB_DIR: the ctest entry. Boots a throw-away copy of a cached Debian 12 tree
# (make_tree.sh) under a real systemd (systemd-nspawn -b), where checks.sh installs the .debs of
# DEB_DIR with apt and exercises zexecd as a service; prints its results.
# Exit 0: every check passed. 1: a check failed, or no results. 77 (ctest skip): only when the
# container cannot boot here at all (not root, no systemd-nspawn, nspawn refuses to start).
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
DEADLINE=${ZEXEC_BOOT_DEADLINE:-240}  # seconds for boot, checks and poweroff

skip() { echo "SKIP: $*"; exit 77; }
die() { echo "FAIL: $*"; exit 1; }

[ $# = 1 ] || { echo "usage: $0 DEB_DIR" >&2; exit 2; }
DEB_DIR=$1
[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, systemd-nspawn)"
command -v systemd-nspawn >/dev/null || skip "no systemd-nspawn (apt-get install systemd-container)"

# The packages: every *.deb there but debug symbols. Both layouts work: today's single
# zexec_*.deb, and zexec + libzexec0 + libzexec-dev + python3-zexec.
debs=
for f in "$DEB_DIR"/*.deb; do
  case $f in *-dbgsym_* | *-dbgsym.deb | *.ddeb) continue ;; esac
  [ -f "$f" ] && debs="$debs $f"
done
[ -n "$debs" ] || die "no .deb in $DEB_DIR (run \`make package\` first)"

# Nothing to boot without the tree or the means to build it. Once building starts, though, a
# failure is a failure (a broken package list must not pass as a skip).
if [ ! -d "$("$HERE/make_tree.sh" --path)" ] && ! command -v debootstrap >/dev/null; then
  skip "no cached tree and no debootstrap to build one (apt-get install debootstrap)"
fi
TREE=$("$HERE/make_tree.sh") || die "could not build the Debian tree (make_tree.sh)"

RUN=$(mktemp -d /var/tmp/zexec-boot.XXXXXX)
nspawn_pid=
cleanup() {
  # ctest's own timeout or ^C: stop the container (timeout passes TERM on to nspawn, which
  # powers the container off; KILL after 10 s), and wait so nothing outlives the test.
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    kill -TERM "$nspawn_pid" 2>/dev/null || :
    wait "$nspawn_pid" 2>/dev/null || :
  fi
  # nspawn's mounts live in its own namespace; anything mounted below $RUN here is a leftover,
  # unmounted deepest first so that rm stays on this file system.
  awk -v p="$RUN/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" || :; done
  rm -rf --one-file-system "$RUN"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# A copy per run, so the cache never sees a booted system (machine-id, journal, installed
# packages); on a reflink file system the copy is nearly free.
start=$(date +%s)
cp -a --reflink=auto "$TREE" "$RUN/root"
mkdir -p "$RUN/debs" "$RUN/results"
# Only the chosen .debs go in (not the build folder around them, nor its -dbgsym packages).
for f in $debs; do cp "$f" "$RUN/debs/"; done
install -m 0755 "$HERE/checks.sh" "$RUN/root/usr/local/sbin/zexec-boot-checks"
install -m 0644 "$HERE/zexec-boot-check.service" "$RUN/root/etc/systemd/system/"
mkdir -p "$RUN/root/etc/systemd/system/multi-user.target.wants"
ln -s ../zexec-boot-check.service "$RUN/root/etc/systemd/system/multi-user.target.wants/"

echo "booting $TREE (copy in $RUN) with:$debs"
# --keep-unit --register=no: nothing to register with when PID 1 here is not systemd.
# --console=read-only: ctest has no tty, and with =pipe there would be no /dev/console, so
# nothing of the boot to read; this way the console (systemd's boot messages, the check unit's
# output) goes to console.log.
# Background + wait, so that the trap can still stop it.
timeout --kill-after=10 "$DEADLINE" systemd-nspawn --quiet --keep-unit --register=no -b \
  -D "$RUN/root" --machine="zexec-boot-$$" --console=read-only \
  --bind-ro="$RUN/debs:/debs" --bind="$RUN/results:/results" \
  >"$RUN/console.log" 2>&1 </dev/null &
nspawn_pid=$!
rc=0
wait "$nspawn_pid" || rc=$?
nspawn_pid=
elapsed=$(($(date +%s) - start))

log=$RUN/results/log
if [ ! -s "$log" ]; then
  # No results: either nspawn refused to start the container (skip: it cannot boot here), or
  # it booted and the checks never ran or never finished (a failure).
  if ! grep -q 'running in system mode' "$RUN/console.log"; then
    cat "$RUN/console.log"
    skip "systemd-nspawn could not boot the container (exit $rc, output above)"
  fi
  tail -n 60 "$RUN/console.log"
  die "the container booted but wrote no results (nspawn exit $rc after ${elapsed} s; console above)"
fi

cat "$log"
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  tail -n 60 "$RUN/console.log"
  die "deadline: the container was still running after $DEADLINE s (console above)"
fi
summary=$(tail -n 1 "$log")
case $summary in
  "# "*" passed, 0 failed")
    if grep -q '^FAIL' "$log" || ! grep -q '^ok' "$log"; then die "inconsistent results"; fi
    echo "PASS: all checks passed in ${elapsed} s"
    ;;
  "# "*" passed, "*" failed")
    if [ -s "$RUN/results/journal" ]; then
      echo "--- zexecd's journal (last lines) ---"
      cat "$RUN/results/journal"
    fi
    die "some checks failed (${elapsed} s)"
    ;;
  *)
    tail -n 60 "$RUN/console.log"
    die "the checks did not finish (no summary line; console above)"
    ;;
esac
