// Task names, each stored once however many tasks carry it: a task holds a pointer (8 bytes)
// instead of its own std::string (32 bytes, more for names past 15 characters). A million
// queued "resize_image" tasks keep one "resize_image". Names are counted and freed with their
// last task, so a client sending ever new names cannot grow the table for good.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace zexecd {

struct TaskName {
  std::string text;
  std::uint32_t refs = 0;
};

class NameTable {
 public:
  // The name, with one more reference.
  TaskName* intern(std::string_view text) {
    if (auto it = by_text_.find(text); it != by_text_.end()) {
      it->second->refs++;
      return it->second;
    }
    TaskName* n;
    if (!free_.empty()) {
      n = free_.back();
      free_.pop_back();
    } else {
      n = &names_.emplace_back();  // a deque never moves its elements: views into them hold
    }
    n->text.assign(text);
    n->refs = 1;
    by_text_.emplace(std::string_view(n->text), n);
    return n;
  }

  void release(TaskName* n) {
    if (!n || --n->refs > 0) return;
    by_text_.erase(std::string_view(n->text));
    n->text.clear();
    n->text.shrink_to_fit();
    free_.push_back(n);
  }

  std::size_t size() const { return by_text_.size(); }

 private:
  std::deque<TaskName> names_;
  std::vector<TaskName*> free_;
  std::unordered_map<std::string_view, TaskName*> by_text_;
};

}  // namespace zexecd
