// zexec-journal-bench [DIR]: what the journal's storage costs on this machine, next to the device
// itself: the fsync latency of DIR's file system, commits and records per second by group size
// with sync = full and normal, and how long one compaction step stops the caller. The journal in
// zexecd is not wired yet (issue 13); these are the figures its design rests on.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "journal.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double us(Clock::duration d) {
  return std::chrono::duration<double, std::micro>(d).count();
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

// 4 KiB written and fdatasync'ed, as a WAL commit does: the floor under a durable commit.
void fsync_latency(const std::string& dir) {
  std::string path = dir + "/fsync-probe";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return std::perror("open");
  std::string page(4096, 'p');
  std::vector<double> t;
  for (int i = 0; i < 200; ++i) {
    auto start = Clock::now();
    if (::pwrite(fd, page.data(), page.size(), static_cast<off_t>(i) * 4096) < 0 || ::fdatasync(fd) != 0)
      return std::perror("pwrite/fdatasync");
    t.push_back(us(Clock::now() - start));
  }
  ::close(fd);
  std::filesystem::remove(path);
  std::printf("| fsync (4 KiB write + fdatasync) | median %.0f us, p99 %.0f us |\n", percentile(t, 0.5),
              percentile(t, 0.99));
}

void throughput(const std::string& dir, zexecd::JournalSync sync, int group) {
  std::string path = dir + "/bench-journal";
  std::filesystem::remove(path);
  zexecd::Journal j(path, sync);
  std::string record(64, 'r');  // about a no-op task's submit
  std::vector<std::int64_t> ids;
  auto start = Clock::now();
  auto end = start + std::chrono::milliseconds(700);
  std::uint64_t commits = 0, records = 0;
  std::vector<double> commit_us;
  while (Clock::now() < end) {
    for (int i = 0; i < group; ++i) ids.push_back(j.append(1, 1, record));
    auto c = Clock::now();
    j.commit();
    commit_us.push_back(us(Clock::now() - c));
    ++commits;
    records += static_cast<std::uint64_t>(group);
    // Forgotten in the next group, as delivered results would be: the journal stays small.
    if (ids.size() > 4096) {
      for (std::size_t i = 0; i < 2048; ++i) j.forget(ids[i]);
      ids.erase(ids.begin(), ids.begin() + 2048);
    }
  }
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("| %s, group of %d | %.0f records/s, %.0f commits/s, commit median %.0f us, p99 %.0f us |\n",
              sync == zexecd::JournalSync::full ? "full" : "normal", group,
              static_cast<double>(records) / secs, static_cast<double>(commits) / secs,
              percentile(commit_us, 0.5), percentile(commit_us, 0.99));
}

void compaction(const std::string& dir) {
  std::string path = dir + "/bench-compact";
  std::filesystem::remove(path);
  zexecd::Journal j(path, zexecd::JournalSync::normal);
  std::vector<std::int64_t> ids;
  for (int g = 0; g < 400; ++g) {
    for (int i = 0; i < 500; ++i) ids.push_back(j.append(1, 1, std::string(100, 'c')));
    j.commit();
  }
  auto grown = j.stats();
  for (std::size_t i = 0; i < ids.size(); ++i) {
    j.forget(ids[i]);
    if (i % 1000 == 999) j.commit();
  }
  j.commit();
  double worst = 0;
  int steps = 0;
  for (;;) {
    auto s = Clock::now();
    bool done = j.maintain(std::chrono::milliseconds(2));
    worst = std::max(worst, us(Clock::now() - s));
    ++steps;
    if (done) break;
  }
  auto after = j.stats();
  std::printf(
      "| compaction of 200,000 forgotten records | %.1f MB -> %lld KB in %d steps, longest %.1f ms |\n",
      static_cast<double>(grown.file_bytes + grown.wal_bytes) / 1e6,
      static_cast<long long>((after.file_bytes + after.wal_bytes) / 1024), steps, worst / 1000);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = argc > 1 ? argv[1] : std::filesystem::temp_directory_path().string();
  std::printf("journal on %s\n\n| measurement | figure |\n|---|---|\n", dir.c_str());
  fsync_latency(dir);
  for (auto sync : {zexecd::JournalSync::full, zexecd::JournalSync::normal})
    for (int group : {1, 64, 1024}) throughput(dir, sync, group);
  compaction(dir);
  for (const char* f : {"/bench-journal", "/bench-compact"}) {
    std::filesystem::remove(dir + f);
    std::filesystem::remove(dir + f + std::string("-wal"));
  }
  return 0;
}
