// The tasks a worker can run, by name, and the one place where running a task turns every
// outcome (result, exception, unknown name) into a protocol event.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "zexec/protocol.hpp"
#include "zexec/worker.hpp"

namespace zexec::worker_internal {

class TaskRegistry {
 public:
  // Throws WorkerError for an empty or already registered name.
  void add(std::string name, Worker::RawTask task);

  // In registration order.
  const std::vector<std::string>& names() const { return names_; }

  // Runs the task and returns its final event (ok or error). Never throws: a task's failure is
  // the client's business, not a reason for the worker to die.
  proto::Event run(const proto::TaskSpec& task) const;

 private:
  using Entry = std::pair<const std::string, Worker::RawTask>;

  std::map<std::string, Worker::RawTask, std::less<>> tasks_;
  std::vector<std::string> names_;
  // The task run last: a batch mostly repeats one name. Only the executor thread calls run().
  mutable const Entry* last_ = nullptr;
};

}  // namespace zexec::worker_internal
