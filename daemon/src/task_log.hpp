// What the broker keeps on disk (--journal), and when it may let go of it: the one owner of the
// Journal and of the reference counts that decide when a record is forgotten.
//
// Records, all owned by a session (the journal's `owner` column):
//   session    the session's token and client name: written at its first hello
//   batch      a `submit` frame exactly as received: written before any of its tasks exists
//   settled    final events of tasks of batches, as an `update` would carry them (to deliver)
//   cancelled  ids of tasks cancelled through a cancel_reply (settled, nothing to deliver)
//   retry      a task's retry counts, after a failure that is retried
//
// A batch lives while any of its tasks is not yet settled *and* delivered (acknowledged by the
// client, or answered in a cancel_reply). A settled, cancelled or retry record lives while any
// batch it speaks of lives: on replay it says which tasks of those batches not to run again.
// Forgetting a batch and the records that only spoke of it happen in one group, so the journal
// never holds a settled record whose batch is gone, nor a batch whose settled tasks it forgot.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "journal.hpp"

namespace zexecd {

inline constexpr std::uint32_t kNoBatch = UINT32_MAX;

enum class LogKind : std::uint32_t { session = 1, batch = 2, settled = 3, cancelled = 4, retry = 5 };

class TaskLog {
 public:
  TaskLog(std::string path, JournalSync sync) : journal_(std::move(path), sync) {}

  const std::string& path() const { return journal_.path(); }

  void add_session(std::uint64_t session, std::string_view bytes);
  // Forgets every record of the session (its end: bye, session timeout) and its batches' counts.
  void end_session(std::uint64_t session);

  // A submit frame as received; its slot counts the tasks that live on (batch_task). kNoBatch
  // when it could not be written (failure()).
  std::uint32_t add_batch(std::uint64_t session, std::string_view frame);
  void batch_task(std::uint32_t batch) { batches_[batch].live++; }
  // One task of the batch is settled and delivered; the last one forgets the batch.
  void task_done(std::uint32_t batch);
  // A batch none of whose tasks lives (all skipped or refused at once) is forgotten now.
  void forget_if_idle(std::uint32_t batch) {
    if (batch_live(batch) && batches_[batch].live == 0) forget_batch(batch);
  }
  bool batch_live(std::uint32_t batch) const {
    return batch < batches_.size() && batches_[batch].record != 0;
  }

  // A settled, cancelled or retry record about tasks of `batches` (duplicates allowed); none
  // when no batch of them is live (it would speak of nothing).
  void add_note(LogKind kind, std::uint64_t session, std::string_view bytes,
                const std::vector<std::uint32_t>& batches);

  // Makes everything since the last commit durable (one sync); false when that, or any write
  // since, failed: then the group is gone, and the log takes no more writes (failure()).
  bool commit();
  // The first write or commit that failed, if one did. Writes never throw: one that fails
  // rolls the group back, and every later one is skipped, so the broker's handlers run on and
  // the failure is dealt with at the commit point, in one place (commit_journal).
  const std::optional<JournalError>& failure() const { return failure_; }
  bool pending() const { return journal_.in_group(); }
  // When the open group got its first record (the group commit's window starts then).
  std::chrono::steady_clock::time_point pending_since() const { return since_; }
  bool maintain(std::chrono::milliseconds budget) { return journal_.maintain(budget); }
  JournalStats stats() const { return journal_.stats(); }
  std::size_t live_batches() const { return live_batches_; }

  // Replay (at start): every record in order. `adopt_batch` gives a batch record read back its
  // slot, and `adopt_note` ties a note to the batches it speaks of (their slots), as the broker
  // works them out; `forget_unowned` forgets a record whose session is gone.
  struct Replayed {
    std::int64_t id;
    LogKind kind;
    std::uint64_t session;
    std::string_view bytes;
  };
  void read_all(const std::function<void(const Replayed&)>& fn);
  std::uint32_t adopt_batch(std::int64_t record, std::uint64_t session);
  void adopt_note(std::int64_t record, const std::vector<std::uint32_t>& batches);
  void forget_record(std::int64_t record) {
    opening();
    write([&] { journal_.forget(record); });
  }
  // After replay: batches no live task or undelivered event needs any more are forgotten.
  void forget_idle_batches();

 private:
  struct Batch {
    std::int64_t record = 0;  // 0 = free slot
    std::uint64_t session = 0;
    std::uint32_t live = 0;
    std::vector<std::uint32_t> notes;  // note slots that speak of it
  };
  struct Note {
    std::int64_t record = 0;    // 0 = free slot
    std::uint32_t batches = 0;  // live batches it speaks of
  };
  std::uint32_t new_batch(std::int64_t record, std::uint64_t session);
  std::uint32_t new_note(std::int64_t record, const std::vector<std::uint32_t>& batches);
  void forget_batch(std::uint32_t b);
  // Frees its slot, and the notes that spoke only of it (forgetting their records too, or not
  // when the caller already forgot them all).
  void free_batch(std::uint32_t b, bool forget_notes);

  void opening() {  // before each write: the first of a group starts its window
    if (!journal_.in_group()) since_ = std::chrono::steady_clock::now();
  }

  // Runs one write; a JournalError is kept (the first) instead of thrown. False when skipped
  // or failed.
  template <class F>
  bool write(F&& f) {
    if (failure_) return false;
    try {
      f();
      return true;
    } catch (const JournalError& e) {
      failure_ = e;
      return false;
    }
  }

  Journal journal_;
  std::optional<JournalError> failure_;
  std::chrono::steady_clock::time_point since_{};
  std::vector<Batch> batches_;
  std::vector<std::uint32_t> free_batches_;
  std::vector<Note> notes_;
  std::vector<std::uint32_t> free_notes_;
  std::size_t live_batches_ = 0;
};

}  // namespace zexecd
