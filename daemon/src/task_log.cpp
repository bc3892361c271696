// TaskLog: the journal's records and the counts that decide when each is forgotten.
#include "task_log.hpp"

#include <algorithm>

namespace zexecd {

namespace {
// A free slot of a slab (its free list first), for a batch or a note.
template <class T>
std::uint32_t take_slot(std::vector<T>& slab, std::vector<std::uint32_t>& free) {
  if (free.empty()) {
    slab.emplace_back();
    return static_cast<std::uint32_t>(slab.size() - 1);
  }
  std::uint32_t slot = free.back();
  free.pop_back();
  return slot;
}
}  // namespace

std::uint32_t TaskLog::new_batch(std::int64_t record, std::uint64_t session) {
  std::uint32_t b = take_slot(batches_, free_batches_);
  batches_[b].record = record;
  batches_[b].session = session;
  batches_[b].live = 0;
  batches_[b].notes.clear();
  ++live_batches_;
  return b;
}

std::uint32_t TaskLog::new_note(std::int64_t record, const std::vector<std::uint32_t>& batches) {
  std::uint32_t n = take_slot(notes_, free_notes_);
  notes_[n] = Note{record, 0};
  std::vector<std::uint32_t> distinct = batches;
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  for (std::uint32_t b : distinct)
    if (batch_live(b)) {
      batches_[b].notes.push_back(n);
      notes_[n].batches++;
    }
  return n;
}

void TaskLog::add_session(std::uint64_t session, std::string_view bytes) {
  opening();
  write([&] { journal_.append(static_cast<std::uint32_t>(LogKind::session), session, bytes); });
}

void TaskLog::end_session(std::uint64_t session) {
  opening();
  write([&] { journal_.forget_owner(session); });
  for (std::uint32_t b = 0; b < batches_.size(); ++b)
    if (batches_[b].record != 0 && batches_[b].session == session) free_batch(b, false);  // (gone above)
}

std::uint32_t TaskLog::add_batch(std::uint64_t session, std::string_view frame) {
  opening();
  std::int64_t record = 0;
  if (!write([&] { record = journal_.append(static_cast<std::uint32_t>(LogKind::batch), session, frame); }))
    return kNoBatch;
  return new_batch(record, session);
}

void TaskLog::task_done(std::uint32_t batch) {
  if (!batch_live(batch)) return;
  Batch& b = batches_[batch];
  if (b.live > 0) --b.live;
  if (b.live == 0) forget_batch(batch);
}

void TaskLog::forget_batch(std::uint32_t b) {
  opening();
  write([&] { journal_.forget(batches_[b].record); });
  free_batch(b, true);
}

void TaskLog::free_batch(std::uint32_t b, bool forget_notes) {
  for (std::uint32_t n : batches_[b].notes)
    if (notes_[n].record != 0 && --notes_[n].batches == 0) {
      if (forget_notes) write([&] { journal_.forget(notes_[n].record); });
      notes_[n].record = 0;
      free_notes_.push_back(n);
    }
  batches_[b].record = 0;
  batches_[b].notes.clear();
  free_batches_.push_back(b);
  --live_batches_;
}

void TaskLog::add_note(LogKind kind, std::uint64_t session, std::string_view bytes,
                       const std::vector<std::uint32_t>& batches) {
  // A note about no live batch (an update of started events only, events of tasks never
  // accepted) would say nothing to a replay, and nothing would ever forget it.
  if (std::none_of(batches.begin(), batches.end(), [&](std::uint32_t b) { return batch_live(b); })) return;
  opening();
  std::int64_t record = 0;
  if (write([&] { record = journal_.append(static_cast<std::uint32_t>(kind), session, bytes); }))
    new_note(record, batches);
}

bool TaskLog::commit() {
  if (failure_) return false;
  try {
    journal_.commit();
    return true;
  } catch (const JournalError& e) {
    failure_ = e;
    return false;
  }
}

void TaskLog::read_all(const std::function<void(const Replayed&)>& fn) {
  journal_.for_each([&](const JournalRecord& r) {
    fn(Replayed{r.id, static_cast<LogKind>(r.kind), r.owner, r.bytes});
  });
}

std::uint32_t TaskLog::adopt_batch(std::int64_t record, std::uint64_t session) {
  return new_batch(record, session);
}

void TaskLog::adopt_note(std::int64_t record, const std::vector<std::uint32_t>& batches) {
  std::uint32_t n = new_note(record, batches);
  if (notes_[n].batches == 0) {  // it speaks of no live batch: nothing needs it
    forget_record(record);
    notes_[n].record = 0;
    free_notes_.push_back(n);
  }
}

void TaskLog::forget_idle_batches() {
  for (std::uint32_t b = 0; b < batches_.size(); ++b)
    if (batches_[b].record != 0 && batches_[b].live == 0) forget_batch(b);
}

}  // namespace zexecd
