#!/usr/bin/env bash
# Installs the build into a temporary prefix, then configures, builds and runs an outside
# project that finds zexec with find_package(zexec CONFIG); then the same from the build tree.
set -euo pipefail
build_dir=$1
source_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
cmake -S "$source_dir/tests/consumer" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo ${CONSUMER_FLAGS:-} >"$work/cmake.log"
grep -q "zexec config: $work/prefix/" "$work/cmake.log" || { cat "$work/cmake.log"; exit 1; }
cmake --build "$work/build" -j2 >/dev/null
# The consumer's embedded Executor must start the installed daemon, which starts the installed worker.
# Consumers link the shared library by default (libzexec0), not a static copy of it.
readelf -d "$work/build/consumer" | grep -q 'NEEDED.*\[libzexec\.so\.0\]' || { echo "consumer does not link libzexec.so.0"; exit 1; }
ZEXEC_DAEMON="$work/prefix/bin/zexecd" timeout 120 "$work/build/consumer" | tee "$work/out"
grep -q "sum 100" "$work/out"
grep -q "task error: fail: std::runtime_error: boom" "$work/out"
# The same program built with pkg-config alone. The .pc file names the configured prefix, so
# point it at the temporary one.
sed "s|^prefix=.*|prefix=$work/prefix|; s|^libdir=.*|libdir=$work/prefix/lib|; s|^includedir=.*|includedir=$work/prefix/include|" \
  "$work/prefix/lib/pkgconfig/zexec.pc" >"$work/zexec.pc"
# shellcheck disable=SC2046
g++ -std=c++20 ${CONSUMER_CXXFLAGS:-} "$source_dir/tests/consumer/main.cpp" -o "$work/consumer-pc" -Wl,-rpath,"$work/prefix/lib" \
  $(PKG_CONFIG_PATH="$work" pkg-config --cflags --libs zexec)
readelf -d "$work/consumer-pc" | grep -q 'NEEDED.*\[libzexec\.so\.0\]' || { echo "pkg-config consumer does not link libzexec.so.0"; exit 1; }
ZEXEC_DAEMON="$work/prefix/bin/zexecd" timeout 120 "$work/consumer-pc" | grep -q "sum 100"
# The installed Python package, run by Debian's python3 against the installed daemon (embedded mode).
pydir=$(ls -d "$work"/prefix/lib/python3*/dist-packages)
ZEXEC_DAEMON="$work/prefix/bin/zexecd" PYTHONPATH="$pydir" PYTHONDONTWRITEBYTECODE=1 timeout 120 /usr/bin/python3 -c '
import zexec
with zexec.Executor(workers=2) as ex:
    assert ex.submit("echo", 41).result(60) == 41
    assert list(ex.map("echo", range(5), timeout=60)) == list(range(5))
print("python ok")' | grep -q "python ok"
# The same project against the build tree itself (export(EXPORT): zexec_DIR=<build folder>), no
# install. Its Executor finds zexecd by its own search: libzexec's build tree comes before $PATH.
# shellcheck disable=SC2086
cmake -S "$source_dir/tests/consumer" -B "$work/build-tree" -Dzexec_DIR="$build_dir" \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo ${CONSUMER_FLAGS:-} >"$work/cmake.log"
grep -qx -- "-- zexec config: $build_dir/zexecConfig.cmake" "$work/cmake.log" || { cat "$work/cmake.log"; exit 1; }
cmake --build "$work/build-tree" -j2 >/dev/null
env -u ZEXEC_DAEMON timeout 120 "$work/build-tree/consumer" | grep -q "sum 100"
echo "consumer built against the installed package (CMake, pkg-config and Python) and the build tree, and ran"
