#include "metrics.hpp"

#include <httplib.h>

#include <stdexcept>

namespace zexecd {

MetricsServer::MetricsServer(const std::string& address, int port)
    : server_(std::make_unique<httplib::Server>()) {
  server_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    std::lock_guard lock(mutex_);
    res.set_content(text_, "text/plain; version=0.0.4");
  });
  if (!server_->bind_to_port(address.c_str(), port))
    throw std::runtime_error("metrics: cannot listen on " + address + ":" + std::to_string(port));
  thread_ = std::thread([this] {
    server_->listen_after_bind();
    listened_ = true;
  });
}

MetricsServer::~MetricsServer() {
  // httplib's stop() does nothing until the server runs: one stopped right after it was made (a
  // reload moving it twice) would leave its thread listening, and the join below waiting for
  // good. It runs within microseconds of the thread's start, or has already ended.
  while (!server_->is_running() && !listened_) std::this_thread::yield();
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

void MetricsServer::publish(std::string text) {
  std::lock_guard lock(mutex_);
  text_ = std::move(text);
}

}  // namespace zexecd
