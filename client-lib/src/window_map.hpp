// The client's in-flight table: task id -> state, for ids the client hands out from a counter.
//
// Ids in flight are nearly consecutive, so the table is a ring indexed by the id's low bits:
// neighbouring tasks sit in neighbouring slots and a lookup is one load, where a hash table
// spreads a burst of 200,000 tasks over megabytes at random and pays a cache miss per access
// (a flat hash table like the daemon's IdMap, tried first, cost ~4 % of the client's time in
// zexec-bench throughput). An id whose slot
// is still held by an older task (a straggler, a whole ring of ids behind) moves that older task
// to a small side map, so one slow task never makes the ring grow with the ids issued after it.
// V{} marks an empty slot, so a stored value is never V{}.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <utility>
#include <vector>

namespace zexec::detail {

template <class V>
class WindowMap {
 public:
  V* find(std::uint64_t id) {
    if (!ring_.empty()) {
      Slot& s = ring_[id & mask()];
      if (s.id == id && !(s.value == V{})) return &s.value;
    }
    if (side_.empty()) return nullptr;
    auto it = side_.find(id);
    return it == side_.end() ? nullptr : &it->second;
  }
  bool contains(std::uint64_t id) { return find(id) != nullptr; }

  // Adds id -> value (value != V{}); false, changing nothing, if `id` is already there.
  bool insert(std::uint64_t id, V value) {
    if (contains(id)) return false;
    if ((ring_size_ + 1) * 2 > ring_.size()) resize(ring_.empty() ? 64 : ring_.size() * 2);
    Slot& s = ring_[id & mask()];
    if (!(s.value == V{})) {  // an older task a whole ring behind: to the side
      side_.emplace(s.id, std::move(s.value));
      --ring_size_;
    }
    s.id = id;
    s.value = std::move(value);
    ++ring_size_;
    return true;
  }

  // Removes `id`, moving its value to `out`; false if `id` is not there.
  bool take(std::uint64_t id, V& out) {
    if (!ring_.empty()) {
      Slot& s = ring_[id & mask()];
      if (s.id == id && !(s.value == V{})) {
        out = std::move(s.value);
        s.value = V{};
        --ring_size_;
        // Give memory back after a burst.
        if (ring_.size() > 1024 && ring_size_ * 16 < ring_.size()) resize(ring_.size() / 2);
        return true;
      }
    }
    if (side_.empty()) return false;
    auto it = side_.find(id);
    if (it == side_.end()) return false;
    out = std::move(it->second);
    side_.erase(it);
    return true;
  }

  std::size_t size() const { return ring_size_ + side_.size(); }
  bool empty() const { return size() == 0; }
  void clear() {
    ring_.clear();
    side_.clear();
    ring_size_ = 0;
  }

  template <class F>
  void for_each(F&& f) {  // f(id, V&); f must not insert or take
    for (Slot& s : ring_)
      if (!(s.value == V{})) f(s.id, s.value);
    for (auto& [id, v] : side_) f(id, v);
  }

 private:
  struct Slot {
    std::uint64_t id = 0;
    V value{};
  };

  std::size_t mask() const { return ring_.size() - 1; }

  void resize(std::size_t capacity) {  // a power of two
    std::vector<Slot> old = std::move(ring_);
    ring_.clear();
    ring_.resize(capacity);
    ring_size_ = 0;
    for (Slot& s : old)
      if (!(s.value == V{})) {
        Slot& d = ring_[s.id & mask()];
        if (!(d.value == V{})) {  // two live ids a ring apart: the older one to the side
          Slot& older = d.id < s.id ? d : s;
          side_.emplace(older.id, std::move(older.value));
          if (&older == &d) {
            d = std::move(s);
          }
          continue;
        }
        d = std::move(s);
        ++ring_size_;
      }
  }

  std::vector<Slot> ring_;
  std::size_t ring_size_ = 0;  // live slots in ring_
  std::unordered_map<std::uint64_t, V> side_;
};

}  // namespace zexec::detail
