#!/usr/bin/env bash
# Installs the build into a temporary prefix, then configures, builds and runs an outside
# project that finds zexec with find_package(zexec CONFIG).
set -euo pipefail
build_dir=$1
source_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
cmake -S "$source_dir/tests/consumer" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo ${CONSUMER_FLAGS:-} >/dev/null
cmake --build "$work/build" -j2 >/dev/null
# The consumer's embedded Executor must start the installed daemon, which starts the installed worker.
ZEXEC_DAEMON="$work/prefix/bin/zexecd" timeout 120 "$work/build/consumer" | tee "$work/out"
grep -q "sum 100" "$work/out"
grep -q "task error: fail: std::runtime_error: boom" "$work/out"
# The same program built with pkg-config alone. The .pc file names the configured prefix, so
# point it at the temporary one.
sed "s|^prefix=.*|prefix=$work/prefix|; s|^libdir=.*|libdir=$work/prefix/lib|; s|^includedir=.*|includedir=$work/prefix/include|" \
  "$work/prefix/lib/pkgconfig/zexec.pc" >"$work/zexec.pc"
# shellcheck disable=SC2046
g++ -std=c++20 ${CONSUMER_CXXFLAGS:-} "$source_dir/tests/consumer/main.cpp" -o "$work/consumer-pc" \
  $(PKG_CONFIG_PATH="$work" pkg-config --cflags --libs zexec)
ZEXEC_DAEMON="$work/prefix/bin/zexecd" timeout 120 "$work/consumer-pc" | grep -q "sum 100"
echo "consumer built against the installed package (CMake and pkg-config) and ran"
