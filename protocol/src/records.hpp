// The two records messages carry in lists: a task (submit, tasks) and an event (update,
// worker_events). Unlike a message they are not a fixed list of fields: a task has an optional
// options map, an event's length depends on its kind (docs/PROTOCOL.md §3).
#pragma once

#include <string_view>

#include "wire.hpp"
#include "zexec/protocol.hpp"

namespace zexec::proto::records {

void pack_task(wire::Packer& pk, std::uint64_t id, std::string_view name, std::string_view args,
               const TaskOptionFields& options, std::uint32_t attempt = 0);
void pack_event(wire::Packer& pk, const Event& e);

TaskSpec get_task(const wire::Obj& o);
Event get_event(const wire::Obj& o);

}  // namespace zexec::proto::records
