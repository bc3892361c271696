// Prometheus metrics over HTTP (text exposition format), off unless --metrics-port is set.
// The HTTP server runs on its own thread and only ever reads the latest snapshot, which the
// broker's loop publishes; it never touches the broker's state.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace httplib {
class Server;
}

namespace zexecd {

class MetricsServer {
 public:
  // Binds address:port (throws std::runtime_error when it cannot) and serves GET /metrics.
  MetricsServer(const std::string& address, int port);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  void publish(std::string text);

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<bool> listened_{false};  // listen_after_bind() returned
  std::mutex mutex_;
  std::string text_;
};

}  // namespace zexecd
