// Telling systemd what the daemon is doing (Type=notify): READY=1 once serving, STATUS= lines,
// STOPPING=1 while draining, WATCHDOG=1 pings when WatchdogSec= is set. Without systemd
// ($NOTIFY_SOCKET unset) every call is a no-op.
#pragma once

#include <chrono>
#include <string>

namespace zexecd {

class Notifier {
 public:
  Notifier();
  bool enabled() const { return enabled_; }
  // Half the watchdog period systemd asked for, or zero when there is no watchdog.
  std::chrono::microseconds watchdog_interval() const { return watchdog_interval_; }
  void ready(const std::string& status);
  void status(const std::string& status);  // sent only when it changed
  void stopping(const std::string& status);
  void watchdog();

 private:
  void send(const std::string& state);
  bool enabled_ = false;
  std::chrono::microseconds watchdog_interval_{0};
  std::string last_status_;
};

}  // namespace zexecd
