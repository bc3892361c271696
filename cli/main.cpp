// zexec: the command line for zexecd.
//   zexec [--endpoint E] status [--json]     what the daemon is doing
//   zexec [--endpoint E] submit TASK ARGS...  run one task, print its result; exit status from the outcome
//   zexec [--endpoint E] map TASK < lines     one task per input line, results as they complete
// Exit status: 0 ok, 1 a task failed (or was cancelled), 2 usage, 3 zexecd not reachable.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <vector>
#include <zexec/zexec.hpp>
#include <zmq.hpp>

#include "values.hpp"
#include "zexec/protocol.hpp"

namespace {

constexpr int kTaskFailed = 1, kUsage = 2, kUnreachable = 3;

void usage() {
  std::fprintf(
      stderr,
      "usage: zexec [--endpoint ENDPOINT] COMMAND ...\n"
      "  status [--json]        workers, queues and totals of the daemon\n"
      "  submit TASK [ARG...]   run TASK once and print its result (arguments are JSON, or plain strings)\n"
      "  drain                  stop the daemon gracefully (as SIGTERM does)\n"
      "  cancel [--force] CLIENT:TASK  cancel a task (ids as `status` shows); --force stops a running one\n"
      "  map TASK               run TASK once per line of standard input (the line is its argument),\n"
      "                         printing results as they complete\n"
      "ENDPOINT defaults to %s (or $ZEXEC_ENDPOINT).\n"
      "Exit status: 0 ok, 1 a task failed, 2 usage, 3 zexecd not reachable.\n",
      zexec::proto::default_endpoint().c_str());
}

std::string value_json(const std::string& bytes) {
  auto oh = msgpack::unpack(bytes.data(), bytes.size());
  return zexec::cli::to_json(oh.get());
}

// Prints a finished future: its value as JSON on stdout, or its error on stderr.
bool report(zexec::Future& f, const std::string& prefix = {}) {
  try {
    std::printf("%s%s\n", prefix.c_str(), value_json(f.raw_result()).c_str());
    return true;
  } catch (const zexec::Error& e) {
    std::fprintf(stderr, "%s%s\n", prefix.c_str(), e.what());
    return false;
  }
}

// Sends `request` (status or drain) and returns the daemon's status_reply, or nothing.
std::optional<msgpack::object_handle> ask(const std::string& endpoint, const zexec::proto::Message& request) {
  zmq::context_t ctx;
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.connect(endpoint);
  std::string frame = zexec::proto::encode(request);
  s.send(zmq::buffer(frame), zmq::send_flags::dontwait);
  zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
  while (zmq::poll(&item, 1, std::chrono::seconds(5)) > 0) {
    zmq::message_t msg;
    (void)s.recv(msg);
    auto d = zexec::proto::decode(msg.to_string_view());
    if (!d || !std::holds_alternative<zexec::proto::StatusReply>(*d.message)) continue;  // heartbeats
    const std::string& body = std::get<zexec::proto::StatusReply>(*d.message).body;
    return msgpack::unpack(body.data(), body.size());
  }
  std::fprintf(stderr, "zexec: no answer from zexecd at %s within 5 s\n", endpoint.c_str());
  return std::nullopt;
}

int drain(const std::string& endpoint) {
  if (!ask(endpoint, zexec::proto::Drain{})) return kUnreachable;
  std::printf("zexecd at %s is draining: running tasks finish, queued ones are cancelled\n",
              endpoint.c_str());
  return 0;
}

// `CLIENT:TASK` as `zexec status` shows it in running_task.
int cancel(const std::string& endpoint, const std::string& id, bool force) {
  auto colon = id.find(':');
  std::uint64_t client = 0, task = 0;
  try {
    if (colon == std::string::npos) throw std::invalid_argument("no colon");
    client = std::stoull(id.substr(0, colon));
    task = std::stoull(id.substr(colon + 1));
  } catch (const std::exception&) {
    std::fprintf(stderr, "zexec: cancel wants CLIENT:TASK (as `zexec status` shows), not '%s'\n", id.c_str());
    return kUsage;
  }
  zmq::context_t ctx;
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.connect(endpoint);
  std::string frame = zexec::proto::encode(zexec::proto::AdminCancel{1, client, {task}, force});
  s.send(zmq::buffer(frame), zmq::send_flags::dontwait);
  zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
  while (zmq::poll(&item, 1, std::chrono::seconds(30)) > 0) {
    zmq::message_t msg;
    (void)s.recv(msg);
    auto d = zexec::proto::decode(msg.to_string_view());
    if (!d) continue;
    if (auto* e = std::get_if<zexec::proto::Error>(&*d.message)) {
      std::fprintf(stderr, "zexec: %s\n", e->message.c_str());
      return kTaskFailed;
    }
    auto* r = std::get_if<zexec::proto::CancelReply>(&*d.message);
    if (!r || r->outcomes.empty()) continue;
    static const char* kWords[] = {"cancelled", "running (use --force to stop it)", "finished or unknown"};
    auto outcome = r->outcomes[0].second;
    std::printf("%s: %s\n", id.c_str(), kWords[static_cast<int>(outcome)]);
    return outcome == zexec::proto::CancelOutcome::cancelled ? 0 : kTaskFailed;
  }
  std::fprintf(stderr, "zexec: no answer from zexecd at %s\n", endpoint.c_str());
  return kUnreachable;
}

int status(const std::string& endpoint, bool as_json) {
  auto reply = ask(endpoint, zexec::proto::Status{});
  if (!reply) return kUnreachable;
  {
    auto& oh = *reply;
    if (as_json) {
      std::printf("%s\n", zexec::cli::to_json(oh.get()).c_str());
      return 0;
    }
    using Map = std::map<std::string, msgpack::object>;
    auto st = oh.get().as<Map>();
    std::printf("zexecd at %s, up %.1f s%s\n", st.at("endpoint").as<std::string>().c_str(),
                st.at("uptime_ms").as<double>() / 1000, st.at("stopping").as<bool>() ? ", STOPPING" : "");
    std::printf("tasks: %lu owned, %lu queued\n", st.at("tasks").as<unsigned long>(),
                st.at("queued").as<unsigned long>());
    if (auto r = st.find("rates"); r != st.end()) {
      auto rates = r->second.as<std::map<std::string, double>>();
      std::printf("last %.1f s: %.1f submitted/s, %.1f finished/s, %.1f failed/s\n", rates["window_s"],
                  rates["submitted"], rates["finished"], rates["failed"]);
    }
    if (auto p = st.find("pools"); p != st.end()) {
      std::printf("\n%-12s %7s %7s  %s\n", "pool", "workers", "queued", "command (task names)");
      for (auto& pool : p->second.as<std::vector<Map>>()) {
        const msgpack::object& names = pool.at("task_names");
        std::string what = names.is_nil() ? "not known yet" : zexec::cli::to_json(names);
        std::printf("%-12s %7d %7lu  %s (%s)%s\n", pool.at("name").as<std::string>().c_str(),
                    pool.at("workers").as<int>(), pool.at("queued").as<unsigned long>(),
                    pool.at("command").as<std::string>().c_str(), what.c_str(),
                    pool.at("broken").as<bool>() ? " CANNOT START" : "");
      }
    }
    std::printf("\n%-5s %-10s %-8s %-9s %5s %10s %8s %10s %9s  %s\n", "slot", "pool", "pid", "state", "held",
                "done", "restarts", "running", "rss MiB", "task (CLIENT:TASK name)");
    for (auto& w : st.at("workers").as<std::vector<Map>>()) {
      long running = w.at("running_ms").as<long>();
      std::printf("%-5d %-10s %-8d %-9s %5lu %10lu %8lu %10s %9.1f  %s\n", w.at("slot").as<int>(),
                  w.at("pool").as<std::string>().c_str(), w.at("pid").as<int>(),
                  w.at("state").as<std::string>().c_str(), w.at("held").as<unsigned long>(),
                  w.at("tasks_done").as<unsigned long>(), w.at("restarts").as<unsigned long>(),
                  running < 0 ? "-" : (std::to_string(running) + " ms").c_str(),
                  w.at("rss_bytes").as<double>() / (1 << 20), w.at("running_task").as<std::string>().c_str());
    }
    auto clients = st.at("clients").as<std::vector<Map>>();
    std::printf("\n%zu clients\n", clients.size());
    for (auto& c : clients)
      std::printf("  %-16lu %-20s pid %-8ld %lu queued, %lu unfinished\n", c.at("id").as<unsigned long>(),
                  c.at("name").as<std::string>().c_str(), c.at("pid").as<long>(),
                  c.at("queued").as<unsigned long>(), c.at("unfinished").as<unsigned long>());
    std::printf("\ntotals: %s\n", zexec::cli::to_json(st.at("totals")).c_str());
    return 0;
  }
}

int submit(const std::string& endpoint, const std::string& task, const std::vector<std::string>& words) {
  zexec::ClientOptions options;
  options.name = "zexec submit";
  zexec::Client client{endpoint, options};
  zexec::Future f = client.submit_raw(task, zexec::cli::pack_words(words));
  f.wait_done();
  return report(f) ? 0 : kTaskFailed;
}

int map(const std::string& endpoint, const std::string& task) {
  zexec::ClientOptions options;
  options.name = "zexec map";
  zexec::Client client{endpoint, options};
  zexec::AsCompleted pending;
  std::size_t total = 0, failed = 0, done = 0;
  for (std::string line; std::getline(std::cin, line); ++total)
    pending.add(client.submit_raw(task, zexec::cli::pack_words({line})));
  bool tty = isatty(2);
  for (zexec::Future& f : pending) {
    ++done;
    if (!report(f)) ++failed;
    if (tty) {  // a progress bar on the terminal, never in a pipe
      int width = 40, filled = static_cast<int>(width * done / std::max<std::size_t>(total, 1));
      std::fprintf(stderr, "\r[%s%s] %zu/%zu%s", std::string(filled, '#').c_str(),
                   std::string(width - filled, ' ').c_str(), done, total, done == total ? "\n" : "");
    }
  }
  return failed ? kTaskFailed : 0;
}

}  // namespace

int main(int argc, char** argv) {
  const char* env = std::getenv("ZEXEC_ENDPOINT");
  std::string endpoint = env && *env ? env : zexec::proto::default_endpoint();
  std::vector<std::string> args(argv + 1, argv + argc);
  while (!args.empty() && args[0].rfind("--", 0) == 0) {
    if (args[0] == "--help" || args[0] == "-h") {
      usage();
      return 0;
    }
    if (args[0] == "--endpoint" && args.size() > 1) {
      endpoint = args[1];
      args.erase(args.begin(), args.begin() + 2);
    } else if (args[0].rfind("--endpoint=", 0) == 0) {
      endpoint = args[0].substr(11);
      args.erase(args.begin());
    } else {
      std::fprintf(stderr, "zexec: unknown option %s\n", args[0].c_str());
      usage();
      return kUsage;
    }
  }
  if (args.empty()) {
    usage();
    return kUsage;
  }
  try {
    if (args[0] == "status") return status(endpoint, args.size() > 1 && args[1] == "--json");
    if (args[0] == "submit" && args.size() >= 2)
      return submit(endpoint, args[1], std::vector<std::string>(args.begin() + 2, args.end()));
    if (args[0] == "map" && args.size() == 2) return map(endpoint, args[1]);
    if (args[0] == "drain" && args.size() == 1) return drain(endpoint);
    if (args[0] == "cancel" && args.size() == 2) return cancel(endpoint, args[1], false);
    if (args[0] == "cancel" && args.size() == 3 && args[1] == "--force")
      return cancel(endpoint, args[2], true);
  } catch (const zexec::ConnectionError& e) {
    std::fprintf(stderr, "zexec: %s\n", e.what());
    return kUnreachable;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "zexec: %s\n", e.what());
    return kTaskFailed;
  }
  usage();
  return kUsage;
}
