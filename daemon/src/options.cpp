#include "options.hpp"

#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <stdexcept>

#include "zexec/protocol.hpp"

namespace zexecd {
namespace {

struct Setting {
  const char* name;
  const char* type;  // "int" / "string"
  const char* help;
  std::function<void(Options&, const std::string&)> set;
  std::function<std::string(const Options&)> get;
  long min = 0, max = 0;  // for ints
};

int to_int(const std::string& flag, const std::string& v, long min, long max) {
  long n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || p != v.data() + v.size())
    throw std::invalid_argument("--" + flag + ": '" + v + "' is not an integer");
  if (n < min || n > max)
    throw std::invalid_argument("--" + flag + ": " + v + " is out of range [" + std::to_string(min) + ", " +
                                std::to_string(max) + "]");
  return static_cast<int>(n);
}

bool to_bool(const std::string& flag, const std::string& v) {
  if (v == "true" || v == "1" || v == "yes") return true;
  if (v == "false" || v == "0" || v == "no") return false;
  throw std::invalid_argument("--" + flag + ": '" + v + "' is not true or false");
}

#define ZX_INT(field, lo, hi, help_text)                                                                    \
  Setting {                                                                                                 \
#field, "int", help_text,                                                                               \
        [](Options & o,                                                                                     \
           const std::string&                                                                               \
               v) { o.field = to_int(#field, v, lo, hi); }, [](const Options&                               \
                                                                   o) { return std::to_string(o.field); },  \
                                                                                                        lo, \
                                                                                                        hi  \
  }
#define ZX_BOOL(field, help_text)                                                                               \
  Setting {                                                                                                     \
#field, "bool", help_text,                                                                                  \
        [](Options & o,                                                                                         \
           const std::string&                                                                                   \
               v) { o.field = to_bool(#field, v); },                                                            \
                                                  [](const Options&                                             \
                                                         o) { return std::string(o.field ? "true"               \
                                                                                         : "false"); } \
  }
#define ZX_STR(field, help_text)                                                                         \
  Setting {                                                                                              \
#field, "string", help_text,                                                                         \
        [](Options & o, const std::string& v) { o.field = v; }, [](const Options& o) { return o.field; } \
  }

const std::vector<Setting>& table() {
  static const std::vector<Setting> t = {
      ZX_STR(endpoint,
             "client endpoint to bind, ipc://PATH or tcp://HOST:PORT (default: "
             "ipc://$XDG_RUNTIME_DIR/zexec/zexecd.sock, /run/zexec/zexecd.sock as root)"),
      ZX_INT(workers, 0, 4096, "worker processes (0 = number of cores)"),
      ZX_STR(worker_command, "worker command line \"PATH ARGS...\" (default: zexec-worker beside zexecd)"),
      ZX_STR(log_level, "trace, debug, info, warn, error or off"),
      ZX_INT(heartbeat_ms, 10, 60000, "heartbeat period towards clients and workers, ms"),
      ZX_INT(client_timeout_ms, 0, 3600000, "drop a client silent this long, ms (0 = 5 x heartbeat_ms)"),
      ZX_INT(worker_liveness_ms, 50, 3600000, "kill and replace a worker silent this long, ms"),
      ZX_INT(max_prefetch, 1, 65536, "most unfinished tasks sent to one worker"),
      ZX_INT(steal_after_ms, 0, 3600000,
             "idle workers take unstarted tasks queued behind a task running this long, ms"),
      ZX_INT(max_tasks_per_worker, 0, 2000000000,
             "replace a worker after it ran this many tasks (0 = never)"),
      ZX_INT(max_memory_per_worker_mb, 0, 1000000,
             "replace a worker whose resident memory passes this many MiB, between tasks (0 = never)"),
      ZX_INT(task_timeout_ms, 0, 2000000000,
             "hard time limit for a task that sets no timeout of its own, ms (0 = none)"),
      ZX_INT(quarantine_after, 1, 1000,
             "a task that crashed its worker this many times fails as Quarantined"),
      ZX_INT(cancel_grace_ms, 0, 3600000,
             "forced cancel of a running task: SIGTERM, then SIGKILL after this, ms"),
      ZX_INT(max_pending_per_client, 1, 100000000, "most unfinished tasks one client may have in the daemon"),
      ZX_INT(shutdown_grace_ms, 0, 3600000, "on SIGTERM, how long running tasks may finish, ms"),
      ZX_INT(max_unacked_updates, 1, 65536, "per client: result messages in flight awaiting ack"),
      ZX_BOOL(print_endpoint, "print the bound endpoint on stdout once serving (useful with tcp://HOST:*)"),
  };
  return t;
}

std::string flag_name(const char* field) {
  std::string s = field;
  for (auto& c : s)
    if (c == '_') c = '-';
  return s;
}

void print_help() {
  std::printf(
      "zexecd - the zexec task daemon: runs named tasks in supervised worker processes and returns\n"
      "each result to the client that submitted it, in the order tasks finish.\n\n"
      "usage: zexecd [--setting VALUE | --setting=VALUE]...\n\nsettings:\n");
  Options defaults;
  for (const auto& s : table()) {
    std::printf("  --%-22s %s\n",
                (flag_name(s.name) + (s.type[0] == 'i'   ? " N"
                                      : s.type[0] == 's' ? " STR"
                                                         : ""))
                    .c_str(),
                s.help);
    auto d = s.get(defaults);
    if (!d.empty()) std::printf("  %-24s default: %s\n", "", d.c_str());
  }
  std::printf("\n  --help                   this text\n  --version                print the version\n");
}

}  // namespace

bool parse_options(int argc, char** argv, Options& out) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      print_help();
      return false;
    }
    if (arg == "--version") {
      std::printf("zexecd %s\n", ZEXEC_VERSION);
      return false;
    }
    if (arg.rfind("--", 0) != 0)
      throw std::invalid_argument("unexpected argument '" + arg + "' (see --help)");
    std::string name = arg.substr(2), value;
    auto eq = name.find('=');
    bool has_value = eq != std::string::npos;
    if (has_value) {
      value = name.substr(eq + 1);
      name.resize(eq);
    }
    const Setting* found = nullptr;
    for (const auto& s : table())
      if (flag_name(s.name) == name) found = &s;
    if (!found) throw std::invalid_argument("unknown option --" + name + " (see --help)");
    if (!has_value && std::string(found->type) == "bool") {
      value = "true";
    } else if (!has_value) {
      if (i + 1 >= argc) throw std::invalid_argument("--" + name + " needs a value");
      value = argv[++i];
    }
    found->set(out, value);
  }
  if (out.endpoint.empty()) out.endpoint = zexec::proto::default_endpoint();
  return true;
}

}  // namespace zexecd
