#!/usr/bin/python3
"""A worker that first sends garbage on the daemon's events socket, then behaves: it speaks
docs/PROTOCOL.md section 4 and runs `echo`. Used to check that zexecd survives bad worker frames."""
import os
import time

import msgpack
import zmq

ctx = zmq.Context()
tasks = ctx.socket(zmq.PULL)
tasks.connect(os.environ["ZEXEC_TASKS_ENDPOINT"])
events = ctx.socket(zmq.PUSH)
events.connect(os.environ["ZEXEC_EVENTS_ENDPOINT"])
wid = int(os.environ["ZEXEC_WORKER_ID"])

# Garbage of every kind: not msgpack, wrong version, unknown type, a client's message, two frames.
events.send(b"\xc1\xc1 not msgpack")
events.send(msgpack.packb([9, 21, wid, 0, []]))
events.send(msgpack.packb([1, 99]))
events.send(msgpack.packb([1, 3, [[1, "echo", msgpack.packb([1])]]]))
events.send_multipart([b"a", b"b"])
events.send(msgpack.packb([1, 21, wid, 0, [[12345, 1, b"\xc0"]]]))  # an event for a task it never had

events.send(msgpack.packb([1, 20, wid, os.getpid(), 16, ["echo"]]))
poller = zmq.Poller()
poller.register(tasks, zmq.POLLIN)
while True:
    if not poller.poll(500):
        events.send(msgpack.packb([1, 21, wid, 0, []]))  # heartbeat
        continue
    msg = msgpack.unpackb(tasks.recv())
    if msg[1] == 32:  # shutdown
        break
    if msg[1] != 30:
        continue
    out = []
    for handle, name, args, *rest in msg[2]:
        out.append([handle, 0])
        out.append([handle, 1, msgpack.packb(msgpack.unpackb(args)[0])])
    events.send(msgpack.packb([1, 21, wid, 1, out]))
events.close(linger=1000)
