// A client's task id -> the daemon's handle, for every unfinished task of that client (the
// shared flat table, zexec/detail/id_map.hpp; handles are never 0, which marks an empty slot).
#pragma once

#include <cstdint>

#include "zexec/detail/id_map.hpp"

namespace zexecd {

using IdMap = zexec::detail::IdMap<std::uint64_t>;

}  // namespace zexecd
