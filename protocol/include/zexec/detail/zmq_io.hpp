// Non-blocking ZeroMQ I/O for event loops (daemon, client, worker). "Not now" is false, never an exception:
// EAGAIN (the pipe is full or empty) and EINTR (a signal - SIGCHLD arrives often - interrupted the call). The
// later parts of a multipart message are already there once the first part is, so those are retried through
// EINTR instead: giving up half way would split a message.
#pragma once

#include <cerrno>
#include <zmq.hpp>

namespace zexec::detail {

inline bool send_now(zmq::socket_t& s, zmq::const_buffer b, zmq::send_flags more = zmq::send_flags::none) {
  try {
    return s.send(b, more | zmq::send_flags::dontwait).has_value();
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return false;
    throw;
  }
}

// Sends `m` (consumed on success, untouched when not sent).
inline bool send_now(zmq::socket_t& s, zmq::message_t& m, zmq::send_flags more = zmq::send_flags::none) {
  try {
    return s.send(m, more | zmq::send_flags::dontwait).has_value();
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return false;
    throw;
  }
}

inline bool recv_now(zmq::socket_t& s, zmq::message_t& m) {
  try {
    return s.recv(m, zmq::recv_flags::dontwait).has_value();
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return false;
    throw;
  }
}

// The next part of a multipart message already begun.
inline bool recv_rest(zmq::socket_t& s, zmq::message_t& m) {
  for (;;) {
    try {
      return s.recv(m, zmq::recv_flags::dontwait).has_value();
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
  }
}

inline void send_rest(zmq::socket_t& s, zmq::const_buffer b) {
  for (;;) {
    try {
      s.send(b, zmq::send_flags::dontwait);
      return;
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
  }
}

}  // namespace zexec::detail
