// The raw ZeroMQ limit zexec is measured against: a minimal PUSH/PULL relay
//
//   client --PUSH--> broker --PUSH--> worker(s) --PUSH--> broker --PUSH--> client
//
// in separate processes, over ipc or tcp loopback. The broker is what zexecd is with everything
// but the relaying taken out: single-threaded, poll-driven, every send non-blocking, and a
// message that would block is held and sent when poll reports POLLOUT (POLLOUT-gated). Workers
// echo each message back unchanged. No msgpack, no task table, no acks: this is the ceiling.
//
//   zexec-raw-relay [--transport ipc|tcp] [--workers 2] [--size 8] [--count 1000000]
//                   [--window 10000] [--latency 5000] [--warmup 20000]
//     starts the broker and the workers, then, as the client:
//       throughput: `count` round trips pipelined with at most `window` in flight;
//       latency:    `latency` round trips one at a time (median, p99, in microseconds).
//     Prints one JSON line: round_trips_per_s, rtt_median_us, rtt_p99_us, ...
//   zexec-raw-relay broker --front-in EP --front-out EP --back-out EP --back-in EP
//     binds the four sockets, prints their resolved endpoints on one line, relays forever.
//   zexec-raw-relay worker --in EP --out EP
#include <csignal>
#include <cstring>
#include <deque>
#include <zmq.hpp>

#include "bench_util.hpp"

namespace {

using bench::Args;
using bench::Clock;

constexpr int kReadBudget = 256;  // as zexecd: messages per socket per loop turn

// Sends what is held on `s`, oldest first, until one would block.
void flush(zmq::socket_t& s, std::deque<zmq::message_t>& held) {
  while (!held.empty()) {
    if (!s.send(held.front(), zmq::send_flags::dontwait)) return;
    held.pop_front();
  }
}

// Takes up to kReadBudget messages from `in` and passes them to `out`, holding what would block.
void relay(zmq::socket_t& in, zmq::socket_t& out, std::deque<zmq::message_t>& held) {
  for (int i = 0; i < kReadBudget; ++i) {
    zmq::message_t m;
    if (!in.recv(m, zmq::recv_flags::dontwait)) return;
    if (held.empty() && out.send(m, zmq::send_flags::dontwait)) continue;
    held.push_back(std::move(m));
  }
}

int run_broker(const Args& a) {
  zmq::context_t ctx(1);
  zmq::socket_t front_in(ctx, zmq::socket_type::pull), front_out(ctx, zmq::socket_type::push);
  zmq::socket_t back_out(ctx, zmq::socket_type::push), back_in(ctx, zmq::socket_type::pull);
  zmq::socket_t* socks[] = {&front_in, &front_out, &back_out, &back_in};
  const char* names[] = {"front-in", "front-out", "back-out", "back-in"};
  std::string line;
  for (int i = 0; i < 4; ++i) {
    socks[i]->set(zmq::sockopt::linger, 0);
    socks[i]->bind(a.str(names[i], ""));
    if (i) line += ' ';
    line += socks[i]->get(zmq::sockopt::last_endpoint);
  }
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);

  std::deque<zmq::message_t> to_workers, to_client;
  for (;;) {
    zmq::pollitem_t items[4] = {
        {front_in.handle(), 0, ZMQ_POLLIN, 0},
        {back_in.handle(), 0, ZMQ_POLLIN, 0},
        {back_out.handle(), 0, static_cast<short>(to_workers.empty() ? 0 : ZMQ_POLLOUT), 0},
        {front_out.handle(), 0, static_cast<short>(to_client.empty() ? 0 : ZMQ_POLLOUT), 0},
    };
    zmq::poll(items, 4, std::chrono::milliseconds(-1));
    if (items[1].revents & ZMQ_POLLIN) relay(back_in, front_out, to_client);
    if (items[0].revents & ZMQ_POLLIN) relay(front_in, back_out, to_workers);
    if (items[2].revents & ZMQ_POLLOUT) flush(back_out, to_workers);
    if (items[3].revents & ZMQ_POLLOUT) flush(front_out, to_client);
  }
}

int run_worker(const Args& a) {
  zmq::context_t ctx(1);
  zmq::socket_t in(ctx, zmq::socket_type::pull), out(ctx, zmq::socket_type::push);
  in.set(zmq::sockopt::linger, 0);
  out.set(zmq::sockopt::linger, 0);
  in.connect(a.str("in", ""));
  out.connect(a.str("out", ""));
  for (;;) {
    zmq::message_t m;
    if (!in.recv(m)) continue;
    out.send(m, zmq::send_flags::none);
  }
}

int run_client(const Args& a, const std::string& self) {
  std::string transport = a.str("transport", "ipc");
  int workers = static_cast<int>(a.num("workers", 2));
  std::size_t size = static_cast<std::size_t>(std::max(8L, a.num("size", 8)));
  long count = a.num("count", 1000000), window = a.num("window", 10000);
  long latency_n = a.num("latency", 5000), warmup = a.num("warmup", 20000);

  std::string dir, eps[4];
  const char* names[] = {"front-in", "front-out", "back-out", "back-in"};
  if (transport == "ipc") {
    dir = bench::make_temp_dir("zexec-raw");
    for (int i = 0; i < 4; ++i) eps[i] = "ipc://" + dir + "/" + names[i];
  } else if (transport == "tcp") {
    for (auto& e : eps) e = "tcp://127.0.0.1:*";
  } else {
    bench::die("--transport is ipc or tcp");
  }
  std::vector<std::string> argv{self, "broker"};
  for (int i = 0; i < 4; ++i) argv.insert(argv.end(), {std::string("--") + names[i], eps[i]});
  bench::Child broker = bench::spawn(argv, true);
  auto line = broker.read_line(std::chrono::seconds(10));
  if (!line) bench::die("the relay broker did not start");
  std::istringstream(*line) >> eps[0] >> eps[1] >> eps[2] >> eps[3];
  std::vector<bench::Child> ws;
  for (int i = 0; i < workers; ++i)
    ws.push_back(bench::spawn({self, "worker", "--in", eps[2], "--out", eps[3]}, false));

  zmq::context_t ctx(1);
  zmq::socket_t push(ctx, zmq::socket_type::push), pull(ctx, zmq::socket_type::pull);
  push.set(zmq::sockopt::linger, 0);
  pull.set(zmq::sockopt::linger, 0);
  push.connect(eps[0]);
  pull.connect(eps[1]);

  std::string payload(size, 'x');
  // `n` round trips with at most `w` in flight; returns seconds.
  auto pipelined = [&](long n, long w) {
    auto t0 = Clock::now();
    long sent = 0, received = 0;
    zmq::message_t m;
    while (received < n) {
      bool blocked = false;
      while (sent < n && sent - received < w) {
        std::memcpy(payload.data(), &sent, sizeof sent);
        if (!push.send(zmq::buffer(payload), zmq::send_flags::dontwait)) {
          blocked = true;
          break;
        }
        ++sent;
      }
      bool got = false;
      while (pull.recv(m, zmq::recv_flags::dontwait)) ++received, got = true;
      if (got) continue;
      zmq::pollitem_t items[2] = {{pull.handle(), 0, ZMQ_POLLIN, 0},
                                  {push.handle(), 0, static_cast<short>(blocked ? ZMQ_POLLOUT : 0), 0}};
      // Never a blocking recv while a send is refused: the PUSH socket must get to process its
      // peer's "room again" commands, which only happens inside a call on that socket.
      zmq::poll(items, 2, std::chrono::milliseconds(-1));
    }
    return bench::seconds_since(t0);
  };

  pipelined(warmup, window);  // every worker connected, pipes and caches warm
  double s = pipelined(count, window);

  std::vector<double> rtts;
  rtts.reserve(static_cast<std::size_t>(latency_n));
  zmq::message_t m;
  for (long i = 0; i < latency_n + latency_n / 10; ++i) {
    auto t0 = Clock::now();
    push.send(zmq::buffer(payload), zmq::send_flags::none);
    (void)pull.recv(m);
    double us = bench::seconds_since(t0) * 1e6;
    if (i >= latency_n / 10) rtts.push_back(us);  // the first tenth is warm-up
  }

  push.close();
  pull.close();
  for (auto& w : ws) w.stop();
  broker.stop();
  if (!dir.empty()) std::filesystem::remove_all(dir);

  bench::Json()
      .str("transport", transport)
      .num("workers", workers)
      .num("size", static_cast<double>(size))
      .num("count", static_cast<double>(count))
      .num("window", static_cast<double>(window))
      .num("seconds", s)
      .num("round_trips_per_s", count / s)
      .num("rtt_median_us", bench::percentile(rtts, 50))
      .num("rtt_p99_us", bench::percentile(rtts, 99))
      .print();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "broker") return run_broker(Args(argc, argv, 2));
    if (mode == "worker") return run_worker(Args(argc, argv, 2));
    if (mode == "--help" || mode == "-h") {
      std::printf(
          "usage: zexec-raw-relay [--transport ipc|tcp] [--workers N] [--size BYTES] [--count N]\n"
          "                       [--window N] [--latency N] [--warmup N]\n");
      return 0;
    }
    std::string self = std::filesystem::canonical("/proc/self/exe").string();
    return run_client(Args(argc, argv, 1), self);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "zexec-raw-relay %s: %s\n", mode.c_str(), e.what());
    return 1;
  }
}
