// Endpoint helpers (internal).
#pragma once

#include <string>

namespace zexec::detail {

// The endpoint a client connects its PULL to, from welcome.results_endpoint: a tcp endpoint with
// a wildcard host (`*`, `0.0.0.0`, `[::]`) gets the host the client used for the daemon endpoint
// (docs/PROTOCOL.md §2); anything else is returned unchanged.
std::string resolve_results_endpoint(const std::string& results, const std::string& daemon_endpoint);

}  // namespace zexec::detail
