// Task id -> V for every unfinished task: the daemon's per-client table (id -> handle) and the
// client's in-flight table (id -> future state).
//
// Open addressing, linear probing, deletion by backward shift (no tombstones): one flat array,
// no allocation per task. std::unordered_map costs a node (~32 bytes) plus a bucket per task,
// which was a fifth of what a queued task cost the daemon and an allocation per task in the
// client (bench/RESULTS.md). V{} marks an empty slot, so a stored value is never V{} (the
// daemon's handles are never 0, the client's states never null).
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace zexec::detail {

template <class V>
class IdMap {
 public:
  // The value of `id`, or nullptr. Valid until the next insert or erase.
  V* find(std::uint64_t id) {
    if (size_ == 0) return nullptr;
    for (std::size_t i = home(id);; i = next(i)) {
      Slot& s = slots_[i];
      if (empty(s)) return nullptr;
      if (s.id == id) return &s.value;
    }
  }
  const V* find(std::uint64_t id) const { return const_cast<IdMap*>(this)->find(id); }
  // The value of `id`, or V{}.
  V get(std::uint64_t id) const {
    const V* v = find(id);
    return v ? *v : V{};
  }
  bool contains(std::uint64_t id) const { return find(id) != nullptr; }

  // Adds id -> value (value != V{}); false, changing nothing, if `id` is already there.
  bool insert(std::uint64_t id, V value) {
    if ((size_ + 1) * 4 > slots_.size() * 3) rehash(slots_.empty() ? 16 : slots_.size() * 2);
    std::size_t i = home(id);
    for (; !empty(slots_[i]); i = next(i))
      if (slots_[i].id == id) return false;
    slots_[i] = Slot{id, std::move(value)};
    ++size_;
    return true;
  }

  bool erase(std::uint64_t id) {
    V gone;
    return take(id, gone);
  }

  // Removes `id`, moving its value to `out`; false if `id` is not there.
  bool take(std::uint64_t id, V& out) {
    if (size_ == 0) return false;
    std::size_t i = home(id);
    for (; slots_[i].id != id || empty(slots_[i]); i = next(i))
      if (empty(slots_[i])) return false;
    out = std::move(slots_[i].value);
    // Backward shift: pull later entries of the run into the hole unless they already sit at or
    // after their home position relative to it, so every entry stays reachable from its home.
    for (std::size_t j = next(i);; j = next(j)) {
      if (empty(slots_[j])) break;
      std::size_t h = home(slots_[j].id);
      bool movable = i <= j ? (h <= i || h > j) : (h <= i && h > j);
      if (movable) {
        slots_[i] = std::move(slots_[j]);
        i = j;
      }
    }
    slots_[i] = Slot{};
    --size_;
    // Give memory back after a burst: a client that had a million tasks and now has few.
    if (slots_.size() > 64 && size_ * 8 < slots_.size()) rehash(slots_.size() / 2);
    return true;
  }

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  void clear() {
    slots_.clear();
    size_ = 0;
  }

  template <class F>
  void for_each(F&& f) const {  // f(id, const V&), in no particular order
    for (const Slot& s : slots_)
      if (!empty(s)) f(s.id, s.value);
  }
  template <class F>
  void for_each(F&& f) {  // f(id, V&); f must not insert or erase
    for (Slot& s : slots_)
      if (!empty(s)) f(s.id, s.value);
  }

 private:
  struct Slot {
    std::uint64_t id = 0;
    V value{};
  };

  static bool empty(const Slot& s) { return s.value == V{}; }

  std::size_t home(std::uint64_t id) const {
    // splitmix64's finaliser: task ids are counters, which must not fill one run of slots.
    id ^= id >> 30;
    id *= 0xbf58476d1ce4e5b9ULL;
    id ^= id >> 27;
    id *= 0x94d049bb133111ebULL;
    id ^= id >> 31;
    return static_cast<std::size_t>(id) & (slots_.size() - 1);
  }
  std::size_t next(std::size_t i) const { return (i + 1) & (slots_.size() - 1); }

  void rehash(std::size_t capacity) {  // capacity: a power of two, > size_
    std::vector<Slot> old = std::move(slots_);
    slots_.clear();
    slots_.resize(capacity);
    for (Slot& s : old)
      if (!empty(s)) {
        std::size_t i = home(s.id);
        while (!empty(slots_[i])) i = next(i);
        slots_[i] = std::move(s);
      }
  }

  std::vector<Slot> slots_;
  std::size_t size_ = 0;
};

}  // namespace zexec::detail
