// Every message of protocol version 1, named once.
//
//   X(Struct, name, number)    Struct: its C++ type (protocol.hpp); name: its Type enumerator
//                              and type_name(); number: its type on the wire
//
// This list makes the Type enum and the Message variant (protocol.hpp), type_of(), type_name()
// and the decoder's dispatch (protocol.cpp). A message's fields, in wire order, are in its
// field table (protocol/src/message_fields.hpp), which drives its encoding and decoding.
// Adding a message: a line here, its struct, its field table, a vector in tests/vectors.
//
// The order is the Message variant's and must stay: a default Message is a Hello, and code may
// hold a variant index. Type numbers are grouped by socket (docs/PROTOCOL.md §2).
#pragma once

#define ZEXEC_PROTO_MESSAGES(X)                                                                    \
  /* client (DEALER) <-> daemon (ROUTER, the public endpoint) */                                   \
  X(Hello, hello, 1)               /* client -> daemon: first message */                           \
  X(Welcome, welcome, 2)           /* daemon -> client: client id, results endpoint, limits */     \
  X(Submit, submit, 3)             /* client -> daemon: a batch of tasks */                        \
  X(Cancel, cancel, 4)             /* client -> daemon: cancel request for some tasks */           \
  X(CancelReply, cancel_reply, 5)  /* daemon -> client: one outcome per task of a cancel */        \
  X(Ack, ack, 6)                   /* client -> daemon: updates up to seq are processed */         \
  X(Heartbeat, heartbeat, 7)       /* both ways: "I am alive" */                                   \
  X(Bye, bye, 8)                   /* client -> daemon: drop everything of mine */                 \
  X(Error, error, 9)               /* daemon -> client: the daemon refused what it got */          \
  X(Status, status, 11)            /* anyone -> daemon: what are you doing? (no hello) */          \
  X(StatusReply, status_reply, 12) /* daemon -> asker: a msgpack map of state and counters */      \
  X(Drain, drain, 13)              /* anyone -> daemon: stop as on SIGTERM (-> status_reply) */    \
  X(AdminCancel, admin_cancel, 14) /* anyone -> daemon: cancel another client's tasks */           \
  /* daemon (PUSH, one per client) -> client (PULL) */                                             \
  X(Update, update, 10) /* task events: started / ok / error / cancelled */                        \
  /* worker (PUSH) -> daemon (PULL, shared by all workers) */                                      \
  X(WorkerHello, worker_hello, 20)     /* first message of a worker: pid, capacity, task names */  \
  X(WorkerEvents, worker_events, 21)   /* started + finished tasks; an empty one is a heartbeat */ \
  X(WorkerRevoked, worker_revoked, 22) /* answer to revoke: the tasks given back unstarted */      \
  /* daemon (PUSH, one per worker) -> worker (PULL) */                                             \
  X(Tasks, tasks, 30)       /* a batch of tasks to run in order */                                 \
  X(Revoke, revoke, 31)     /* give these back if not started yet */                               \
  X(Shutdown, shutdown, 32) /* finish the running task, then exit */
