#!/bin/bash
# The Debian packages of `make package`, looked at from outside without installing them (the
# real install, under a booted systemd, is systemd_boot/): which files each one ships, what it
# depends on, that its ELF files are stripped, carry no RPATH and export only zexec's API, that
# the maintainer scripts do what Debian expects, and that lintian finds nothing.
#   usage: package_test.sh DEB_BUILD_DIR SOURCE_DIR
# grep reads captured output, never a pipe: grep -q stops reading at the first match, and under
# pipefail the writer's SIGPIPE would turn a match into a failure.
set -euo pipefail
deb_dir=$1
src=$2
fail() { echo "FAIL: $*" >&2; exit 1; }

version=$(sed -n 's/^project(zexec VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
changelog_version=$(sed -n '1s/^zexec (\([^)]*\)).*/\1/p' "$src/packaging/debian/changelog")
[ "$version" = "$changelog_version" ] ||
  fail "CMakeLists.txt says $version, packaging/debian/changelog says $changelog_version: add a changelog entry"
python_version=$(sed -n 's/^version = "\([^"]*\)".*/\1/p' "$src/client-lib/python/pyproject.toml")
[ "$version" = "$python_version" ] || fail "CMakeLists.txt says $version, client-lib/python/pyproject.toml $python_version"

declare -A deb
for pkg in zexec libzexec0 libzexec-dev python3-zexec; do
  shopt -s nullglob
  found=("$deb_dir/${pkg}_${version}_"*.deb)
  shopt -u nullglob
  [ ${#found[@]} -eq 1 ] || fail "expected one ${pkg}_${version}_*.deb in $deb_dir (run 'make package'), found ${#found[@]}"
  deb[$pkg]=${found[0]}
  [ "${found[0]}" -nt "$src/CMakeLists.txt" ] || fail "${found[0]} is older than the sources: run 'make package'"
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- contents: each package ships its own files at Debian's paths, and nothing outside them
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
lib=/usr/lib/$arch
declare -A wants=(
  [zexec]="/usr/bin/zexecd /usr/bin/zexec /usr/bin/zexec-worker /lib/systemd/system/zexecd.service
           /usr/lib/sysusers.d/zexec.conf /etc/zexec/zexecd.toml /usr/share/man/man8/zexecd.8.gz
           /usr/share/man/man1/zexec.1.gz /usr/share/man/man1/zexec-worker.1.gz
           /usr/share/doc/zexec/PROTOCOL.md.gz /usr/share/doc/zexec/copyright"
  [libzexec0]="$lib/libzexec.so.0 $lib/libzexec.so.$version $lib/libzexec-worker.so.0
               $lib/libzexec-worker.so.$version /usr/share/doc/libzexec0/copyright"
  [libzexec-dev]="/usr/include/zexec/zexec.hpp /usr/include/zexec/client.hpp /usr/include/zexec/worker.hpp
                  /usr/include/zexec/export.hpp $lib/libzexec.so $lib/libzexec-worker.so
                  $lib/cmake/zexec/zexecConfig.cmake $lib/pkgconfig/zexec.pc $lib/pkgconfig/zexec-worker.pc"
  [python3-zexec]="/usr/lib/python3/dist-packages/zexec/__init__.py /usr/lib/python3/dist-packages/zexec/worker.py
                   /usr/lib/python3/dist-packages/zexec/py.typed
                   /usr/lib/python3/dist-packages/zexec-$version.dist-info/METADATA"
)
for pkg in "${!deb[@]}"; do
  # Files and links only (directories are shared by design).
  dpkg-deb -c "${deb[$pkg]}" | awk '$1 !~ /^d/ {print $6}' | sed 's|^\./|/|' >"$work/$pkg.files"
  for f in ${wants[$pkg]}; do
    grep -qx "$f" "$work/$pkg.files" || fail "$pkg lacks $f"
  done
  if grep -E '^/usr/local|^/usr/etc|\.a$|/build' "$work/$pkg.files"; then fail "$pkg ships files it should not (above)"; fi
  mkdir -p "$work/root"
  dpkg-deb -x "${deb[$pkg]}" "$work/root"
done
# Each file in one package only (the shared library is not also in the -dev package, say).
dups=$(cat "$work"/*.files | sort | uniq -d)
[ -z "$dups" ] || fail "files in more than one package: $dups"

# --- control fields: Depends computed from what is linked, plus what each package needs
field() { dpkg-deb -f "${deb[$1]}" "$2"; }
has() { [[ "$(field "$1" "$2")" == *"$3"* ]] || fail "$1: $2 lacks $3: $(field "$1" "$2")"; }
for d in libzexec0 libzmq5 libsystemd0 libstdc++6; do has zexec Depends "$d"; done
has libzexec0 Depends libzmq5
has libzexec-dev Depends "libzexec0 (= $version)"
has libzexec-dev Depends libmsgpack-cxx-dev
for d in python3-zmq python3-msgpack python3; do has python3-zexec Depends "$d"; done
[ "$(field python3-zexec Architecture)" = all ] || fail "python3-zexec is not Architecture: all"
[ "$(field libzexec0 Multi-Arch)" = same ] || fail "libzexec0 is not Multi-Arch: same"
for pkg in "${!deb[@]}"; do dpkg-deb -e "${deb[$pkg]}" "$work/control-$pkg"; done
grep -qx /etc/zexec/zexecd.toml "$work/control-zexec/conffiles" || fail "zexecd.toml is not a conffile"
grep -q '^libzexec 0 libzexec0' "$work/control-libzexec0/shlibs" || fail "libzexec0 has no shlibs entry for libzexec"
grep -q '^libzexec-worker 0 libzexec0' "$work/control-libzexec0/shlibs" || fail "no shlibs entry for libzexec-worker"

# --- ELF files: stripped, no RPATH, the right SONAME, only zexec's API exported
for f in usr/bin/zexecd usr/bin/zexec usr/bin/zexec-worker "${lib#/}/libzexec.so.$version" "${lib#/}/libzexec-worker.so.$version"; do
  sections=$(readelf -SW "$work/root/$f")
  if grep -q '\.debug_info\|\.symtab' <<<"$sections"; then fail "$f is not stripped"; fi
  if grep -q 'RPATH\|RUNPATH' <<<"$(readelf -d "$work/root/$f")"; then fail "$f has an RPATH"; fi
done
for so in libzexec libzexec-worker; do
  grep -q "SONAME.*\[$so\.so\.0\]" <<<"$(readelf -d "$work/root/$lib/$so.so.$version")" || fail "$so: SONAME is not $so.so.0"
  [ "$(readlink "$work/root/$lib/$so.so")" = "$so.so.0" ] || fail "$so.so does not point at $so.so.0"
  exported=$(nm -D --defined-only -C "$work/root/$lib/$so.so.$version" | cut -d' ' -f3-)
  others=$(grep -v '^zexec::\|^\(typeinfo\|typeinfo name\|vtable\) for zexec::\|^ZEXEC_0$' <<<"$exported" || true)
  [ -z "$others" ] || fail "$so exports more than zexec's API: $(head -5 <<<"$others")"
  grep -q '^zexec::' <<<"$exported" || fail "$so exports nothing"
  # The protocol's internals stay inside the libraries.
  if grep -q '^zexec::\(encode\|decode\)' <<<"$exported"; then fail "$so exports the protocol's encode/decode"; fi
done

# --- maintainer scripts: the user, the unit enabled and started (a Debian daemon runs once
# installed), restarted on upgrade, stopped on remove, state removed on purge
post=$work/control-zexec/postinst
grep -q 'systemd-sysusers.*zexec' "$post" || fail "postinst does not create the zexec user"
grep -q "deb-systemd-helper enable 'zexecd.service'" "$post" || fail "postinst does not enable zexecd"
grep -q "deb-systemd-invoke \$_dh_action 'zexecd.service'" "$post" || fail "postinst does not start/restart zexecd"
grep -q "deb-systemd-invoke stop 'zexecd.service'" "$work/control-zexec/prerm" || fail "prerm does not stop zexecd"
grep -q 'rm -rf /var/lib/zexec' "$work/control-zexec/postrm" || fail "postrm purge keeps /var/lib/zexec"
unit=$(cat "$work/root/lib/systemd/system/zexecd.service")
grep -q '^ExecStart=/usr/bin/zexecd .*--config /etc/zexec/zexecd.toml' <<<"$unit" || fail "ExecStart: $(grep ExecStart <<<"$unit")"
grep -q '^Type=notify' <<<"$unit" || fail "the unit is not Type=notify"

# --- the packaged programs run (against the packaged libraries), the man pages render
export LD_LIBRARY_PATH=$work/root/$lib
grep -q '^zexecd ' <<<"$("$work/root/usr/bin/zexecd" --version)" || fail "zexecd --version"
grep -q 'usage: zexec' <<<"$("$work/root/usr/bin/zexec" --help 2>&1)" || fail "zexec --help"
grep -q 'echo(x)' <<<"$("$work/root/usr/bin/zexec-worker" --help)" || fail "zexec-worker --help"
grep -q "libzexec.so.0 => $work/root/$lib/" <<<"$(ldd "$work/root/usr/bin/zexec")" || fail "zexec does not use the packaged libzexec"
unset LD_LIBRARY_PATH
PYTHONPATH="$work/root/usr/lib/python3/dist-packages" /usr/bin/python3 -c 'import zexec, zexec.worker; zexec.Executor' ||
  fail "the packaged Python module does not import"
# Its metadata: importlib.metadata (and pip list) know the package and its version.
pyver=$(PYTHONPATH="$work/root/usr/lib/python3/dist-packages" /usr/bin/python3 -c 'import importlib.metadata as m; print(m.version("zexec"))')
[ "$pyver" = "$version" ] || fail "importlib.metadata.version('zexec') is '$pyver', not $version"
for page in usr/share/man/man8/zexecd.8.gz usr/share/man/man1/zexec.1.gz usr/share/man/man1/zexec-worker.1.gz; do
  warnings=$(zcat "$work/root/$page" | groff -man -ww -z 2>&1)
  [ -z "$warnings" ] || fail "$page: $warnings"
done
# The daemon's page lists every flag its --help does.
zcat "$work/root/usr/share/man/man8/zexecd.8.gz" | groff -man -Tascii 2>/dev/null | sed 's/.\x08//g' >"$work/zexecd.8.txt"
for flag in $(LD_LIBRARY_PATH=$work/root/$lib "$work/root/usr/bin/zexecd" --help | grep -o '^  --[a-z-]*' | tr -d ' '); do
  grep -q -- "$flag" "$work/zexecd.8.txt" || fail "zexecd(8) does not document $flag"
done

# --- libzexec-dev as a producer's build uses it, on the unpacked packages: find_package(zexec)
# (its files locate the headers and libraries relative to themselves) and pkg-config (through
# its sysroot). Both must link libzexec.so.0, and the program's embedded Executor runs the
# packaged zexecd, which runs the packaged zexec-worker.
cmake -S "$src/tests/consumer" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$work/root/usr" >"$work/cmake.log" ||
  { cat "$work/cmake.log"; fail "find_package(zexec) from libzexec-dev"; }
grep -q "zexec config: $work/root$lib/cmake/zexec/" "$work/cmake.log" || fail "found another zexec: $(grep 'zexec config' "$work/cmake.log")"
cmake --build "$work/consumer" -j2 >"$work/build.log" || { cat "$work/build.log"; fail "building against libzexec-dev"; }
pc_flags=$(PKG_CONFIG_SYSROOT_DIR="$work/root" PKG_CONFIG_LIBDIR="$work/root$lib/pkgconfig" pkg-config --cflags --libs zexec)
# shellcheck disable=SC2086
g++ -std=c++20 "$src/tests/consumer/main.cpp" -o "$work/consumer-pc" $pc_flags || fail "building with pkg-config zexec: $pc_flags"
for program in "$work/consumer/consumer" "$work/consumer-pc"; do
  grep -q 'NEEDED.*\[libzexec\.so\.0\]' <<<"$(readelf -d "$program")" || fail "$program does not link libzexec.so.0"
  out=$(LD_LIBRARY_PATH="$work/root$lib" ZEXEC_DAEMON="$work/root/usr/bin/zexecd" timeout 120 "$program" 2>&1) ||
    fail "$program against the packages: $out"
  grep -q 'sum 100' <<<"$out" || fail "$program: $out"
  grep -q 'task error: fail: ' <<<"$out" || fail "$program did not catch the TaskError libzexec threw: $out"
done

# --- lintian: no error and no warning (the informational tags are printed, not fatal)
if ! lintian --fail-on error,warning --display-info --show-overrides "${deb[@]}" >"$work/lintian" 2>&1; then
  cat "$work/lintian"
  fail "lintian reports errors or warnings (above)"
fi
grep -v 'running with root privileges' "$work/lintian" || true
echo "packages ok: ${deb[*]##*/}"
