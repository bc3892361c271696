// zexecd's settings. One declarative table (options.cpp) drives the command line, --help and
// (later) the config file and `status`, so a setting is described exactly once.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace zexecd {

// A pool besides the default one: `[pools.NAME]` in the file, or --pool NAME:WORKERS:COMMAND.
struct PoolSpec {
  std::string name;
  int workers = 1;
  std::string command;
  bool operator==(const PoolSpec&) const = default;
};

// What SIGHUP does with a changed setting (each row of the table in options.cpp says which).
enum class Reload {
  live,         // in force at once
  new_clients,  // agreed per client in `welcome`: clients that connect afterwards get it
  restart,      // kept as it is (a warning names it) until zexecd restarts
};

struct Options {
  std::string endpoint;        // client endpoint (ipc:// or tcp://)
  int workers = 0;             // worker processes; 0 = number of cores
  std::string worker_command;  // "PATH ARGS..."; empty = zexec-worker beside zexecd
  std::string log_level = "info";
  int heartbeat_ms = 1000;        // heartbeat period towards clients and workers
  int client_timeout_ms = 0;      // a silent client is dropped after this; 0 = 5 x heartbeat
  int worker_liveness_ms = 3000;  // a silent worker is killed and replaced after this
  int max_prefetch = 256;         // most unfinished tasks sent to one worker
  int steal_after_ms = 5;         // a worker's head task running this long lets idle workers take its queue
  int max_tasks_per_worker = 0;   // replace a worker after this many tasks; 0 = never
  int max_memory_per_worker_mb = 0;     // replace a worker whose RSS passes this, between tasks; 0 = never
  int task_timeout_ms = 0;              // hard limit for tasks that set none themselves; 0 = none
  int quarantine_after = 3;             // a task that crashed its worker this many times is refused
  int cancel_grace_ms = 2000;           // forced cancel: SIGTERM, then SIGKILL after this
  int max_pending_per_client = 100000;  // unfinished tasks one client may have in the daemon
  int shutdown_grace_ms = 10000;        // on SIGTERM: how long running tasks may finish
  int max_unacked_updates = 64;         // per client: updates in flight before the daemon waits for acks
  int max_clients = 0;  // clients connected at once; 0 = as many as the open-file limit allows (fd_budget)
  bool print_endpoint = false;
  int parent_pid = 0;           // stop when this process is no longer our parent (embedded daemons); 0 = off
  std::vector<PoolSpec> pools;  // more pools, each with its own command (the default one is above)
  std::string journal;          // keep accepted tasks on disk here; empty = in memory only
  std::string journal_sync = "full";          // full (survives power loss) or normal (a crash of zexecd)
  int session_timeout_ms = 60000;             // with a journal: a session unheard this long ends
  int metrics_port = 0;                       // Prometheus metrics over HTTP; 0 = off
  std::string metrics_address = "127.0.0.1";  // loopback unless you say otherwise
  std::string config_path;  // the --config file, if any (not a setting: where settings come from)
  // The endpoint as configured (not a setting): `endpoint` becomes the bound one (tcp port * resolved),
  // and a reload compares the file's with this one.
  std::string endpoint_given;
};

// Parses argv: the TOML file of --config (if any) first, then every flag over it. Throws
// std::invalid_argument naming the flag, or the file, line, column and key, on bad input.
// Returns false when the program should exit 0 at once (--help / --version printed).
bool parse_options(int argc, char** argv, Options& out);

// Reads a TOML file of settings into `out`; unknown keys and bad values are refused.
void load_config(const std::string& path, Options& out);

// A restart-only setting that a reload would have changed: its name, the value asked for, the
// value kept in force.
struct KeptSetting {
  std::string name, wanted, kept;
};
// For SIGHUP: resets in `fresh` every Reload::restart setting to its value in `in_force`, and
// returns those whose value differed.
std::vector<KeptSetting> keep_restart_only(const Options& in_force, Options& fresh);

// Every setting and its current value, as text (for `status`).
std::vector<std::pair<std::string, std::string>> settings_of(const Options& o);

}  // namespace zexecd
