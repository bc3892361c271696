// zexecd: parse the settings, set up logging, run the broker until told to stop.
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <exception>

#include "broker.hpp"
#include "fd_budget.hpp"
#include "options.hpp"
#include "spawn.hpp"

namespace {
// "%*" in a pattern: the syslog priority of the message's level, for journald.
class SyslogPriority : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    static constexpr char kPriority[] = {'7', '7', '6', '4', '3', '2', '6'};  // trace..critical, off
    dest.push_back(kPriority[static_cast<int>(msg.level)]);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<SyslogPriority>(); }
};
}  // namespace

int main(int argc, char** argv) {
  zexecd::Options opts;
  try {
    if (!zexecd::parse_options(argc, argv, opts)) return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "zexecd: %s\n", e.what());
    return 2;
  }
  auto logger = spdlog::stderr_color_mt("zexecd");
  spdlog::set_default_logger(logger);
  if (const char* journal = std::getenv("JOURNAL_STREAM"); journal && *journal) {
    // stderr goes to the journal: it stamps the time itself and reads "<N>" as the priority.
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<SyslogPriority>('*').set_pattern("<%*>%v");
    spdlog::set_formatter(std::move(formatter));
  }
  auto level = spdlog::level::from_str(opts.log_level);
  if (level == spdlog::level::off && opts.log_level != "off") {
    std::fprintf(stderr, "zexecd: --log-level: unknown level '%s'\n", opts.log_level.c_str());
    return 2;
  }
  spdlog::set_level(level);
  // Before the broker opens anything: the soft open-file limit (1024 by default, under systemd
  // too) runs out at a few hundred clients, and libzmq aborts on EMFILE. max_clients keeps the
  // daemon inside what the limit allows.
  const zexecd::FdBudget fds = zexecd::raise_fd_limit();
  zexecd::set_worker_fd_limit(fds.soft_before);
  const zexecd::Note cap = zexecd::apply_client_cap(fds, opts, "start");
  try {
    // SIGHUP re-reads the same file and flags; invalid settings are logged and not applied.
    auto reload = [argc, argv, fds]() -> std::optional<zexecd::Options> {
      zexecd::Options fresh;
      try {
        zexecd::parse_options(argc, argv, fresh);
        zexecd::apply_client_cap(fds, fresh, "SIGHUP").log();  // the pools may have grown
        return fresh;
      } catch (const std::exception& e) {
        spdlog::error("reload: {}", e.what());
        return std::nullopt;
      }
    };
    zexecd::Broker broker(opts, reload);
    fds.note.log();  // after the broker's first line, "zexecd listening on ..."
    cap.log();
    return broker.run();
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return 1;
  }
}
