// How tasks end: results, failures (with opt-in retries and quarantine), cancellation.
// Every path that settles a task goes through here, so "exactly one outcome" has one home.
#include <signal.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "broker.hpp"

namespace zexecd {

namespace proto = zexec::proto;

namespace {
const char* outcome_name(proto::Outcome o) {
  switch (o) {
    case proto::Outcome::started:
      return "started";
    case proto::Outcome::ok:
      return "succeeded";
    case proto::Outcome::error:
      return "failed";
    case proto::Outcome::cancelled:
      return "cancelled";
  }
  return "?";
}

// Errors that a retry cannot fix: the same call would fail the same way.
bool deterministic(const std::string& type) {
  return type == "UnknownTask" || type == "BadArguments" || type == "ResultTooLarge";
}
}  // namespace

void Broker::finish_task(Handle h, proto::Event&& e) {
  Task* t = tasks_.get(h);
  if (!t) return;
  if (t->attempts > 1 && e.kind == proto::Outcome::error)
    e.error_message += " (attempt " + std::to_string(t->attempts) + ")";
  // One line per task at debug: CLIENT:TASK, the id `zexec cancel` and status use.
  if (spdlog::should_log(spdlog::level::debug))
    spdlog::debug("task {}:{} '{}' {}{}{}", t->client_id, t->client_task_id, t->name->text,
                  outcome_name(e.kind), e.kind == proto::Outcome::error ? ": " + e.error_type + ": " : "",
                  e.kind == proto::Outcome::error ? e.error_message : "");
  if (Client* c = find_client(t->client_id)) {
    c->tasks.erase(t->client_task_id);
    if (e.kind == proto::Outcome::cancelled) c->cancelled.insert(t->client_task_id);
  }
  post_event(*t, std::move(e));
  tasks_.release(h);
}

void Broker::task_failed(Handle h, proto::Event&& e, Failure why) {
  Task* t = tasks_.get(h);
  if (!t) return;
  bool retry = false;
  if (why == Failure::raised && !deterministic(e.error_type)) {
    retry = t->errors_seen++ < t->retries;
  } else if (why == Failure::crashed) {
    t->crashes_seen++;
    if (t->crashes_seen >= static_cast<std::uint32_t>(opts_.quarantine_after)) {
      // A poison task must not crash-loop the pool, whatever its retry budget says.
      counters_.quarantined++;
      spdlog::warn("task '{}' of client {} quarantined: it crashed its worker {} times", t->name->text,
                   t->client_id, t->crashes_seen);
      e.error_type = "Quarantined";
      e.error_message = "task '" + t->name->text + "' crashed its worker " + std::to_string(t->crashes_seen) +
                        " times and was quarantined; last: " + e.error_message;
    } else {
      retry = t->crashes_seen <= t->crash_retries;
    }
  }
  if (!retry) {
    if (why == Failure::raised) counters_.failed++;
    if (why == Failure::crashed && e.error_type == "WorkerCrashed") counters_.crashed++;
    if (why == Failure::timed_out) counters_.timed_out++;
    finish_task(h, std::move(e));
    return;
  }
  // Backoff doubles per retry of this task: base, 2 x base, 4 x base, ...
  counters_.retried++;
  std::uint32_t n = t->attempts - 1;
  auto delay = std::chrono::milliseconds(static_cast<std::int64_t>(t->retry_backoff_ms) << std::min(n, 16u));
  spdlog::debug("task '{}' of client {}: {} ({}); retrying in {} ms", t->name->text, t->client_id,
                e.error_type, e.error_message, delay.count());
  t->state = TaskState::retry_wait;
  t->worker = -1;
  t->attempts++;
  note_retry(*t);  // with a journal: a restart keeps the counts
  retries_.emplace(Clock::now() + delay, h);
}

Clock::time_point Broker::requeue_due_retries(Clock::time_point now) {
  while (!retries_.empty() && retries_.begin()->first <= now) {
    Handle h = retries_.begin()->second;
    retries_.erase(retries_.begin());
    Task* t = tasks_.get(h);
    if (t && t->state == TaskState::retry_wait) requeue_front(h);
  }
  return retries_.empty() ? Clock::time_point::max() : retries_.begin()->first;
}

// Answers every pending cancel request that waits on task `h`.
void Broker::set_cancel_outcome(Handle h, proto::CancelOutcome outcome) {
  Task* t = tasks_.get(h);
  if (!t || t->cancel_req < 0) return;
  std::vector<int> reqs{std::exchange(t->cancel_req, -1)};
  auto [b, e] = extra_cancels_.equal_range(h);
  for (auto it = b; it != e; ++it) reqs.push_back(it->second);
  extra_cancels_.erase(h);
  for (int req : reqs) {
    if (auto& r = cancels_[req])
      for (auto& [id, o] : r->outcomes)
        if (id == t->client_task_id) o = outcome;
    finish_cancel(req);
  }
}

template <class Pred>
bool Broker::any_cancel_request(Handle h, Pred pred) const {
  const Task* t = const_cast<TaskTable&>(tasks_).get(h);
  if (!t || t->cancel_req < 0) return false;
  if (cancels_[t->cancel_req] && pred(*cancels_[t->cancel_req])) return true;
  auto [b, e] = extra_cancels_.equal_range(h);
  for (auto it = b; it != e; ++it)
    if (cancels_[it->second] && pred(*cancels_[it->second])) return true;
  return false;
}

void Broker::cancel_task(Handle h) {
  Task* t = tasks_.get(h);
  if (!t) return;
  counters_.cancelled++;
  // Cancelled by someone else than its owner: the owner hears of it as an event.
  if (any_cancel_request(h, [](const CancelRequest& r) { return !r.reply_to.empty(); }))
    post_event(*t, proto::Event{0, proto::Outcome::cancelled, {}, {}, {}});
  bool admin = any_cancel_request(h, [](const CancelRequest& r) { return !r.reply_to.empty(); });
  set_cancel_outcome(h, proto::CancelOutcome::cancelled);
  if (Client* c = find_client(t->client_id)) {
    c->tasks.erase(t->client_task_id);
    c->cancelled.insert(t->client_task_id);
    // Its owner hears it from a cancel_reply, with nothing to deliver: journaled as cancelled.
    if (!admin && t->batch != kNoBatch) note_cancelled(*c, {t->client_task_id}, {t->batch});
  }
  tasks_.release(h);
}

// A task we tried to take back had already started. A plain cancel fails ("running"); a
// forced one stops the worker under it.
void Broker::cancel_missed(Worker& w, Handle h) {
  Task* t = tasks_.get(h);
  if (!t) return;
  t->revoking = false;
  if (t->cancel_req < 0) return;
  if (any_cancel_request(h, [](const CancelRequest& r) { return r.force; }))
    workers_.kill(w, KilledBy::cancel, SIGTERM);
  else
    set_cancel_outcome(h, proto::CancelOutcome::running);
}

// The first task a dead worker held: the only one that can have been running.
void Broker::dead_worker_head(Worker& w, Handle h, const std::string& how) {
  Task* t = tasks_.get(h);
  if (!t) return;
  bool started = w.running == h;
  auto innocent = [&] {  // we killed the worker for something else: this task goes on
    t->revoking = false;
    if (t->cancel_req >= 0) return cancel_task(h);
    requeue_front(h);
  };
  std::string pid = std::to_string(w.pid);
  switch (w.killed_by) {
    case KilledBy::cancel:
      return t->cancel_req >= 0 ? cancel_task(h) : innocent();
    case KilledBy::timeout:
      if (h != w.kill_target) return innocent();
      set_cancel_outcome(h, proto::CancelOutcome::finished);
      return task_failed(
          h,
          proto::Event{0,
                       proto::Outcome::error,
                       {},
                       "TaskTimeout",
                       "task '" + t->name->text + "' ran past its " + std::to_string(t->timeout_ms) +
                           " ms timeout; its worker (pid " + pid + ") was killed and replaced"},
          Failure::timed_out);
    case KilledBy::silence:
      if (!started) return innocent();  // most likely stopped before taking it
      set_cancel_outcome(h, proto::CancelOutcome::finished);
      return task_failed(h,
                         proto::Event{0,
                                      proto::Outcome::error,
                                      {},
                                      "WorkerCrashed",
                                      "worker pid " + pid + " stopped responding for " +
                                          std::to_string(opts_.worker_liveness_ms) +
                                          " ms and was killed while running task '" + t->name->text + "'"},
                         Failure::crashed);
    case KilledBy::shutdown:
      if (!started || log_) return innocent();  // cancelled (or, with a journal, run by the next run)
      set_cancel_outcome(h, proto::CancelOutcome::finished);
      counters_.crashed++;
      return finish_task(
          h, proto::Event{0,
                          proto::Outcome::error,
                          {},
                          "WorkerCrashed",
                          "task '" + t->name->text + "' was still running when the shutdown grace of " +
                              std::to_string(opts_.shutdown_grace_ms) + " ms ran out; its worker (pid " +
                              pid + ") was killed"});
    case KilledBy::bad_frame:  // its answer about this task may be the very frame refused
    case KilledBy::none: {
      // It died on its own (or we could not read it). Blame the first task even without a
      // started event: that event may not have left the worker before it died, and a poison
      // task must still be counted.
      set_cancel_outcome(h, proto::CancelOutcome::finished);
      std::string what =
          w.killed_by == KilledBy::none
              ? how + " while running task '" + t->name->text + "'"
              : w.kill_reason + "; it was killed and replaced while running task '" + t->name->text + "'";
      return task_failed(
          h, proto::Event{0, proto::Outcome::error, {}, "WorkerCrashed", "worker pid " + pid + " " + what},
          Failure::crashed);
    }
  }
}

}  // namespace zexecd
