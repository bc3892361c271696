// Who may connect to a client's results socket (PROTOCOL.md §2, "Client handshake and the
// per-client results socket").
//
// The results endpoint is a secret the client learns in `welcome`: an ipc socket under a random
// token in a directory of this daemon run that nobody can list, or an ephemeral tcp port. As a
// second line, every results PUSH has a ZAP domain, so libzmq asks the handler here before it
// lets any peer finish its handshake: the first peer is let in and remembered, a later one only
// when it is that same peer again (the same process on ipc, whose credentials the kernel gives:
// SO_PEERCRED; the same host on tcp). Anyone else is refused before a single message can reach
// it, warned about and counted (status: totals.results_intruders); the client goes on unharmed.
//
// Cost: one ROUTER socket for the whole daemon (its mailbox eventfd), no descriptor per client:
// ZAP requests travel over inproc pipes.
#include <spdlog/spdlog.h>
#include <sys/random.h>

#include <random>

#include "broker.hpp"

namespace zexecd {

std::uint64_t Broker::random_u64() {
  std::uint64_t v = 0;
  if (getrandom(&v, sizeof v, 0) == static_cast<ssize_t>(sizeof v)) return v;
  std::random_device rd;  // getrandom() unavailable (an old kernel, a seccomp filter)
  return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
}

void Broker::open_results_guard() {
  zap_ = zmq::socket_t(ctx_, zmq::socket_type::router);
  zap_.set(zmq::sockopt::linger, 0);
  zap_.bind("inproc://zeromq.zap.01");
}

namespace {
constexpr std::string_view kZapDomainPrefix = "zexec-results-";
}

std::string Broker::results_zap_domain(std::uint64_t client_id) {
  return std::string(kZapDomainPrefix) + std::to_string(client_id);
}

void Broker::read_zap() {
  for (int n = 0; n < kReadBudget; ++n) {
    // ROUTER: [peer][empty][version][request id][domain][address][routing id][mechanism]...
    std::vector<zmq::message_t> req;
    zmq::message_t part;
    if (!recv_now(zap_, part)) return;
    req.push_back(std::move(part));
    while (req.back().more()) {
      zmq::message_t next;
      if (!recv_rest(zap_, next)) break;
      req.push_back(std::move(next));
    }
    if (req.size() < 6) continue;  // not a ZAP request: libzmq sends none such
    std::string domain = req[4].to_string(), address = req[5].to_string();
    bool ok = false;
    Client* c = nullptr;
    if (domain.rfind(kZapDomainPrefix, 0) == 0) {
      try {
        c = find_client(std::stoull(domain.substr(kZapDomainPrefix.size())));
      } catch (const std::exception&) {
      }
    }
    if (c) {
      if (c->results_peer.empty()) c->results_peer = address;
      ok = c->results_peer == address;
      if (!ok) {
        ++results_intruders_;
        if ((results_intruders_ & (results_intruders_ - 1)) == 0)  // the 1st, 2nd, 4th...
          spdlog::warn(
              "client {} ('{}' pid {}): refused a second peer on its results socket ({}; the client's "
              "is {}): it gets none of the client's results ({} refused so far)",
              c->id, c->name, c->pid, address.empty() ? "address unknown" : address, c->results_peer,
              results_intruders_);
      }
    }
    // Not a results socket's domain: not ours to judge (libzmq asks only for sockets that set a
    // ZAP domain, but a version that asks for every NULL-mechanism socket must not lose them).
    if (domain.rfind(kZapDomainPrefix, 0) != 0) ok = true;
    // A client already gone: its socket is closed too; nothing to let in.
    std::string_view code = ok ? "200" : "400";
    std::string_view text = ok ? "OK" : "not this client's results socket";
    zap_.send(req[0], zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    zap_.send(zmq::buffer(std::string_view()), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    zap_.send(zmq::buffer(std::string_view("1.0")), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    zap_.send(req[3], zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    zap_.send(zmq::buffer(code), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    zap_.send(zmq::buffer(text), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    zap_.send(zmq::buffer(std::string_view()), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    zap_.send(zmq::buffer(std::string_view()), zmq::send_flags::dontwait);
  }
}

}  // namespace zexecd
