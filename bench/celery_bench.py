"""Celery + Redis doing zexec's no-op work: an optional peer in bench/run.py's table.

    /usr/bin/python3 bench/celery_bench.py [--workers 2] [--tasks 2000] [--latency 300]

Starts a private redis-server (127.0.0.1, a free port, no persistence) and a Celery worker
(prefork pool of --workers processes), then: throughput = noop.delay() x tasks, then every
result; latency = sequential noop.delay().get(). Prints one JSON line; stops both at the end.
This file is also the Celery app the worker imports (-A celery_bench).
"""
import argparse
import json
import gc
import os
import signal
import socket
import subprocess
import sys
import time

from celery import Celery

app = Celery("celery_bench", broker=os.environ.get("ZEXEC_BENCH_REDIS", "redis://127.0.0.1:6379/0"),
             backend=os.environ.get("ZEXEC_BENCH_REDIS", "redis://127.0.0.1:6379/0"))
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)


@app.task
def noop():
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, p):
    v = sorted(values)
    rank = min(max(int(p / 100.0 * len(v) + 0.5), 1), len(v))
    return v[rank - 1]


def stop(proc, grace=10):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_group(proc, grace=3):
    """The worker and its pool processes: SIGTERM to the group, SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--latency", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--redis-server", default="/usr/bin/redis-server")
    a = ap.parse_args()

    port = free_port()
    url = "redis://127.0.0.1:%d/0" % port
    redis = subprocess.Popen([a.redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
                             stdout=subprocess.DEVNULL)
    worker = None
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.time() > deadline or redis.poll() is not None:
                    raise SystemExit("redis-server did not start")
                time.sleep(0.05)
        env = dict(os.environ, ZEXEC_BENCH_REDIS=url, PYTHONDONTWRITEBYTECODE="1", C_FORCE_ROOT="1",
                   PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "celery_bench", "worker",
                                   "--concurrency", str(a.workers), "--pool", "prefork", "--loglevel", "WARNING",
                                   "--without-gossip", "--without-mingle", "--without-heartbeat"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        app.conf.broker_url = url
        app.conf.result_backend = url
        for r in [noop.delay() for _ in range(a.warmup)]:
            r.get(timeout=60)

        t0 = time.perf_counter()
        results = [noop.delay() for _ in range(a.tasks)]
        for r in results:
            r.get(timeout=300)
        seconds = time.perf_counter() - t0

        rtts = []
        for i in range(a.latency + a.latency // 10):
            t = time.perf_counter()
            noop.delay().get(timeout=60)
            if i >= a.latency // 10:
                rtts.append((time.perf_counter() - t) * 1e6)
        print(json.dumps({"workers": a.workers, "tasks": a.tasks, "seconds": seconds,
                          "tasks_per_s": a.tasks / seconds, "rtt_median_us": percentile(rtts, 50),
                          "rtt_p99_us": percentile(rtts, 99)}), flush=True)
        del results, r  # no AsyncResult may outlive redis (its __del__ talks to it)
        gc.collect()
    finally:
        if worker:
            stop_group(worker)
        stop(redis)


if __name__ == "__main__":
    main()
