// A client's task id -> the daemon's handle, for every unfinished task of that client.
//
// Open addressing, linear probing, deletion by backward shift (no tombstones): 16 bytes a slot
// and no allocation per task. std::unordered_map costs a node (~32 bytes) plus a bucket per
// task, which is a fifth of what a queued task costs the daemon (bench/RESULTS.md, memory).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace zexecd {

class IdMap {
 public:
  using Handle = std::uint64_t;  // never 0 (TaskTable): 0 marks an empty slot

  // The handle of `id`, or 0.
  Handle find(std::uint64_t id) const {
    if (size_ == 0) return 0;
    for (std::size_t i = home(id);; i = next(i)) {
      const Slot& s = slots_[i];
      if (s.handle == 0) return 0;
      if (s.id == id) return s.handle;
    }
  }

  // Adds id -> handle (handle != 0); false if `id` is already there.
  bool insert(std::uint64_t id, Handle handle) {
    if ((size_ + 1) * 4 > slots_.size() * 3) rehash(slots_.empty() ? 16 : slots_.size() * 2);
    std::size_t i = home(id);
    for (; slots_[i].handle != 0; i = next(i))
      if (slots_[i].id == id) return false;
    slots_[i] = Slot{id, handle};
    ++size_;
    return true;
  }

  bool erase(std::uint64_t id) {
    if (size_ == 0) return false;
    std::size_t i = home(id);
    for (; slots_[i].id != id; i = next(i))
      if (slots_[i].handle == 0) return false;
    if (slots_[i].handle == 0) return false;
    // Backward shift: pull later entries of the run into the hole unless they already sit at or
    // after their home position relative to it, so every entry stays reachable from its home.
    for (std::size_t j = next(i);; j = next(j)) {
      if (slots_[j].handle == 0) break;
      std::size_t h = home(slots_[j].id);
      bool movable = i <= j ? (h <= i || h > j) : (h <= i && h > j);
      if (movable) {
        slots_[i] = slots_[j];
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

  template <class F>
  void for_each(F&& f) const {  // f(id, handle), in no particular order
    for (const Slot& s : slots_)
      if (s.handle != 0) f(s.id, s.handle);
  }

 private:
  struct Slot {
    std::uint64_t id = 0;
    Handle handle = 0;
  };

  std::size_t home(std::uint64_t id) const {
    // splitmix64's finaliser: client ids are counters, which must not fill one run of slots.
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
    slots_.assign(capacity, Slot{});
    for (const Slot& s : old)
      if (s.handle != 0) {
        std::size_t i = home(s.id);
        while (slots_[i].handle != 0) i = next(i);
        slots_[i] = s;
      }
  }

  std::vector<Slot> slots_;
  std::size_t size_ = 0;
};

}  // namespace zexecd
