#include "mailbox.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <unordered_set>

#include "zexec/worker.hpp"

namespace zexec::worker_internal {

Mailbox::Mailbox() {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw WorkerError(std::string("eventfd: ") + std::strerror(errno));
}

Mailbox::~Mailbox() {
  ::close(wake_fd_);
}

void Mailbox::wake() {
  std::uint64_t one = 1;
  // Can only fail with EAGAIN when the counter is saturated, which still means "readable".
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

void Mailbox::clear_wake() {
  std::uint64_t count;
  [[maybe_unused]] auto n = ::read(wake_fd_, &count, sizeof count);
}

// Only the transition empty -> non-empty wakes the I/O thread: while it has not collected the
// outbox yet, later events simply join it, so tiny tasks get batched many per message.
EventBatch& Mailbox::open_batch_locked(bool& wake) {
  wake = wake || outbox_.empty();
  if (outbox_.empty() || outbox_.back().full()) outbox_.emplace_back();
  return outbox_.back();
}

void Mailbox::push_tasks(std::vector<proto::TaskSpec> tasks) {
  if (tasks.empty()) return;
  {
    std::lock_guard lock(mutex_);
    for (auto& t : tasks) queue_.push_back(std::move(t));
  }
  task_ready_.notify_one();
}

std::vector<std::uint64_t> Mailbox::revoke(const std::vector<std::uint64_t>& ids) {
  std::unordered_set<std::uint64_t> wanted(ids.begin(), ids.end());
  std::vector<std::uint64_t> removed;
  std::lock_guard lock(mutex_);
  // Under the same lock as next_task(): a task is either still queued (and revoked here) or
  // already reported started, never both and never neither.
  auto keep = std::remove_if(queue_.begin(), queue_.end(), [&](const proto::TaskSpec& t) {
    if (!wanted.count(t.id)) return false;
    removed.push_back(t.id);
    return true;
  });
  queue_.erase(keep, queue_.end());
  return removed;
}

void Mailbox::stop() {
  {
    std::lock_guard lock(mutex_);
    stopped_ = true;
  }
  task_ready_.notify_all();
}

std::vector<EventBatch> Mailbox::take_events() {
  std::vector<EventBatch> events;
  std::lock_guard lock(mutex_);
  events.swap(outbox_);
  return events;
}

bool Mailbox::executor_exited() const {
  std::lock_guard lock(mutex_);
  return executor_exited_;
}

bool Mailbox::executor_busy() const {
  std::lock_guard lock(mutex_);
  return busy_;
}

std::size_t Mailbox::unfinished() const {
  std::lock_guard lock(mutex_);
  return queue_.size() + (busy_ ? 1 : 0);
}

std::optional<proto::TaskSpec> Mailbox::next_task() {
  bool need_wake = false;
  std::optional<proto::TaskSpec> task;
  {
    std::unique_lock lock(mutex_);
    task_ready_.wait(lock, [this] { return stopped_ || !queue_.empty(); });
    if (stopped_) return std::nullopt;
    task = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    proto::Event started;
    started.task_id = task->id;
    started.kind = proto::Outcome::started;
    EventBatch& b = open_batch_locked(need_wake);
    proto::append_event(b.bytes, started);
    ++b.count;
  }
  if (need_wake) wake();
  return task;
}

void Mailbox::finish(const proto::Event& final_event, std::uint64_t busy_us) {
  // Encoded before taking the lock: a big result must not hold up the I/O thread.
  EventBatch mine;
  proto::append_event(mine.bytes, final_event);
  bool need_wake = false;
  {
    std::lock_guard lock(mutex_);
    busy_ = false;
    EventBatch& b = open_batch_locked(need_wake);
    if (b.count == 0) {
      b.bytes.swap(mine.bytes);
    } else {
      b.bytes.append(mine.bytes, EventBatch::kHeaderRoom);
    }
    ++b.count;
    b.busy_us += busy_us;
  }
  if (need_wake) wake();
}

void Mailbox::mark_executor_exited() {
  {
    std::lock_guard lock(mutex_);
    executor_exited_ = true;
    busy_ = false;
  }
  wake();
}

}  // namespace zexec::worker_internal
