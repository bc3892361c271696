#!/usr/bin/env bash
# zexec as a subproject: tests/subdir_consumer does add_subdirectory(<zexec source> zexec), once
# in full and once client-only (-DZEXEC_BUILD_DAEMON=OFF with spdlog made unfindable and
# pkg-config seeing libzmq alone, so neither spdlog nor libsystemd nor cpp-httplib can be used).
# Its CMakeLists fails the configure when a zexec setting reached the parent; here we check the
# build and install trees, and run its program against each build.
#   usage: subdir_consumer.sh ZEXEC_SOURCE_DIR
set -euo pipefail
src=$1
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The consumer must find zexecd by itself (search order in zexec/executor.hpp), and an inherited
# build type (or compile_commands.json setting) would hide one set by zexec.
unset ZEXEC_DAEMON CMAKE_BUILD_TYPE CMAKE_EXPORT_COMPILE_COMMANDS

# ---- full: client, worker runtime, zexecd
full=$work/full
# shellcheck disable=SC2086
cmake -S "$src/tests/subdir_consumer" -B "$full" -DZEXEC_SOURCE="$src" ${CONSUMER_FLAGS:-} >"$work/log" 2>&1 \
  || { cat "$work/log"; fail "configuring the full subproject build"; }
[ ! -e "$full/CPackConfig.cmake" ] || fail "zexec's CPack took over the parent's packaging"
[ ! -e "$full/compile_commands.json" ] || fail "zexec turned on the parent's compile_commands.json"
grep -q '^CMAKE_BUILD_TYPE:STRING=$' "$full/CMakeCache.txt" || fail "zexec cached a build type: $(grep '^CMAKE_BUILD_TYPE' "$full/CMakeCache.txt")"
cmake --build "$full" -j2 --target subdir_consumer zexecd zexec-worker >"$work/log" 2>&1 \
  || { tail -40 "$work/log"; fail "building the full subproject"; }
# The parent's program stays in the parent's folder; zexec's executables are together in its own.
[ -x "$full/subdir_consumer" ] || fail "subdir_consumer is not in the parent's build folder"
[ -x "$full/zexec/bin/zexecd" ] && [ -x "$full/zexec/bin/zexec-worker" ] || fail "zexecd/zexec-worker not in zexec/bin"
tests=$(cd "$full" && ctest -N | sed -n 's/^ *Test *#[0-9]*: //p')
[ "$tests" = subdir_consumer ] || fail "the parent's ctest lists zexec's tests: $tests"
# The daemon found by the search is the one of this build tree (step 5: libzexec's build tree).
timeout 120 "$full/subdir_consumer" | tee "$work/out"
grep -qx "daemon $full/zexec/bin/zexecd" "$work/out" || fail "the embedded Executor did not start the subproject's zexecd"
grep -qx "sum 100 triple 42" "$work/out" || fail "wrong results"
# Installing the parent installs the parent's files only (ZEXEC_INSTALL defaults OFF).
cmake --install "$full" --prefix "$work/prefix" >/dev/null
installed=$(cd "$work/prefix" && find . -type f -o -type l | sort)
[ "$installed" = ./bin/subdir_consumer ] || fail "cmake --install of the parent installed: $installed"

# ---- client only: no zexecd, no spdlog, libsystemd or cpp-httplib
mkdir "$work/pc"
# libzmq.pc without its Requires.private (libsodium, krb5, ...), whose .pc files are hidden too.
grep -v '^Requires.private' "$(pkg-config --variable=pcfiledir libzmq)/libzmq.pc" >"$work/pc/libzmq.pc"
client=$work/client
# shellcheck disable=SC2086
PKG_CONFIG_LIBDIR=$work/pc cmake -S "$src/tests/subdir_consumer" -B "$client" -DZEXEC_SOURCE="$src" \
  -DZEXEC_BUILD_DAEMON=OFF -DEXPECT_CLIENT_ONLY=ON -Dspdlog_DIR=/nonexistent -DCMAKE_DISABLE_FIND_PACKAGE_spdlog=ON \
  ${CONSUMER_FLAGS:-} >"$work/log" 2>&1 || { cat "$work/log"; fail "configuring the client-only subproject build"; }
# (Looking for them REQUIRED would already have failed the configure; this catches a QUIET look.)
if grep -qE '^(__pkg_config_checked_)?(SYSTEMD|HTTPLIB)_?' "$client/CMakeCache.txt"; then
  fail "the client-only build looked for libsystemd/cpp-httplib: $(grep -E '^(__pkg_config_checked_)?(SYSTEMD|HTTPLIB)' "$client/CMakeCache.txt")"
fi
cmake --build "$client" -j2 --target subdir_consumer >"$work/log" 2>&1 \
  || { tail -40 "$work/log"; fail "building the client-only subproject"; }
[ ! -e "$client/zexec/bin/zexecd" ] || fail "the client-only build made a zexecd"
# Its client and worker runtime against the full build's daemon.
ZEXEC_DAEMON=$full/zexec/bin/zexecd timeout 120 "$client/subdir_consumer" | tee "$work/out"
grep -qx "sum 100 triple 42" "$work/out" || fail "wrong results from the client-only build"
echo "zexec as a subproject, full and client-only: built, ran, kept its settings to itself"
