// Starting worker processes and describing how they ended.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace zexecd {

// Splits a command line into words: whitespace separates, '...' and "..." group, \ escapes.
// Throws std::invalid_argument on an unterminated quote or an empty command.
std::vector<std::string> split_command(const std::string& line);

// fork + exec `argv` with `env` added to the environment. The child dies with the daemon
// (PR_SET_PDEATHSIG) and gets default signal dispositions. Returns the pid; throws on fork failure.
pid_t spawn_process(const std::vector<std::string>& argv, const std::vector<std::string>& env);

// The soft open-file limit workers start with (0: as the daemon's). zexecd raises its own to the
// hard limit for its clients; task code gets the limit the daemon was started with, since code
// that uses select() breaks on descriptors past 1024.
void set_worker_fd_limit(long soft);

// "exited with status 3", "killed by signal 9 (SIGKILL)".
std::string describe_wait_status(int status);

// Directory of the running executable (/proc/self/exe).
std::string self_dir();

}  // namespace zexecd
