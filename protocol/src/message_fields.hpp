// Each message's fields, in wire order: the table encode() and decode() both walk
// (protocol.cpp), so a field is written down once. The first name of each field is what a
// refusal calls it. docs/PROTOCOL.md §3 and §4 list the same fields for other implementations.
//
// Every message in detail/message_list.hpp needs an entry here, or protocol.cpp fails to compile.
#pragma once

#include <tuple>

#include "field.hpp"

namespace zexec::proto::fields {

template <class M>
constexpr bool kHasTable = false;
template <class M>
inline constexpr auto kFields = [] {
  static_assert(kHasTable<M>, "this message has no field table in message_fields.hpp");
  return std::tuple<>{};
}();

// ---- client <-> daemon ----

template <>
inline constexpr auto kFields<Hello> = std::tuple{
    field("client name", &Hello::client_name),
    field("pid", &Hello::pid),
    added_field("session", &Hello::session),
    added_bytes_field("session token", &Hello::token),
};
template <>
inline constexpr auto kFields<Welcome> = std::tuple{
    field("client id", &Welcome::client_id),
    field("results endpoint", &Welcome::results_endpoint),
    field("workers", &Welcome::workers),
    field("heartbeat_ms", &Welcome::heartbeat_ms),
    field("max_pending", &Welcome::max_pending),
    added_field("max_unacked_updates", &Welcome::max_unacked_updates),
    added_field("client_timeout_ms", &Welcome::client_timeout_ms),
    added_field("session", &Welcome::session),
    added_bytes_field("session token", &Welcome::token),
    added_field("resumed", &Welcome::resumed),
};
template <>
inline constexpr auto kFields<Submit> = std::tuple{field("tasks", &Submit::tasks)};
template <>
inline constexpr auto kFields<Cancel> = std::tuple{
    field("request id", &Cancel::request_id),
    field("task ids", &Cancel::task_ids),
    field("force", &Cancel::force),
};
template <>
inline constexpr auto kFields<CancelReply> = std::tuple{
    field("request id", &CancelReply::request_id),
    field("outcomes", &CancelReply::outcomes),
};
template <>
inline constexpr auto kFields<Ack> = std::tuple{field("seq", &Ack::seq)};
template <>
inline constexpr auto kFields<Heartbeat> = std::tuple{};
template <>
inline constexpr auto kFields<Bye> = std::tuple{};
template <>
inline constexpr auto kFields<Error> = std::tuple{
    field("error code", &Error::code),
    field("error message", &Error::message),
};
template <>
inline constexpr auto kFields<Status> = std::tuple{};
template <>
inline constexpr auto kFields<StatusReply> = std::tuple{bytes_field("status body", &StatusReply::body)};
template <>
inline constexpr auto kFields<Drain> = std::tuple{};
template <>
inline constexpr auto kFields<AdminCancel> = std::tuple{
    field("request id", &AdminCancel::request_id),
    field("client id", &AdminCancel::client_id),
    field("task ids", &AdminCancel::task_ids),
    field("force", &AdminCancel::force),
};

// ---- daemon -> client, on the results socket ----

template <>
inline constexpr auto kFields<Update> = std::tuple{
    field("seq", &Update::seq),
    field("events", &Update::events),
    added_field("accepted_through", &Update::accepted_through),
};

// ---- worker <-> daemon ----

template <>
inline constexpr auto kFields<WorkerHello> = std::tuple{
    field("worker id", &WorkerHello::worker_id),
    field("pid", &WorkerHello::pid),
    field("capacity", &WorkerHello::capacity),
    list_field("task names", "task name", &WorkerHello::tasks),
};
template <>
inline constexpr auto kFields<WorkerEvents> = std::tuple{
    field("worker id", &WorkerEvents::worker_id),
    field("busy_us", &WorkerEvents::busy_us),
    field("events", &WorkerEvents::events),
};
template <>
inline constexpr auto kFields<WorkerRevoked> = std::tuple{
    field("worker id", &WorkerRevoked::worker_id),
    field("task ids", &WorkerRevoked::task_ids),
};
template <>
inline constexpr auto kFields<Tasks> = std::tuple{field("tasks", &Tasks::tasks)};
template <>
inline constexpr auto kFields<Revoke> = std::tuple{field("task ids", &Revoke::task_ids)};
template <>
inline constexpr auto kFields<Shutdown> = std::tuple{};

// ---- what the tables say, for the codec ----

template <class M>
constexpr std::uint32_t kFieldCount = std::tuple_size_v<std::remove_const_t<decltype(kFields<M>)>>;

// The fields every frame of M has: those before the first added one.
template <class M>
constexpr std::uint32_t kRequiredCount = std::apply(
    [](const auto&... f) {
      std::uint32_t n = 0;
      bool added = false;
      ((added = added || f.info.added, n += !added), ...);
      return n;
    },
    kFields<M>);

template <class M>
constexpr bool kAddedFieldsTrail = std::apply(
    [](const auto&... f) {
      std::uint32_t added = 0;
      ((added += f.info.added), ...);
      return kRequiredCount<M> + added == kFieldCount<M>;
    },
    kFields<M>);

}  // namespace zexec::proto::fields
