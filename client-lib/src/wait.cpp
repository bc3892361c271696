// zexec::wait(): concurrent.futures.wait() over zexec futures.
#include <algorithm>

#include "future_state.hpp"
#include "zexec/as_completed.hpp"

namespace zexec {

using detail::FutureAccess;
using detail::StatePtr;

namespace {

bool failed(const StatePtr& s) {
  return s->status() == detail::Status::finished && s->failure() != detail::Failure::none;
}

}  // namespace

WaitResult wait(const std::vector<Future>& futures, Timeout timeout, ReturnWhen return_when) {
  const detail::Deadline deadline = detail::deadline_from(timeout);
  auto waiter = std::make_shared<detail::Waiter>();
  std::vector<StatePtr> order;  // distinct futures, in the order given
  detail::StateSet seen(futures.size()), done_set(futures.size());
  WaitResult out;
  bool stop = false;
  std::size_t registered = 0;

  auto take_done = [&](const StatePtr& s) {
    if (!done_set.insert(s.get())) return;
    out.done.push_back(FutureAccess::make(s));
    if (return_when == ReturnWhen::FirstCompleted) stop = true;
    if (return_when == ReturnWhen::FirstException && failed(s)) stop = true;
  };

  for (const Future& f : futures) {
    const StatePtr& s = FutureAccess::state(f);
    if (!s) throw Error("wait: empty zexec::Future in the list");
    if (!seen.insert(s.get())) continue;
    order.push_back(s);
    if (s->add_waiter(waiter))
      ++registered;
    else
      take_done(s);
  }

  std::size_t completed = 0;  // registered ones that have completed
  {
    std::unique_lock lk(waiter->mu);
    while (!stop && completed < registered) {
      auto has_one = [&] { return !waiter->completed.empty(); };
      if (deadline) {
        if (!waiter->cv.wait_until(lk, *deadline, has_one)) break;
      } else {
        waiter->cv.wait(lk, has_one);
      }
      while (!waiter->completed.empty()) {
        StatePtr s = std::move(waiter->completed.front());
        waiter->completed.pop_front();
        ++completed;
        take_done(s);
      }
    }
  }
  for (const auto& s : order) {
    s->remove_waiter(waiter.get());
    if (!done_set.contains(s.get())) out.not_done.push_back(FutureAccess::make(s));
  }
  return out;
}

}  // namespace zexec
