#!/bin/sh
# The benchmark (`make bench`): every measurement of bench/run.py, one Markdown table at the end,
# also written to BUILD_DIR/bench-results.md. Needs a build tree with the bench programs
# (ZEXEC_BUILD_EXAMPLES=ON, the default; a Release build for figures worth keeping).
#
#   bench/run.sh BUILD_DIR [--quick] [--reps N] [--out FILE] [--no-peers] [--peers]
#
# --quick is the smoke run (seconds; no Gearman/Celery). The driver and the ProcessPoolExecutor
# row need Debian's /usr/bin/python3: installed here if missing (as root, or through sudo).
# Gearman (gearman-job-server + libgearman-dev at build time) and Celery (redis-server,
# python3-celery, python3-redis) are measured where installed and skipped with a note otherwise.
set -eu
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: $0 BUILD_DIR [--quick] [--reps N] [--out FILE] [--no-peers] [--peers]" >&2
  exit 2
fi
build=$1
shift
here=$(cd "$(dirname "$0")" && pwd)

missing=
for p in python3; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ] || [ ! -x /usr/bin/python3 ]; then
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "installing missing Debian packages:${missing:- python3}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends ${missing:-python3}
fi

exec /usr/bin/python3 "$here/run.py" --build "$build" "$@"
