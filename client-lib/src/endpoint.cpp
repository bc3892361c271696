#include "endpoint.hpp"

namespace zexec::detail {
namespace {

constexpr const char* kTcp = "tcp://";

// Splits "tcp://HOST:PORT" into HOST and PORT; false for anything else.
bool split_tcp(const std::string& ep, std::string& host, std::string& port) {
  if (ep.rfind(kTcp, 0) != 0) return false;
  auto colon = ep.rfind(':');
  if (colon == std::string::npos || colon < 6) return false;
  host = ep.substr(6, colon - 6);
  port = ep.substr(colon + 1);
  return true;
}

bool is_wildcard(const std::string& host) {
  return host == "*" || host == "0.0.0.0" || host == "[::]" || host == "::";
}

}  // namespace

std::string resolve_results_endpoint(const std::string& results, const std::string& daemon_endpoint) {
  std::string host, port, daemon_host, daemon_port;
  if (!split_tcp(results, host, port) || !is_wildcard(host)) return results;
  if (!split_tcp(daemon_endpoint, daemon_host, daemon_port) || daemon_host.empty() ||
      is_wildcard(daemon_host))
    daemon_host = "127.0.0.1";  // the daemon endpoint itself was a wildcard: it is on this host
  // A connect endpoint may carry a source address ("tcp://src;host:port"): keep only the host.
  if (auto semi = daemon_host.rfind(';'); semi != std::string::npos)
    daemon_host = daemon_host.substr(semi + 1);
  return kTcp + daemon_host + ":" + port;
}

}  // namespace zexec::detail
