#!/usr/bin/env bash
# The Python package as pip installs it: a venv over Debian's python3 that sees its pyzmq and
# msgpack (--system-site-packages), `pip install` offline with Debian's setuptools as the backend
# (--no-build-isolation --no-index: there is no PyPI here), then `import zexec` from outside the
# source tree must load the venv's copy, with py.typed and resolvable type hints, and run a task
# on this build's zexecd.
#   usage: python_packaging.sh ZEXEC_SOURCE_DIR     (ZEXEC_DAEMON: the zexecd to run the task on)
set -euo pipefail
src=$1
fail() { echo "FAIL: $*" >&2; exit 1; }
[ -x "${ZEXEC_DAEMON:-}" ] || fail "ZEXEC_DAEMON must name a built zexecd (ctest sets it)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# pip builds in the tree it is given (build/, *.egg-info): a copy keeps the sources clean and
# parallel runs apart.
cp -r "$src/client-lib/python" "$work/src"
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
/usr/bin/python3 -m venv --system-site-packages "$work/venv" || fail "venv (Debian: python3-venv)"
"$work/venv/bin/python" -m pip install --no-build-isolation --no-index --no-cache-dir \
  --disable-pip-version-check -q "$work/src" >"$work/log" 2>&1 || { cat "$work/log"; fail "pip install"; }
rm -rf "$work/src"  # nothing may still come from the copy
cd "$work"
env -u PYTHONPATH PYTHONDONTWRITEBYTECODE=1 PYTHONNOUSERSITE=1 timeout 120 "$work/venv/bin/python" - "$src" <<'PY'
import importlib.metadata
import os
import sys
import sysconfig

src = sys.argv[1]
site = sysconfig.get_paths()["purelib"]
assert site.startswith(sys.prefix) and sys.prefix != sys.base_prefix, (site, sys.prefix)
import zexec
import zexec.worker

pkg = os.path.dirname(os.path.abspath(zexec.__file__))
assert pkg == os.path.join(site, "zexec"), f"zexec imported from {pkg}, not the venv's {site}"
assert os.path.isfile(os.path.join(pkg, "py.typed")), "py.typed was not installed"
assert importlib.metadata.version("zexec") == "0.1.0"
# Every module of the source package was installed (a module left out fails only when imported).
want = {f for f in os.listdir(os.path.join(src, "client-lib/python/zexec")) if f.endswith(".py")}
have = {f for f in os.listdir(pkg) if f.endswith(".py")}
assert want == have, f"installed {sorted(have)}, the source has {sorted(want)}"
# The dependencies are Debian's, seen through --system-site-packages, not copies pip made.
import msgpack
import zmq

for m in (zmq, msgpack):
    assert not os.path.abspath(m.__file__).startswith(sys.prefix), f"{m.__name__} from {m.__file__}"
# The public API is annotated, and every annotation resolves (a hint naming something that does
# not exist would only show up in a user's type checker).
import typing

for fn in (zexec.status, zexec.Executor.__init__, zexec.Executor.submit, zexec.Executor.map,
           zexec.Executor.task, zexec.Executor.shutdown, zexec.TaskHandle.submit, zexec.TaskHandle.map,
           zexec.Future.cancel, zexec.worker.task, zexec.worker.serve, zexec.worker.run, zexec.worker.command):
    assert "return" in typing.get_type_hints(fn), f"{fn.__qualname__} has no return annotation"
assert typing.get_type_hints(zexec.Future) == {"task_id": int, "task_name": str}
with zexec.Executor(workers=1) as ex:
    assert ex.submit("echo", 41).result(60) == 41
print(f"zexec {importlib.metadata.version('zexec')} from {pkg}: py.typed installed, a task ran")
PY
