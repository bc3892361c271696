// The last N ids put in, for one question: was this id one of them?
//
// A client's cancel of a task that an earlier cancel already took answers `cancelled`, the truth,
// though the daemon has forgotten the task itself; this remembers enough of them, in bounded
// memory, for the requests that can be in flight at once (PROTOCOL.md, cancel).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <unordered_map>
#include <utility>

namespace zexecd {

class RecentIds {
 public:
  explicit RecentIds(std::size_t capacity) : capacity_(capacity) {}

  void insert(std::uint64_t id) {
    if (capacity_ == 0) return;
    if (order_.size() >= capacity_) {
      auto [old, seq] = order_.front();
      order_.pop_front();
      if (auto it = seqs_.find(old); it != seqs_.end() && it->second == seq) seqs_.erase(it);
    }
    seqs_[id] = ++seq_;
    order_.emplace_back(id, seq_);
  }
  // The id names something else now (a new task of that id): it is no longer one of them.
  void erase(std::uint64_t id) { seqs_.erase(id); }
  bool contains(std::uint64_t id) const { return seqs_.count(id) > 0; }
  std::size_t size() const { return seqs_.size(); }

 private:
  std::size_t capacity_;
  std::uint64_t seq_ = 0;
  std::unordered_map<std::uint64_t, std::uint64_t> seqs_;  // id -> when it went in (the latest)
  std::deque<std::pair<std::uint64_t, std::uint64_t>> order_;
};

}  // namespace zexecd
