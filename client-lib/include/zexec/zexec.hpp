// zexec client library: submit named tasks to zexecd worker processes and get Futures whose
// results arrive in the order the tasks finish. Like Python's ProcessPoolExecutor +
// concurrent.futures.as_completed(), across processes over ZeroMQ + msgpack.
//
//   zexec::Client client{"ipc:///run/zexec/zexecd.sock"};
//   std::vector<zexec::Future> fs;
//   for (double s : {0.3, 0.1, 0.2}) fs.push_back(client.submit("sleep", s));
//   for (zexec::Future& f : zexec::as_completed(fs, std::chrono::seconds(5)))
//     std::cout << f.result<double>() << "\n";  // 0.1, 0.2, 0.3
#pragma once

#include "zexec/as_completed.hpp"
#include "zexec/client.hpp"
#include "zexec/errors.hpp"
#include "zexec/executor.hpp"
#include "zexec/future.hpp"
#include "zexec/timeout.hpp"
