// The same no-op work through Gearman (gearmand + libgearman, C): an optional peer in the table.
// Built only when libgearman-dev is installed; run only when gearmand is.
//
//   zexec-gearman-bench [--gearmand /usr/sbin/gearmand] [--workers 2] [--tasks 20000]
//                       [--latency 2000] [--warmup 2000]
//     starts a private gearmand on a free 127.0.0.1 port and `workers` worker processes that
//     register `noop`, then: throughput = add_task x N + run_tasks (results in completion order
//     through the complete callback: submit + as_completed); latency = sequential
//     gearman_client_do(). Prints one JSON line.
//   zexec-gearman-bench worker --port P
#include <arpa/inet.h>
#include <libgearman/gearman.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <csignal>
#include <thread>

#include "bench_util.hpp"

namespace {

using bench::Args;
using bench::Clock;
using namespace std::chrono_literals;

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) bench::die("bind");
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

bool port_open(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

void* noop(gearman_job_st*, void*, size_t* result_size, gearman_return_t* ret) {
  *result_size = 0;
  *ret = GEARMAN_SUCCESS;
  return nullptr;
}

int run_worker(const Args& a) {
  gearman_worker_st* w = gearman_worker_create(nullptr);
  gearman_worker_add_server(w, "127.0.0.1", static_cast<in_port_t>(a.num("port", 4730)));
  gearman_worker_add_function(w, "noop", 0, noop, nullptr);
  for (;;) {
    gearman_return_t rc = gearman_worker_work(w);
    if (rc != GEARMAN_SUCCESS && rc != GEARMAN_IO_WAIT) std::this_thread::sleep_for(10ms);
  }
}

long completed = 0, failed = 0;
gearman_return_t on_complete(gearman_task_st*) {
  ++completed;
  return GEARMAN_SUCCESS;
}
gearman_return_t on_fail(gearman_task_st*) {
  ++failed;
  return GEARMAN_SUCCESS;
}

int run_client(const Args& a) {
  std::string gearmand = a.str("gearmand", "/usr/sbin/gearmand");
  int workers = static_cast<int>(a.num("workers", 2));
  long tasks = a.num("tasks", 20000), latency_n = a.num("latency", 2000), warmup = a.num("warmup", 2000);
  std::string self = std::filesystem::canonical("/proc/self/exe").string();
  std::string dir = bench::make_temp_dir("zexec-gearman");
  int port = free_port();
  bench::Child server = bench::spawn({gearmand, "--listen", "127.0.0.1", "--port", std::to_string(port),
                                      "--log-file", "none", "--pid-file", dir + "/gearmand.pid"},
                                     false);
  auto deadline = Clock::now() + 10s;
  while (!port_open(port)) {
    if (Clock::now() > deadline) bench::die("gearmand did not start");
    std::this_thread::sleep_for(10ms);
  }
  std::vector<bench::Child> ws;
  for (int i = 0; i < workers; ++i)
    ws.push_back(bench::spawn({self, "worker", "--port", std::to_string(port)}, false));

  gearman_client_st* c = gearman_client_create(nullptr);
  gearman_client_add_server(c, "127.0.0.1", static_cast<in_port_t>(port));
  gearman_client_add_options(c, GEARMAN_CLIENT_FREE_TASKS);
  gearman_client_set_complete_fn(c, on_complete);
  gearman_client_set_fail_fn(c, on_fail);

  auto batch = [&](long n) {
    completed = failed = 0;
    auto t0 = Clock::now();
    for (long i = 0; i < n; ++i) {
      gearman_return_t rc;
      if (!gearman_client_add_task(c, nullptr, nullptr, "noop", nullptr, nullptr, 0, &rc))
        bench::die(std::string("add_task: ") + gearman_client_error(c));
    }
    gearman_return_t rc = gearman_client_run_tasks(c);
    if (rc != GEARMAN_SUCCESS) bench::die(std::string("run_tasks: ") + gearman_client_error(c));
    if (completed + failed != n) bench::die("not every task completed");
    return bench::seconds_since(t0);
  };
  batch(warmup);
  double s = batch(tasks);
  long batch_failed = failed;

  std::vector<double> rtts;
  for (long i = 0; i < latency_n + latency_n / 10; ++i) {
    auto t0 = Clock::now();
    size_t size = 0;
    gearman_return_t rc;
    void* r = gearman_client_do(c, "noop", nullptr, nullptr, 0, &size, &rc);
    double us = bench::seconds_since(t0) * 1e6;
    std::free(r);
    if (rc != GEARMAN_SUCCESS) bench::die(std::string("do: ") + gearman_client_error(c));
    if (i >= latency_n / 10) rtts.push_back(us);
  }
  gearman_client_free(c);
  for (auto& w : ws) w.stop();
  server.stop();
  std::filesystem::remove_all(dir);
  bench::Json()
      .num("workers", workers)
      .num("tasks", static_cast<double>(tasks))
      .num("failed", static_cast<double>(batch_failed))
      .num("seconds", s)
      .num("tasks_per_s", tasks / s)
      .num("rtt_median_us", bench::percentile(rtts, 50))
      .num("rtt_p99_us", bench::percentile(rtts, 99))
      .print();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "worker") return run_worker(Args(argc, argv, 2));
  return run_client(Args(argc, argv, 1));
}
