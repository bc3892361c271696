"""Finding and running a private zexecd for the embedded ``Executor(workers=N)``.

The daemon is tied to this process three ways, so that it never outlives it: we stop it at
shutdown (SIGTERM, then SIGKILL after a deadline), at interpreter exit (weakref.finalize in the
executor), and the kernel sends it SIGTERM if we die anyhow (PR_SET_PDEATHSIG).
"""

import ctypes
import os
import queue
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from ._errors import Error

__all__ = ["find_daemon", "DaemonProcess", "make_private_dir"]

_PR_SET_PDEATHSIG = 1


_keeper_lock = threading.Lock()
_keeper_jobs = None  # queue.Queue of the keeper thread, once started


def _in_long_lived_thread(fn):
    """Runs fn() (a fork) in a thread that lives as long as the process.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process: an
    Executor created in a short-lived thread would otherwise lose its daemon with that thread.
    The main thread lives as long as the process; other threads hand the fork to a keeper."""
    global _keeper_jobs
    if threading.current_thread() is threading.main_thread():
        return fn()
    with _keeper_lock:
        if _keeper_jobs is None:
            _keeper_jobs = queue.Queue()

            def keeper(jobs=_keeper_jobs):
                while True:
                    job, box, done = jobs.get()
                    try:
                        box.append((True, job()))
                    except BaseException as e:  # noqa: BLE001 - handed to the caller
                        box.append((False, e))
                    done.set()

            threading.Thread(target=keeper, name="zexec-daemon-keeper", daemon=True).start()
        jobs = _keeper_jobs
    box, done = [], threading.Event()
    jobs.put((fn, box, done))
    done.wait()
    ok, value = box[0]
    if not ok:
        raise value
    return value


def _executable(path):
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)


def find_daemon(explicit=None):
    """The zexecd to run: ``explicit``, else ``$ZEXEC_DAEMON``, else ``zexecd`` on ``$PATH``,
    else the build tree next to this package (``<repo>/build/bin/zexecd``).

    An explicit choice that is wrong is an error, not a reason to run some other zexecd."""
    if explicit:
        if not _executable(explicit):
            raise Error(f"zexecd not found: {explicit!r} is not an executable file")
        return explicit
    env = os.environ.get("ZEXEC_DAEMON")
    if env:
        if not _executable(env):
            raise Error(f"zexecd not found: $ZEXEC_DAEMON={env!r} is not an executable file")
        return env
    on_path = shutil.which("zexecd")
    if on_path:
        return on_path
    # client-lib/python/zexec/_daemon.py -> <repo>/build/bin/zexecd
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    built = os.path.join(repo, "build", "bin", "zexecd")
    if _executable(built):
        return built
    raise Error("zexecd not found: set $ZEXEC_DAEMON, pass daemon=PATH, or put zexecd on $PATH "
                f"(also looked at {built})")


def make_private_dir():
    """A fresh 0700 directory for the daemon's ipc sockets. ipc paths are limited to ~107 bytes,
    so a deep $TMPDIR falls back to /tmp."""
    base = tempfile.gettempdir()
    if len(base) > 60:
        base = "/tmp"
    return tempfile.mkdtemp(prefix="zexec-", dir=base)


def _describe(status):
    if status is None:
        return "is running"
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = str(-status)
        return f"was killed by signal {-status} ({name})"
    return f"exited with status {status}"


class DaemonProcess:
    """A zexecd child started with --print-endpoint; ``endpoint`` is what it printed."""

    def __init__(self, argv, start_timeout=10.0, env=None):
        self.argv = list(argv)
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl  # looked up before fork: the child only calls it
        parent = os.getpid()

        def tie_to_parent():
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != parent:  # we died before prctl took effect
                os._exit(1)

        try:
            self.proc = _in_long_lived_thread(lambda: subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, preexec_fn=tie_to_parent,
                close_fds=True, env=env))
        except OSError as e:
            raise Error(f"cannot run zexecd {self.argv[0]!r}: {e}") from None
        try:
            self.endpoint, rest = self._read_endpoint(start_timeout)
        except BaseException:
            self.stop(2.0)
            raise
        # Workers share the daemon's stdout: what tasks print must go on to ours, as it does
        # with ProcessPoolExecutor, and a pipe nobody reads would block them once it is full.
        self._forwarder = threading.Thread(target=self._forward_output, args=(rest,), daemon=True,
                                           name="zexecd-stdout")
        self._forwarder.start()

    def _forward_output(self, first):
        out = self.proc.stdout
        try:
            if first:
                os.write(1, first)
            while True:
                chunk = os.read(out.fileno(), 65536)
                if not chunk:
                    break
                try:
                    os.write(1, chunk)
                except OSError:
                    pass  # our stdout is gone: keep draining so the workers never block
        except (OSError, ValueError):
            pass
        finally:
            try:
                out.close()
            except OSError:
                pass

    @property
    def pid(self):
        return self.proc.pid

    def _read_endpoint(self, timeout):
        deadline = time.monotonic() + timeout
        out = self.proc.stdout
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(out, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Error(f"zexecd ({self.argv[0]}) printed no endpoint within {timeout:g} s")
                if not sel.select(left):
                    continue
                chunk = os.read(out.fileno(), 4096)
                if not chunk:
                    status = self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                    raise Error(f"zexecd ({' '.join(self.argv)}) {_describe(status)} before serving "
                                "(its error is on stderr above)")
                buf += chunk
        line, _, rest = buf.partition(b"\n")
        return line.decode().strip(), rest

    def exited(self):
        """None while running, else how it ended (text)."""
        status = self.proc.poll()
        return None if status is None else _describe(status)

    def stop(self, timeout=10.0):
        """SIGTERM (the daemon finishes running tasks, cancels queued ones, exits 0), then
        SIGKILL when it takes longer than ``timeout``. Returns the exit status."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        forwarder = getattr(self, "_forwarder", None)
        if forwarder is not None:
            forwarder.join(1.0)  # EOF once the daemon and its workers are gone
        elif self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode
