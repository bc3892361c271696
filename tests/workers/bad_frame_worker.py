#!/usr/bin/python3
"""A worker written from PROTOCOL.md with one mistake, chosen by argv[1]. It says hello and
heartbeats like any worker, and answers the tasks it gets with a frame the daemon must refuse:

  float_id   the task id encoded as a float (what a JavaScript-style encoder does with 2^32+)
  short      an ok event without its value
  truncated  a well-formed worker_events frame cut short
  multipart  the events in two frames
  hello      its hello already is bad (the capacity a string): it never becomes ready

Used to check that every task it was given still gets a final outcome (PROTOCOL.md section 6)."""
import os
import sys

import msgpack
import zmq

mode = sys.argv[1]
ctx = zmq.Context()
tasks = ctx.socket(zmq.PULL)
tasks.connect(os.environ["ZEXEC_TASKS_ENDPOINT"])
events = ctx.socket(zmq.PUSH)
events.connect(os.environ["ZEXEC_EVENTS_ENDPOINT"])
wid = int(os.environ["ZEXEC_WORKER_ID"])

capacity = "16" if mode == "hello" else 16
events.send(msgpack.packb([1, 20, wid, os.getpid(), capacity, ["echo"]]))


def answer(handle):
    if mode == "float_id":
        return [msgpack.packb([1, 21, wid, 0, [[float(handle), 0], [float(handle), 1, b"\xc0"]]])]
    if mode == "short":
        return [msgpack.packb([1, 21, wid, 0, [[handle, 0], [handle, 1]]])]
    good = msgpack.packb([1, 21, wid, 0, [[handle, 0], [handle, 1, b"\xc0"]]])
    if mode == "truncated":
        return [good[: len(good) - 2]]
    return [good[:5], good[5:]]  # multipart


poller = zmq.Poller()
poller.register(tasks, zmq.POLLIN)
while True:
    if not poller.poll(100):
        events.send(msgpack.packb([1, 21, wid, 0, []]))  # heartbeat: it looks alive throughout
        continue
    msg = msgpack.unpackb(tasks.recv())
    if msg[1] == 32:  # shutdown
        break
    if msg[1] != 30:
        continue
    for handle, *rest in msg[2]:
        events.send_multipart(answer(handle))
events.close(linger=1000)
