// zexec measured end to end: a real zexecd (the one beside this program, with its stock
// zexec-worker) started for each run, and the C++ client library (zexec::Client, submit,
// as_completed). Each run prints one JSON line for bench/run.py.
//
//   zexec-bench throughput [--transport ipc|tcp] [--workers 2] [--clients 1] [--tasks 200000]
//                          [--payload 0] [--warmup 5000] [--journal full|normal]
//       every client (a process of its own) submits tasks/clients tasks, then takes them in
//       completion order with as_completed(); the figure is all tasks / wall time from the
//       moment every client is connected and warm to the last completion. payload 0 runs
//       `noop`; payload B runs `echo` with a B-byte string (B bytes each way).
//   zexec-bench latency [--transport ipc|tcp] [--workers 2] [--count 2000] [--payload 0]
//                       [--journal full|normal]
//       sequential submit(...).result(): round trip median and p99 in microseconds.
//       --journal: zexecd keeps a journal with that journal_sync in a fresh folder under
//       $ZEXEC_BENCH_JOURNAL_DIR (default /var/tmp: a disk, where a sync costs what it costs).
//   zexec-bench fsync [--count 500]
//       that folder's sync latency: a 4 KiB write + fdatasync, median and p99 in microseconds.
//   zexec-bench sched [--workers 16] [--tasks 2000] [--sleep 0.02]
//       `sleep` tasks on every worker: achieved wall time against the ideal tasks*sleep/workers.
//   zexec-bench memory [--tasks 1000000]
//       one worker is kept busy by a long `sleep` (prefetch 1), so the `noop` tasks that follow
//       stay queued in the daemon; once it reports all of them queued, its resident memory
//       growth over the idle daemon is divided by their number.
#include <fcntl.h>
#include <sys/wait.h>

#include <csignal>
#include <thread>
#include <zexec/protocol.hpp>
#include <zexec/zexec.hpp>
#include <zmq.hpp>

#include "bench_util.hpp"

namespace {

using bench::Args;
using bench::Clock;
using namespace std::chrono_literals;

struct Daemon {
  bench::Child child;
  std::string endpoint;
  std::string dir;

  std::string journal_dir;
  ~Daemon() { stop(); }
  void stop(int sig = SIGTERM) {
    child.stop(std::chrono::seconds(15), sig);
    if (!dir.empty()) std::filesystem::remove_all(dir);
    if (!journal_dir.empty()) std::filesystem::remove_all(journal_dir);
    dir.clear();
    journal_dir.clear();
  }
};

// Where journals go: a disk (not /tmp, which may be a tmpfs, where a sync costs nothing).
std::string journal_dir() {
  const char* base = std::getenv("ZEXEC_BENCH_JOURNAL_DIR");
  std::string tmpl = std::string(base && *base ? base : "/var/tmp") + "/zexec-bench-journal-XXXXXX";
  if (!mkdtemp(tmpl.data())) bench::die("mkdtemp failed for the journal");
  return tmpl;
}

// Starts zexecd with `workers` stock workers on a private endpoint of `transport`; with
// `journal` (full or normal) it keeps a journal of that sync in a fresh folder.
std::unique_ptr<Daemon> start_daemon(const std::string& transport, int workers,
                                     const std::vector<std::string>& extra = {},
                                     const std::string& journal = {}) {
  auto d = std::make_unique<Daemon>();
  std::string endpoint;
  if (transport == "ipc") {
    d->dir = bench::make_temp_dir("zexec-bench");
    endpoint = "ipc://" + d->dir + "/zexecd.sock";
  } else if (transport == "tcp") {
    endpoint = "tcp://127.0.0.1:*";
  } else {
    bench::die("--transport is ipc or tcp");
  }
  std::vector<std::string> argv{bench::self_dir() + "/zexecd", "--endpoint",       endpoint,      "--workers",
                                std::to_string(workers),       "--print-endpoint", "--log-level", "warn"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  if (!journal.empty()) {
    d->journal_dir = journal_dir();
    argv.insert(argv.end(), {"--journal", d->journal_dir + "/journal", "--journal-sync", journal});
  }
  d->child = bench::spawn(argv, true);
  auto line = d->child.read_line(15s);
  if (!line) bench::die("zexecd did not start (" + argv[0] + ")");
  d->endpoint = *line;
  return d;
}

// The daemon's status map (docs/PROTOCOL.md §3), asked for on a connection of its own.
msgpack::object_handle status(const std::string& endpoint) {
  zmq::context_t ctx(1);
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.connect(endpoint);
  std::string frame = zexec::proto::encode(zexec::proto::Status{});
  s.send(zmq::buffer(frame), zmq::send_flags::none);
  zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
  while (zmq::poll(&item, 1, std::chrono::seconds(30)) > 0) {
    zmq::message_t msg;
    (void)s.recv(msg);
    auto d = zexec::proto::decode(msg.to_string_view());
    if (!d || !std::holds_alternative<zexec::proto::StatusReply>(*d.message)) continue;
    const std::string& body = std::get<zexec::proto::StatusReply>(*d.message).body;
    return msgpack::unpack(body.data(), body.size());
  }
  bench::die("no status from zexecd at " + endpoint);
}

using Map = std::map<std::string, msgpack::object>;

// Waits until `n` workers have said hello (state "ready").
void wait_workers_ready(const std::string& endpoint, int n) {
  auto deadline = Clock::now() + 30s;
  for (;;) {
    auto oh = status(endpoint);
    int ready = 0;
    for (auto& w : oh.get().as<Map>().at("workers").as<std::vector<Map>>())
      ready += w.at("state").as<std::string>() == "ready";
    if (ready >= n) return;
    if (Clock::now() > deadline) bench::die("workers did not become ready");
    std::this_thread::sleep_for(10ms);
  }
}

zexec::ClientOptions client_options() {
  zexec::ClientOptions o;
  o.name = "zexec-bench";
  o.submit_timeout = std::chrono::minutes(5);
  o.connect_timeout = 15s;
  return o;
}

// `n` tasks submitted, then taken in completion order; returns how many failed.
long submit_and_collect(zexec::Client& client, long n, const std::string& args) {
  std::vector<zexec::Future> fs;
  fs.reserve(static_cast<std::size_t>(n));
  for (long i = 0; i < n; ++i)
    fs.push_back(args.empty() ? client.submit("noop") : client.submit_raw("echo", args));
  long failed = 0;
  for (zexec::Future& f : zexec::as_completed(fs, std::chrono::minutes(10)))
    failed += f.exception() != nullptr;
  return failed;
}

std::string echo_args(long payload) {
  return payload > 0 ? zexec::detail::pack_args(std::string(static_cast<std::size_t>(payload), 'x')) : "";
}

void write_all(int fd, const void* p, std::size_t n) {
  if (::write(fd, p, n) != static_cast<ssize_t>(n)) std::_Exit(3);
}

int throughput(const Args& a) {
  std::string transport = a.str("transport", "ipc");
  int workers = static_cast<int>(a.num("workers", 2));
  int clients = static_cast<int>(a.num("clients", 1));
  long tasks = a.num("tasks", 200000), payload = a.num("payload", 0), warmup = a.num("warmup", 5000);
  std::string journal = a.str("journal", "");
  auto d = start_daemon(transport, workers, {}, journal);
  wait_workers_ready(d->endpoint, workers);

  // Clients are processes of their own: they connect and warm up, say "ready" on `ready`, wait
  // for `go` to be closed, run their share, and report their failures on `done`.
  int ready[2], go[2], done[2];
  if (::pipe(ready) || ::pipe(go) || ::pipe(done)) bench::die("pipe");
  std::vector<pid_t> pids;
  long per_client = tasks / clients;
  for (int c = 0; c < clients; ++c) {
    pid_t pid = ::fork();
    if (pid < 0) bench::die("fork");
    if (pid == 0) {
      ::close(ready[0]), ::close(go[1]), ::close(done[0]);
      long failed = 0;
      try {
        zexec::Client client{d->endpoint, client_options()};
        std::string args = echo_args(payload);
        failed += submit_and_collect(client, std::max(1L, warmup / clients), args);
        write_all(ready[1], "r", 1);
        char b;
        while (::read(go[0], &b, 1) > 0) {
        }
        failed += submit_and_collect(client, per_client, args);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "zexec-bench client: %s\n", e.what());
        failed = -1;
      }
      write_all(done[1], &failed, sizeof failed);
      std::_Exit(0);
    }
    pids.push_back(pid);
  }
  ::close(ready[1]), ::close(go[0]), ::close(done[1]);
  for (int c = 0; c < clients; ++c) {
    char b;
    if (::read(ready[0], &b, 1) != 1) bench::die("a client failed to start");
  }
  auto t0 = Clock::now();
  ::close(go[1]);
  long failed = 0;
  bool broken = false;
  for (int c = 0; c < clients; ++c) {
    long f = 0;
    if (::read(done[0], &f, sizeof f) != sizeof f || f < 0) broken = true;
    failed += f;
  }
  double s = bench::seconds_since(t0);
  for (pid_t p : pids) ::waitpid(p, nullptr, 0);
  d->stop();
  if (broken) bench::die("a client failed");
  long total = per_client * clients;
  bench::Json()
      .str("transport", transport)
      .str("journal", journal.empty() ? "none" : journal)
      .num("workers", workers)
      .num("clients", clients)
      .num("tasks", static_cast<double>(total))
      .num("payload", static_cast<double>(payload))
      .num("failed", static_cast<double>(failed))
      .num("seconds", s)
      .num("tasks_per_s", total / s)
      .print();
  return failed == 0 ? 0 : 1;
}

int latency(const Args& a) {
  std::string transport = a.str("transport", "ipc");
  int workers = static_cast<int>(a.num("workers", 2));
  long count = a.num("count", 2000), payload = a.num("payload", 0);
  std::string journal = a.str("journal", "");
  auto d = start_daemon(transport, workers, {}, journal);
  wait_workers_ready(d->endpoint, workers);
  std::vector<double> rtts;
  {
    zexec::Client client{d->endpoint, client_options()};
    std::string args = echo_args(payload);
    rtts.reserve(static_cast<std::size_t>(count));
    for (long i = 0; i < count + count / 10; ++i) {
      auto t0 = Clock::now();
      if (args.empty())
        client.submit("noop").result();
      else
        (void)client.submit_raw("echo", args).raw_result();
      double us = bench::seconds_since(t0) * 1e6;
      if (i >= count / 10) rtts.push_back(us);  // the first tenth is warm-up
    }
  }
  d->stop();
  bench::Json()
      .str("transport", transport)
      .num("workers", workers)
      .num("count", static_cast<double>(count))
      .num("payload", static_cast<double>(payload))
      .num("rtt_median_us", bench::percentile(rtts, 50))
      .num("rtt_p99_us", bench::percentile(rtts, 99))
      .print();
  return 0;
}

// The device's sync latency where journals go: a 4 KiB write + fdatasync, `count` times.
int fsync_latency(const Args& a) {
  long count = a.num("count", 500);
  std::string dir = journal_dir();
  std::string path = dir + "/sync-probe";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) bench::die("cannot open " + path);
  std::string block(4096, 'x');
  std::vector<double> us;
  for (long i = 0; i < count; ++i) {
    auto t0 = Clock::now();
    if (::pwrite(fd, block.data(), block.size(), static_cast<off_t>((i % 64) * 4096)) != 4096 ||
        ::fdatasync(fd) != 0)
      bench::die("write + fdatasync failed in " + dir);
    us.push_back(bench::seconds_since(t0) * 1e6);
  }
  ::close(fd);
  std::filesystem::remove_all(dir);
  bench::Json()
      .num("count", static_cast<double>(count))
      .num("fsync_median_us", bench::percentile(us, 50))
      .num("fsync_p99_us", bench::percentile(us, 99))
      .print();
  return 0;
}

int sched(const Args& a) {
  int workers = static_cast<int>(a.num("workers", 16));
  long tasks = a.num("tasks", 2000);
  double sleep = a.real("sleep", 0.02);
  auto d = start_daemon("ipc", workers);
  wait_workers_ready(d->endpoint, workers);
  double s;
  long failed = 0;
  {
    zexec::Client client{d->endpoint, client_options()};
    auto t0 = Clock::now();
    std::vector<zexec::Future> fs;
    fs.reserve(static_cast<std::size_t>(tasks));
    for (long i = 0; i < tasks; ++i) fs.push_back(client.submit("sleep", sleep));
    for (zexec::Future& f : zexec::as_completed(fs, std::chrono::minutes(5)))
      failed += f.exception() != nullptr;
    s = bench::seconds_since(t0);
  }
  d->stop();
  double ideal = static_cast<double>(tasks) * sleep / workers;
  bench::Json()
      .num("workers", workers)
      .num("tasks", static_cast<double>(tasks))
      .num("sleep_s", sleep)
      .num("failed", static_cast<double>(failed))
      .num("seconds", s)
      .num("ideal_s", ideal)
      .num("efficiency", ideal / s)
      .print();
  return failed == 0 ? 0 : 1;
}

int memory(const Args& a) {
  long tasks = a.num("tasks", 1000000);
  auto d = start_daemon("ipc", 1,
                        {"--max-prefetch", "1", "--max-pending-per-client", std::to_string(tasks + 10),
                         "--shutdown-grace-ms", "0"});
  wait_workers_ready(d->endpoint, 1);
  pid_t pid = d->child.pid;
  double per_task = 0, peak_per_task = 0;
  long rss0 = 0, hwm0 = 0, rss = 0, hwm = 0, queued = 0;
  double fill_s = 0;
  {
    zexec::ClientOptions o = client_options();
    zexec::Client client{d->endpoint, o};
    zexec::Future blocker = client.submit("sleep", 3600.0);
    auto deadline = Clock::now() + 10s;
    while (!blocker.running() && Clock::now() < deadline) std::this_thread::sleep_for(5ms);
    if (!blocker.running()) bench::die("the blocking task did not start");
    client.submit("noop").cancel();  // the submit/cancel paths touched once before the baseline
    std::this_thread::sleep_for(100ms);
    std::tie(rss0, hwm0) = bench::rss_kib(pid);

    auto t0 = Clock::now();
    std::vector<zexec::Future> fs;
    fs.reserve(static_cast<std::size_t>(tasks));
    for (long i = 0; i < tasks; ++i) fs.push_back(client.submit("noop"));
    deadline = Clock::now() + std::chrono::minutes(3);
    for (;;) {
      auto oh = status(d->endpoint);
      queued = oh.get().as<Map>().at("queued").as<long>();
      if (queued >= tasks) break;
      if (Clock::now() > deadline) bench::die("only " + std::to_string(queued) + " tasks queued");
      std::this_thread::sleep_for(20ms);
    }
    fill_s = bench::seconds_since(t0);
    // Steady state: the daemon hands the buffers of the burst back within a second or so
    // (malloc_trim); measure once its RSS has stopped falling (the peak is reported too).
    std::tie(rss, hwm) = bench::rss_kib(pid);
    auto last_fall = Clock::now();
    for (auto settle = Clock::now() + 8s; Clock::now() < settle && Clock::now() - last_fall < 1500ms;) {
      std::this_thread::sleep_for(250ms);
      long now_rss = bench::rss_kib(pid).first;
      if (now_rss < rss - rss / 200) last_fall = Clock::now();  // fell by 0.5 % or more
      rss = std::min(rss, now_rss);
    }
    hwm = bench::rss_kib(pid).second;
    per_task = (rss - rss0) * 1024.0 / static_cast<double>(queued);
    peak_per_task = (hwm - rss0) * 1024.0 / static_cast<double>(queued);
    client.close();  // its tasks are dropped with it
  }
  d->child.stop(std::chrono::milliseconds(500));  // SIGTERM; then SIGKILL if the drain lingers
  d->stop();
  bench::Json()
      .num("tasks", static_cast<double>(tasks))
      .num("queued", static_cast<double>(queued))
      .num("fill_s", fill_s)
      .num("rss_idle_kib", static_cast<double>(rss0))
      .num("rss_queued_kib", static_cast<double>(rss))
      .num("hwm_kib", static_cast<double>(hwm))
      .num("bytes_per_task", per_task)
      .num("peak_bytes_per_task", peak_per_task)
      .print();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "throughput") return throughput(Args(argc, argv, 2));
    if (mode == "latency") return latency(Args(argc, argv, 2));
    if (mode == "sched") return sched(Args(argc, argv, 2));
    if (mode == "memory") return memory(Args(argc, argv, 2));
    if (mode == "fsync") return fsync_latency(Args(argc, argv, 2));
    std::fprintf(stderr,
                 "usage: zexec-bench throughput|latency|sched|memory|fsync [--option value]...\n"
                 "(see the comment at the top of bench/zexec_bench.cpp)\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "zexec-bench %s: %s\n", mode.c_str(), e.what());
    return 1;
  }
}
