// zexec::Client: a thin handle over ClientCore (which futures reference weakly, for cancel()).
#include "zexec/client.hpp"

#include "client_core.hpp"

namespace zexec {

Client::Client(std::string endpoint, ClientOptions options)
    : core_(std::make_shared<detail::ClientCore>(std::move(endpoint), std::move(options))) {
  core_->connect();
}

Client::~Client() {
  if (core_) core_->close();
}

Client::Client(Client&&) noexcept = default;

Client& Client::operator=(Client&& other) noexcept {
  if (this != &other) {
    if (core_) core_->close();
    core_ = std::move(other.core_);
  }
  return *this;
}

detail::ClientCore& Client::core() const {
  if (!core_) throw Error("zexec::Client: used after being moved from");
  return *core_;
}

Future Client::submit_raw(std::string_view name, std::string args, const TaskOptions& options) {
  return core().submit(name, std::move(args), options);
}

std::optional<Future> Client::poll(Timeout timeout) {
  return core().poll(timeout);
}
std::size_t Client::cancel_all(bool force) {
  return core().cancel_all(force);
}
bool Client::wait_all(Timeout timeout) {
  return core().wait_all(timeout);
}
std::size_t Client::unfinished() const {
  return core().unfinished();
}
std::string Client::last_error() const {
  return core().last_error();
}
bool Client::connected() const {
  return core().connected();
}
const std::string& Client::endpoint() const {
  return core().endpoint();
}
std::string Client::results_endpoint() const {
  return core().results_endpoint();
}
std::uint64_t Client::client_id() const {
  return core().welcome().client_id;
}
std::uint32_t Client::workers() const {
  return core().welcome().workers;
}
std::uint32_t Client::heartbeat_ms() const {
  return core().welcome().heartbeat_ms;
}
std::uint32_t Client::max_pending() const {
  return core().welcome().max_pending;
}

void Client::close() {
  if (core_) core_->close();
}

}  // namespace zexec
