#include "options.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <stdexcept>

#include "zexec/protocol.hpp"

namespace zexecd {
namespace {

enum class Kind { integer, string, boolean };

// One row per setting: the only place a setting is described. Flags are the names with '-',
// config keys the names as they are, --help and `status` read the same rows.
struct Setting {
  const char* name;
  Kind kind;
  Reload reload;  // what SIGHUP does with a change (options.hpp)
  const char* help;
  int Options::*int_field = nullptr;
  long min = 0, max = 0;
  std::string Options::*str_field = nullptr;
  bool Options::*bool_field = nullptr;
};

constexpr Setting integer(const char* name, int Options::*f, long min, long max, Reload r, const char* help) {
  return {name, Kind::integer, r, help, f, min, max, nullptr, nullptr};
}
constexpr Setting text(const char* name, std::string Options::*f, Reload r, const char* help) {
  return {name, Kind::string, r, help, nullptr, 0, 0, f, nullptr};
}
constexpr Setting boolean(const char* name, bool Options::*f, Reload r, const char* help) {
  return {name, Kind::boolean, r, help, nullptr, 0, 0, nullptr, f};
}

// Reload: what SIGHUP does with each (decided by how daemon/src uses the value):
//   live         in force at once (read at each use, or applied by Broker::reload);
//   new_clients  agreed per client in `welcome`: a connected client keeps what it was told;
//   restart      read once at start, or a change would break what connected clients were told:
//                SIGHUP logs a warning naming it and keeps the value in force.
const Setting kSettings[] = {
    text("endpoint", &Options::endpoint, Reload::restart,
         "client endpoint to bind, ipc://PATH or tcp://HOST:PORT (default: "
         "ipc://$XDG_RUNTIME_DIR/zexec/zexecd.sock, "
         "/run/zexec/zexecd.sock as root)"),
    integer("workers", &Options::workers, 0, 4096, Reload::live,
            "worker processes (0 = number of cores); on reload the pool grows, or shrinks between tasks"),
    text("worker_command", &Options::worker_command, Reload::live,
         "worker command line \"PATH ARGS...\" (default: zexec-worker beside zexecd); on reload, for "
         "workers started from then on"),
    text("log_level", &Options::log_level, Reload::live, "trace, debug, info, warn, error or off"),
    integer("heartbeat_ms", &Options::heartbeat_ms, 10, 60000, Reload::new_clients,
            "heartbeat period towards clients and workers, ms (a connected client and a running worker "
            "keep the one they were given)"),
    integer("client_timeout_ms", &Options::client_timeout_ms, 0, 3600000, Reload::new_clients,
            "drop a client silent this long, ms (0 = 5 x heartbeat_ms)"),
    integer("worker_liveness_ms", &Options::worker_liveness_ms, 50, 3600000, Reload::live,
            "kill and replace a worker silent this long, ms"),
    integer("max_prefetch", &Options::max_prefetch, 1, 65536, Reload::live,
            "most unfinished tasks sent to one worker"),
    integer("steal_after_ms", &Options::steal_after_ms, 0, 3600000, Reload::live,
            "idle workers take unstarted tasks queued behind a task running this long, ms"),
    integer("max_tasks_per_worker", &Options::max_tasks_per_worker, 0, 2000000000, Reload::live,
            "replace a worker after it ran this many tasks (0 = never)"),
    integer("max_memory_per_worker_mb", &Options::max_memory_per_worker_mb, 0, 1000000, Reload::live,
            "replace a worker whose resident memory passes this many MiB, between tasks (0 = never)"),
    integer("task_timeout_ms", &Options::task_timeout_ms, 0, 2000000000, Reload::live,
            "hard time limit for a task that sets no timeout of its own, ms (0 = none); on reload, for "
            "tasks submitted from then on"),
    integer("quarantine_after", &Options::quarantine_after, 1, 1000, Reload::live,
            "a task that crashed its worker this many times fails as Quarantined"),
    integer("cancel_grace_ms", &Options::cancel_grace_ms, 0, 3600000, Reload::live,
            "forced cancel of a running task: SIGTERM, then SIGKILL after this, ms"),
    // These two are told to each client in `welcome`, but the daemon enforces one figure for all
    // (on_submit, flush_client): a lower max_pending would fail tasks a connected client was allowed
    // to send, a higher max_unacked break the bound it was promised. Restart until those read a
    // per-client copy; then new_clients.
    integer("max_pending_per_client", &Options::max_pending_per_client, 1, 100000000, Reload::restart,
            "most unfinished tasks one client may have in the daemon"),
    integer("shutdown_grace_ms", &Options::shutdown_grace_ms, 0, 3600000, Reload::live,
            "on SIGTERM, how long running tasks may finish, ms"),
    integer("max_unacked_updates", &Options::max_unacked_updates, 1, 65536, Reload::restart,
            "per client: result messages in flight awaiting ack"),
    integer("max_clients", &Options::max_clients, 0, 1000000, Reload::live,
            "most clients at once; a hello past it gets error too_many_clients (0 = what the open-file "
            "limit allows, at 4 descriptors a client; a larger number is lowered to that; `status` shows "
            "the figure in use); lowered on reload, it refuses new clients and drops none"),
    text("journal", &Options::journal, Reload::restart,
         "keep accepted tasks, their attempts and undelivered results in this file (SQLite), so that a "
         "restart loses none and clients resume their sessions (empty = in memory only)"),
    text("journal_sync", &Options::journal_sync, Reload::restart,
         "full: every commit is synced to the disk (survives power loss); normal: not synced (survives a "
         "crash of zexecd, not of the machine)"),
    integer("session_timeout_ms", &Options::session_timeout_ms, 1000, 2000000000, Reload::live,
            "with a journal: a client's session (its tasks and results) waits this long after it was last "
            "heard from for it to come back, ms"),
    integer("metrics_port", &Options::metrics_port, 0, 65535, Reload::live,
            "serve Prometheus metrics on this HTTP port (0 = off)"),
    text("metrics_address", &Options::metrics_address, Reload::live, "address the metrics port listens on"),
    integer("parent_pid", &Options::parent_pid, 0, 2147483647, Reload::live,
            "stop as on SIGTERM once the process with this pid is no longer zexecd's parent, e.g. "
            "an embedded daemon's program (0 = off)"),
    boolean("print_endpoint", &Options::print_endpoint, Reload::restart,
            "print the bound endpoint on stdout once serving (useful with tcp://HOST:*)"),
};

const Setting* find(std::string_view name) {
  for (const auto& s : kSettings)
    if (name == s.name) return &s;
  return nullptr;
}

std::string flag_of(const char* name) {
  std::string s = name;
  for (auto& c : s)
    if (c == '_') c = '-';
  return s;
}

// Sets one setting from text; throws std::invalid_argument with the reason (no location).
void set_from_text(const Setting& s, Options& o, const std::string& v) {
  switch (s.kind) {
    case Kind::string:
      o.*s.str_field = v;
      return;
    case Kind::boolean:
      if (v == "true" || v == "1" || v == "yes")
        o.*s.bool_field = true;
      else if (v == "false" || v == "0" || v == "no")
        o.*s.bool_field = false;
      else
        throw std::invalid_argument("'" + v + "' is not true or false");
      return;
    case Kind::integer: {
      long n = 0;
      auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
      if (ec != std::errc() || p != v.data() + v.size())
        throw std::invalid_argument("'" + v + "' is not an integer");
      if (n < s.min || n > s.max)
        throw std::invalid_argument(v + " is out of range [" + std::to_string(s.min) + ", " +
                                    std::to_string(s.max) + "]");
      o.*s.int_field = static_cast<int>(n);
      return;
    }
  }
}

// " (restart)" / " (new clients)" after a setting's help: what SIGHUP does with it.
const char* reload_tag(const Setting& s) {
  switch (s.reload) {
    case Reload::live:
      return "";
    case Reload::new_clients:
      return " (new clients)";
    case Reload::restart:
      return " (restart)";
  }
  return "";
}

std::string value_text(const Setting& s, const Options& o) {
  switch (s.kind) {
    case Kind::string:
      return o.*s.str_field;
    case Kind::boolean:
      return o.*s.bool_field ? "true" : "false";
    case Kind::integer:
      return std::to_string(o.*s.int_field);
  }
  return {};
}

// Pools are the one setting that is a list of tables, so they are parsed here and not in the table.
void check_pool(const PoolSpec& p, const Options& o) {
  if (p.name.empty() || p.name.size() > 64 ||
      p.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
          std::string::npos)
    throw std::invalid_argument("pool name '" + p.name + "': use letters, digits, '_' and '-' (at most 64)");
  if (p.name == "default")
    throw std::invalid_argument(
        "pool 'default' is the one of workers and worker_command; name this one otherwise");
  if (p.workers < 1 || p.workers > 4096)
    throw std::invalid_argument("pool '" + p.name + "': workers " + std::to_string(p.workers) +
                                " is out of range [1, 4096]");
  if (p.command.find_first_not_of(" \t") == std::string::npos)
    throw std::invalid_argument("pool '" + p.name + "': command is empty");
  for (const auto& q : o.pools)
    if (q.name == p.name) throw std::invalid_argument("pool '" + p.name + "' is defined twice");
}

// --pool NAME:WORKERS:COMMAND (the command may itself contain ':').
PoolSpec pool_from_flag(const std::string& v) {
  auto a = v.find(':'), b = a == std::string::npos ? a : v.find(':', a + 1);
  if (b == std::string::npos) throw std::invalid_argument("'" + v + "' is not NAME:WORKERS:COMMAND");
  PoolSpec p;
  p.name = v.substr(0, a);
  std::string n = v.substr(a + 1, b - a - 1);
  auto [end, ec] = std::from_chars(n.data(), n.data() + n.size(), p.workers);
  if (ec != std::errc() || end != n.data() + n.size())
    throw std::invalid_argument("'" + n + "' is not a number of workers");
  p.command = v.substr(b + 1);
  return p;
}

// [pools.NAME] tables: workers = N, command = "PATH ARGS...".
void load_pools(const std::string& path, const toml::node& node, Options& out) {
  auto at = [&](const toml::node& n) {
    return path + ":" + std::to_string(n.source().begin.line) + ":" +
           std::to_string(n.source().begin.column) + ": ";
  };
  const toml::table* pools = node.as_table();
  if (!pools) throw std::invalid_argument(at(node) + "pools: expected tables [pools.NAME]");
  // In the order of the file: the first pool that runs a name gets its tasks. (A toml::table
  // iterates its keys sorted.)
  std::vector<std::pair<std::string, const toml::node*>> in_order;
  for (auto&& [name, pool_node] : *pools) in_order.emplace_back(std::string(name.str()), &pool_node);
  std::sort(in_order.begin(), in_order.end(), [](const auto& a, const auto& b) {
    const auto &x = a.second->source().begin, &y = b.second->source().begin;
    return std::pair(x.line, x.column) < std::pair(y.line, y.column);
  });
  for (const auto& [name, node_ptr] : in_order) {
    const toml::node& pool_node = *node_ptr;
    const toml::table* t = pool_node.as_table();
    std::string where = at(pool_node) + "pools." + name;
    if (!t) throw std::invalid_argument(where + ": expected a table with workers and command");
    PoolSpec p;
    p.name = name;
    for (auto&& [key, v] : *t) {
      if (key == "workers" && v.is_integer()) {
        std::int64_t n = v.as_integer()->get();
        if (n < 1 || n > 4096)
          throw std::invalid_argument(at(v) + "pools." + name + ".workers: " + std::to_string(n) +
                                      " is out of range [1, 4096]");
        p.workers = static_cast<int>(n);
      } else if (key == "command" && v.is_string()) {
        p.command = v.as_string()->get();
      } else {
        throw std::invalid_argument(at(v) + "pools." + p.name + "." + std::string(key.str()) +
                                    ": expected workers = N or command = \"PATH ARGS...\"");
      }
    }
    try {
      check_pool(p, out);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(where + ": " + e.what());
    }
    out.pools.push_back(std::move(p));
  }
}

std::string pools_text(const Options& o) {
  std::string s;
  for (const auto& p : o.pools)
    s += (s.empty() ? "" : "; ") + p.name + ":" + std::to_string(p.workers) + ":" + p.command;
  return s;
}

void print_help() {
  std::printf(
      "zexecd - the zexec task daemon: runs named tasks in supervised worker processes and returns\n"
      "each result to the client that submitted it, in the order tasks finish.\n\n"
      "usage: zexecd [--config FILE] [--setting VALUE | --setting=VALUE]...\n\n"
      "Every setting may also be given in the TOML file named by --config, as `name = value`\n"
      "(e.g. workers = 8); flags override the file. SIGHUP re-reads both and applies every setting\n"
      "at once but those marked (new clients): clients connected before keep the value they were\n"
      "welcomed with; and (restart): kept as they are, with a warning, until zexecd restarts.\n\n"
      "settings:\n");
  Options defaults;
  for (const auto& s : kSettings) {
    const char* arg = s.kind == Kind::integer ? " N" : s.kind == Kind::string ? " STR" : "";
    std::printf("  --%-26s %s%s\n", (flag_of(s.name) + arg).c_str(), s.help, reload_tag(s));
    auto d = value_text(s, defaults);
    if (!d.empty()) std::printf("  %-28s default: %s\n", "", d.c_str());
  }
  std::printf(
      "  --pool NAME:N:COMMAND        one more pool of N workers running COMMAND; repeat for more.\n"
      "                               In the file: [pools.NAME] with workers = N, command = \"...\".\n"
      "                               Workers announce the task names they run; a task goes to the\n"
      "                               first pool that runs its name\n");
  std::printf(
      "\n  --config FILE                TOML file of settings\n  --help                       this text\n"
      "  --version                    print the version\n  --manpage                    print the manual "
      "page, zexecd(8)\n");
}

// The manual page, zexecd(8), from the same table: built at compile time, so it cannot drift.
std::string roff_escape(std::string s) {
  std::string out;
  for (char c : s) {
    if (c == '\\')
      out += "\\e";
    else if (c == '-')
      out += "\\-";
    else
      out += c;
  }
  if (!out.empty() && (out[0] == '.' || out[0] == '\'')) out.insert(0, "\\&");
  return out;
}

void print_manpage() {
  std::printf(
      ".TH ZEXECD 8 \"\" \"zexec %s\" \"zexec\"\n"
      ".SH NAME\nzexecd \\- the zexec task daemon\n"
      ".SH SYNOPSIS\n.B zexecd\n[\\fB\\-\\-config\\fR \\fIFILE\\fR] [\\fB\\-\\-\\fIsetting\\fR "
      "\\fIVALUE\\fR]...\n"
      ".SH DESCRIPTION\n"
      "zexecd runs named tasks in supervised worker processes and returns each result to the client that\n"
      "submitted it, in the order tasks finish. Clients (the C++ libzexec, the Python zexec package, the\n"
      "zexec(1) command, or anything that speaks the documented ZeroMQ protocol) connect to its endpoint.\n"
      "It restarts workers that die, kills tasks past their timeout, and owns every task until its\n"
      "result has been acknowledged by the client.\n"
      ".PP\nEvery setting below may be given as a flag or, as \\fIname\\fR = \\fIvalue\\fR, in the TOML file "
      "named by\n"
      "\\fB\\-\\-config\\fR; flags override the file. Unknown keys and out\\-of\\-range values are refused "
      "at start\n"
      "with the file, line and key.\n"
      ".SH OPTIONS\n"
      ".TP\n.BI \\-\\-config \" FILE\"\nTOML file of settings (the service uses /etc/zexec/zexecd.toml).\n",
      ZEXEC_VERSION);
  Options defaults;
  for (const auto& s : kSettings) {
    const char* arg = s.kind == Kind::integer ? " N" : s.kind == Kind::string ? " STR" : "";
    std::printf(".TP\n.BI \\-\\-%s \"%s\"\n%s%s.", roff_escape(flag_of(s.name)).c_str(), arg,
                roff_escape(s.help).c_str(), reload_tag(s));
    auto d = value_text(s, defaults);
    if (!d.empty()) std::printf(" Default: %s.", roff_escape(d).c_str());
    std::printf("\nFile key: \\fB%s\\fR.\n", roff_escape(s.name).c_str());
  }
  std::printf(
      ".TP\n.BI \\-\\-pool \" NAME:N:COMMAND\"\nOne more pool of N workers started from COMMAND; repeat the "
      "flag for more. "
      "In the file: a table \\fB[pools.\\fINAME\\fB]\\fR with \\fBworkers\\fR = N and \\fBcommand\\fR = "
      "\"PATH ARGS...\". "
      "Workers announce the task names they run (Gearman's CAN_DO); a task goes to the first pool "
      "(the default pool first) whose workers run its name, and a name no pool runs fails at once "
      "with UnknownTask.\n"
      ".TP\n.B \\-\\-help\nthe settings, briefly.\n.TP\n.B \\-\\-version\nprint the version.\n"
      ".TP\n.B \\-\\-manpage\nprint this page (roff).\n"
      ".SH SIGNALS\n"
      ".TP\n.B SIGTERM, SIGINT\nDrain: accept no new tasks, let running ones finish within "
      "shutdown_grace_ms,\n"
      "deliver their results, cancel queued ones, exit 0. A second signal stops at once.\n"
      ".TP\n.B SIGHUP\nRe\\-read the settings (the \\-\\-config file and the flags) and resize the worker "
      "pools\n"
      "without losing a task. Every setting takes effect at once except those marked (new clients),\n"
      "which apply to clients that connect afterwards (a connected client keeps the heartbeat and\n"
      "timeout it was welcomed with), and those marked (restart), which keep their value until\n"
      "zexecd restarts; a warning names each of these that changed.\n"
      ".SH ENVIRONMENT\n"
      ".TP\n.B NOTIFY_SOCKET, WATCHDOG_USEC\nset by systemd: READY=1, STATUS=, WATCHDOG=1 and STOPPING=1 are "
      "sent.\n"
      ".TP\n.B JOURNAL_STREAM\nset by systemd: log lines carry journal priorities and no timestamps.\n"
      ".TP\n.B RUNTIME_DIRECTORY\nwhere the private worker sockets go (else $XDG_RUNTIME_DIR, else /tmp).\n"
      ".SH FILES\n"
      ".TP\n.I /etc/zexec/zexecd.toml\nthe service's settings.\n"
      ".TP\n.I /run/zexec/zexecd.sock\nthe default endpoint when run as root or by systemd.\n"
      ".SH EXIT STATUS\n0 after a drain; 1 on a fatal error (bad settings, endpoint in use), with the reason "
      "on stderr.\n"
      ".SH SEE ALSO\nzexec(1), systemctl(1), the protocol in /usr/share/doc/zexec/PROTOCOL.md\n");
}

}  // namespace

void load_config(const std::string& path, Options& out) {
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    const auto& at = e.source().begin;
    throw std::invalid_argument(path + ":" + std::to_string(at.line) + ":" + std::to_string(at.column) +
                                ": " + std::string(e.description()));
  }
  for (auto&& [key, node] : table) {
    const auto& at = node.source().begin;
    std::string where = path + ":" + std::to_string(at.line) + ":" + std::to_string(at.column) + ": " +
                        std::string(key.str()) + ": ";
    if (key == "pools") {
      load_pools(path, node, out);
      continue;
    }
    const Setting* s = find(key.str());
    if (!s) throw std::invalid_argument(where + "unknown setting (see zexecd --help)");
    std::string value;
    if (s->kind == Kind::integer && node.is_integer())
      value = std::to_string(node.as_integer()->get());
    else if (s->kind == Kind::string && node.is_string())
      value = node.as_string()->get();
    else if (s->kind == Kind::boolean && node.is_boolean())
      value = node.as_boolean()->get() ? "true" : "false";
    else
      throw std::invalid_argument(where + "expected " +
                                  (s->kind == Kind::integer  ? "an integer"
                                   : s->kind == Kind::string ? "a string"
                                                             : "true or false"));
    try {
      set_from_text(*s, out, value);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(where + e.what());
    }
  }
}

bool parse_options(int argc, char** argv, Options& out) {
  // The file first, wherever --config stands, so that every flag overrides it.
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--config" && i + 1 < argc) out.config_path = argv[i + 1];
    if (arg.rfind("--config=", 0) == 0) out.config_path = arg.substr(9);
  }
  if (!out.config_path.empty()) load_config(out.config_path, out);
  std::size_t file_pools = out.pools.size();
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      print_help();
      return false;
    }
    if (arg == "--manpage") {
      print_manpage();
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
    if (name == "pool") {
      if (!has_value && i + 1 >= argc) throw std::invalid_argument("--pool needs NAME:WORKERS:COMMAND");
      try {
        PoolSpec p = pool_from_flag(has_value ? value : argv[++i]);
        // A flag overrides the file's pool of that name (flags win over the file), not another flag's.
        auto& from_file = out.pools;
        auto same = std::find_if(from_file.begin(), from_file.begin() + static_cast<long>(file_pools),
                                 [&](const PoolSpec& q) { return q.name == p.name; });
        if (same != from_file.begin() + static_cast<long>(file_pools)) {
          file_pools--;
          from_file.erase(same);
        }
        check_pool(p, out);
        out.pools.push_back(std::move(p));
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(std::string("--pool: ") + e.what());
      }
      continue;
    }
    if (name == "config") {
      if (!has_value) ++i;  // loaded above
      if (i >= argc) throw std::invalid_argument("--config needs a file");
      continue;
    }
    const Setting* found = nullptr;
    for (const auto& s : kSettings)
      if (flag_of(s.name) == name) found = &s;
    if (!found) throw std::invalid_argument("unknown option --" + name + " (see --help)");
    if (!has_value && found->kind == Kind::boolean) {
      value = "true";
    } else if (!has_value) {
      if (i + 1 >= argc) throw std::invalid_argument("--" + name + " needs a value");
      value = argv[++i];
    }
    try {
      set_from_text(*found, out, value);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument("--" + name + ": " + e.what());
    }
  }
  if (out.endpoint.empty()) out.endpoint = zexec::proto::default_endpoint();
  out.endpoint_given = out.endpoint;
  // Here and not only at start (main.cpp): on a reload spdlog would read a misspelt level as "off".
  static constexpr std::string_view kLevels[] = {"trace", "debug", "info",     "warn", "warning",
                                                 "err",   "error", "critical", "off"};
  if (std::find(std::begin(kLevels), std::end(kLevels), out.log_level) == std::end(kLevels))
    throw std::invalid_argument("log_level: unknown level '" + out.log_level +
                                "' (trace, debug, info, warn, error or off)");
  // A worker heartbeats every heartbeat_ms (ZEXEC_HEARTBEAT_MS, given at its start) and is killed
  // after worker_liveness_ms of silence: the other way round, every idle worker would be killed
  // and replaced, and every long task with it (e.g. heartbeat_ms raised to 5000 on a reload).
  if (out.heartbeat_ms >= out.worker_liveness_ms)
    throw std::invalid_argument("heartbeat_ms " + std::to_string(out.heartbeat_ms) +
                                " must be below worker_liveness_ms " +
                                std::to_string(out.worker_liveness_ms) +
                                " (a worker silent that long is killed; it heartbeats every heartbeat_ms)");
  return true;
}

std::vector<KeptSetting> keep_restart_only(const Options& in_force, Options& fresh) {
  std::vector<KeptSetting> kept;
  for (const auto& s : kSettings) {
    if (s.reload != Reload::restart) continue;
    std::string wanted = value_text(s, fresh), now = value_text(s, in_force);
    // The endpoint in force is the bound one (tcp port * resolved): compare what was asked for.
    bool endpoint = s.str_field == &Options::endpoint;
    if (endpoint ? wanted != in_force.endpoint_given : wanted != now)
      kept.push_back({s.name, std::move(wanted), now});
    switch (s.kind) {
      case Kind::string:
        fresh.*s.str_field = in_force.*s.str_field;
        break;
      case Kind::boolean:
        fresh.*s.bool_field = in_force.*s.bool_field;
        break;
      case Kind::integer:
        fresh.*s.int_field = in_force.*s.int_field;
        break;
    }
  }
  fresh.endpoint_given = in_force.endpoint_given;
  return kept;
}

std::vector<std::pair<std::string, std::string>> settings_of(const Options& o) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& s : kSettings) out.emplace_back(s.name, value_text(s, o));
  out.emplace_back("pools", pools_text(o));
  return out;
}

}  // namespace zexecd
