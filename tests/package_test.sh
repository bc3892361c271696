#!/bin/bash
# The .deb built by `make package`: what it installs, what it depends on, and that installing it
# starts nothing. Its maintainer scripts run here against stand-ins for systemctl and
# systemd-sysusers that record how they were called (this test must not change the machine).
#   usage: package_test.sh DEB_BUILD_DIR SOURCE_DIR
set -euo pipefail
deb_dir=$1
src=$2
fail() { echo "FAIL: $*" >&2; exit 1; }

shopt -s nullglob
debs=("$deb_dir"/zexec_*.deb)
[ ${#debs[@]} -eq 1 ] || fail "expected one zexec_*.deb in $deb_dir (run 'make package'), found ${#debs[@]}"
deb=${debs[0]}
[ "$deb" -nt "$src/CMakeLists.txt" ] || fail "$deb is older than the sources: run 'make package'"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- contents: every file an operator and a developer need, at Debian's paths
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' > "$work/files"
for f in /usr/bin/zexecd /usr/bin/zexec /usr/bin/zexec-worker \
         /usr/lib/systemd/system/zexecd.service /usr/lib/sysusers.d/zexec.conf /etc/zexec/zexecd.toml \
         /usr/share/man/man8/zexecd.8.gz /usr/share/man/man1/zexec.1.gz \
         /usr/include/zexec/client.hpp /usr/include/zexec/worker.hpp /usr/include/zexec/protocol.hpp \
         /usr/lib/x86_64-linux-gnu/cmake/zexec/zexecConfig.cmake /usr/lib/x86_64-linux-gnu/pkgconfig/zexec.pc \
         /usr/share/doc/zexec/PROTOCOL.md /usr/lib/python3/dist-packages/zexec/__init__.py \
         /usr/lib/python3/dist-packages/zexec/worker.py; do
  grep -qx "$f" "$work/files" || fail "the package lacks $f"
done
if grep -q '^/usr/local\|^/usr/etc' "$work/files"; then fail "files outside Debian's paths: $(grep '^/usr/local\|^/usr/etc' "$work/files")"; fi

# --- control: name, shared-library dependencies found by dpkg-shlibdeps, the config is a conffile
[ "$(dpkg-deb -f "$deb" Package)" = zexec ] || fail "package name"
depends=$(dpkg-deb -f "$deb" Depends)
for d in libzmq5 libsystemd0 libstdc++6 systemd; do
  [[ $depends == *"$d"* ]] || fail "Depends lacks $d: $depends"
done
dpkg-deb -e "$deb" "$work/control"
grep -qx /etc/zexec/zexecd.toml "$work/control/conffiles" || fail "zexecd.toml is not a conffile"

# --- the unit points at the packaged files
unit=$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/lib/systemd/system/zexecd.service)
grep -q '^ExecStart=/usr/bin/zexecd .*--config /etc/zexec/zexecd.toml' <<<"$unit" || fail "ExecStart: $(grep ExecStart <<<"$unit")"
grep -q '^Type=notify' <<<"$unit" || fail "the unit is not Type=notify"

# --- maintainer scripts: create the user, reload units, start nothing
mkdir -p "$work/bin"
for tool in systemctl systemd-sysusers deb-systemd-invoke deb-systemd-helper invoke-rc.d; do
  printf '#!/bin/sh\necho "%s $*" >> "%s/calls"\n' "$tool" "$work" > "$work/bin/$tool"
  chmod +x "$work/bin/$tool"
done
PATH="$work/bin:$PATH" sh -e "$work/control/postinst" configure
PATH="$work/bin:$PATH" sh -e "$work/control/postinst" configure 0.0.1  # an upgrade
grep -qx 'systemd-sysusers zexec.conf' "$work/calls" || fail "postinst did not create the zexec user: $(cat "$work/calls")"
if grep -Eq ' (start|restart|try-restart|enable|reload-or-restart)( |$)' "$work/calls"; then
  fail "installing starts something: $(cat "$work/calls")"
fi
PATH="$work/bin:$PATH" sh -e "$work/control/prerm" upgrade 0.2.0
if grep -q 'stop' "$work/calls"; then fail "an upgrade stops the service: $(cat "$work/calls")"; fi

# --- the packaged programs run, and their man pages render without warnings
mkdir "$work/root"
dpkg-deb -x "$deb" "$work/root"
"$work/root/usr/bin/zexecd" --version | grep -q "^zexecd " || fail "zexecd --version"
"$work/root/usr/bin/zexec" --help 2>&1 | grep -q 'usage: zexec' || fail "zexec --help"
# The Python package imports from where the package put it (Debian's python3 looks there).
PYTHONPATH="$work/root/usr/lib/python3/dist-packages" /usr/bin/python3 -c 'import zexec, zexec.worker; zexec.Executor' \
  || fail "the packaged Python module does not import"
for page in usr/share/man/man8/zexecd.8.gz usr/share/man/man1/zexec.1.gz; do
  warnings=$(zcat "$work/root/$page" | groff -man -ww -z 2>&1)
  [ -z "$warnings" ] || fail "$page: $warnings"
done
# The daemon's page lists every flag its --help does.
zcat "$work/root/usr/share/man/man8/zexecd.8.gz" | groff -man -Tascii 2>/dev/null | sed 's/.\x08//g' > "$work/zexecd.8.txt"
for flag in $("$work/root/usr/bin/zexecd" --help | grep -o '^  --[a-z-]*' | tr -d ' '); do
  grep -q -- "$flag" "$work/zexecd.8.txt" || fail "zexecd(8) does not document $flag"
done
echo "package ok: $(basename "$deb"), $(wc -l < "$work/files") entries, Depends: $depends"
