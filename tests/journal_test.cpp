// The journal (daemon/src/journal.*) on real files: records survive a reopen and a SIGKILL, a
// group is all or nothing, bad journals are refused with a reason naming the file, a full disk
// (a tmpfs made here) refuses the group and keeps what was committed, a read-only path is refused
// at open, sync = full syncs at every commit and normal never does, and compaction brings a
// journal back near its empty size.
#include "journal.hpp"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "support.hpp"

using zexecd::Journal;
using zexecd::JournalError;
using zexecd::JournalSync;

// Every fsync/fdatasync of this process, SQLite's among them: defined here, these take the place
// of libc's for libsqlite3 (the executable's symbols come first), and pass the call on.
static std::atomic<int> g_syncs{0};
extern "C" int fdatasync(int fd) {
  ++g_syncs;
  static auto real = reinterpret_cast<int (*)(int)>(dlsym(RTLD_NEXT, "fdatasync"));
  return real(fd);
}
extern "C" int fsync(int fd) {
  ++g_syncs;
  static auto real = reinterpret_cast<int (*)(int)>(dlsym(RTLD_NEXT, "fsync"));
  return real(fd);
}

namespace {

struct Rec {
  std::int64_t id;
  std::uint32_t kind;
  std::uint64_t owner;
  std::string bytes;
};

std::vector<Rec> all(Journal& j) {
  std::vector<Rec> out;
  j.for_each([&](const zexecd::JournalRecord& r) {
    out.push_back({r.id, r.kind, r.owner, std::string(r.bytes)});
  });
  return out;
}

// JournalError's kind and message from opening `path`, or a failure if it opened.
JournalError open_error(const std::string& path) {
  try {
    Journal j(path, JournalSync::full);
  } catch (const JournalError& e) {
    return e;
  }
  ADD_FAILURE() << path << " opened";
  return JournalError(JournalError::Kind::io, "");
}

void raw_sql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  std::string msg = err ? err : "";
  sqlite3_free(err);
  sqlite3_close(db);
  ASSERT_EQ(rc, SQLITE_OK) << msg;
}

// A folder of its own file system (tmpfs), for the full-disk and read-only cases; root only.
class Mount {
 public:
  Mount(const std::string& dir, const std::string& options) : dir_(dir) {
    std::filesystem::create_directories(dir);
    ok_ = ::mount("tmpfs", dir.c_str(), "tmpfs", 0, options.c_str()) == 0;
    err_ = ok_ ? 0 : errno;
  }
  ~Mount() {
    if (ok_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  bool ok() const { return ok_; }
  int error() const { return err_; }
  bool remount_read_only() {
    return ::mount(nullptr, dir_.c_str(), nullptr, MS_REMOUNT | MS_RDONLY, nullptr) == 0;
  }

 private:
  std::string dir_;
  bool ok_ = false;
  int err_ = 0;
};

TEST(Journal, RecordsSurviveAReopenInOrderAndExactly) {
  zexec::test::TempDir dir;
  std::string path = dir.path() + "/journal";
  std::string binary("a\0b\xff", 4);
  std::vector<std::int64_t> ids;
  {
    Journal j(path, JournalSync::full);
    EXPECT_EQ(j.stats().records, 0u);
    ids.push_back(j.append(1, 7, "first"));
    ids.push_back(j.append(2, 8, binary));
    ids.push_back(j.append(1, 9, ""));
    j.commit();
    j.forget(ids[0]);
    j.commit();
    EXPECT_EQ(j.stats().records, 2u);
  }
  Journal j(path, JournalSync::full);
  auto recs = all(j);
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0].id, ids[1]);
  EXPECT_EQ(recs[0].kind, 2u);
  EXPECT_EQ(recs[0].owner, 8u);
  EXPECT_EQ(recs[0].bytes, binary);
  EXPECT_EQ(recs[1].id, ids[2]);
  EXPECT_EQ(recs[1].bytes, "");
  EXPECT_LT(ids[1], ids[2]);
  EXPECT_EQ(j.stats().records, 2u);
}

TEST(Journal, AGroupIsAllOrNothingAndSigkillKeepsEveryCommittedOne) {
  zexec::test::TempDir dir;
  std::string path = dir.path() + "/journal";
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // 50 committed groups of 10, then an open group that never commits, then tell the parent.
    Journal j(path, JournalSync::normal);
    for (int g = 0; g < 50; ++g) {
      for (int i = 0; i < 10; ++i) j.append(1, static_cast<std::uint64_t>(g), "committed");
      j.commit();
    }
    for (int i = 0; i < 1000; ++i) j.append(1, 99, "never committed");
    char c = 'x';
    (void)!::write(ready[1], &c, 1);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  ::kill(pid, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  Journal j(path, JournalSync::full);
  auto recs = all(j);
  ASSERT_EQ(recs.size(), 500u);
  for (const auto& r : recs) EXPECT_EQ(r.bytes, "committed");
}

TEST(Journal, AFileThatIsNotAJournalIsRefusedNamingIt) {
  zexec::test::TempDir dir;
  std::string path = dir.path() + "/notes.txt";
  std::ofstream(path) << std::string(4096, 'x') << "\nnot a database\n";
  JournalError e = open_error(path);
  EXPECT_EQ(e.kind(), JournalError::Kind::unusable);
  EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("not a zexec journal"), std::string::npos) << e.what();
  // Left as it was: refusing never rewrites somebody's file.
  EXPECT_NE(zexec::test::read_file(path).find("not a database"), std::string::npos);
}

TEST(Journal, AnotherProgramsDatabaseIsRefused) {
  zexec::test::TempDir dir;
  std::string path = dir.path() + "/app.db";
  raw_sql(path, "CREATE TABLE t(x); INSERT INTO t VALUES (1)");
  JournalError e = open_error(path);
  EXPECT_EQ(e.kind(), JournalError::Kind::unusable);
  EXPECT_NE(std::string(e.what()).find("application_id"), std::string::npos) << e.what();
}

TEST(Journal, AnotherFormatVersionIsRefused) {
  zexec::test::TempDir dir;
  std::string path = dir.path() + "/journal";
  { Journal j(path, JournalSync::full); }
  raw_sql(path, "PRAGMA user_version = 2");
  JournalError e = open_error(path);
  EXPECT_EQ(e.kind(), JournalError::Kind::unusable);
  EXPECT_NE(std::string(e.what()).find("format version 2, this zexecd reads 1"), std::string::npos)
      << e.what();
}

TEST(Journal, ACorruptJournalIsRefusedWithWhatToDo) {
  zexec::test::TempDir dir;
  std::string path = dir.path() + "/journal";
  {
    Journal j(path, JournalSync::full);
    for (int i = 0; i < 2000; ++i) j.append(1, 1, std::string(200, 'r'));
    j.commit();
  }  // closing checkpoints the WAL into the file
  ASSERT_FALSE(std::filesystem::exists(path + "-wal"));
  auto size = std::filesystem::file_size(path);
  ASSERT_GT(size, 100u * 4096);
  {
    // Garbage over pages 3..20 (the table's interior pages among them); the header stays.
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(2 * 4096);
    std::string junk(18 * 4096, '\x5a');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  JournalError e = open_error(path);
  EXPECT_EQ(e.kind(), JournalError::Kind::unusable) << e.what();
  EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("restore it from a backup"), std::string::npos) << e.what();
}

TEST(Journal, ASecondOpenerIsRefusedWhileTheFirstHoldsIt) {
  zexec::test::TempDir dir;
  std::string path = dir.path() + "/journal";
  Journal first(path, JournalSync::full);
  first.append(1, 1, "x");
  first.commit();
  JournalError e = open_error(path);
  EXPECT_EQ(e.kind(), JournalError::Kind::in_use) << e.what();
  EXPECT_NE(std::string(e.what()).find("another zexecd"), std::string::npos) << e.what();
}

TEST(Journal, AReadOnlyPathIsRefusedAtOpen) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a read-only file system";
  zexec::test::TempDir dir;
  Mount m(dir.path() + "/ro", "size=1m");
  if (m.error() == EPERM) GTEST_SKIP() << "mount refused (no CAP_SYS_ADMIN here)";
  ASSERT_TRUE(m.ok()) << std::strerror(m.error());
  std::string existing = dir.path() + "/ro/journal";
  {
    Journal j(existing, JournalSync::full);
    j.append(1, 1, "kept");
    j.commit();
  }
  ASSERT_TRUE(m.remount_read_only()) << std::strerror(errno);
  for (const std::string& path : {existing, dir.path() + "/ro/new-journal"}) {
    JournalError e = open_error(path);
    EXPECT_EQ(e.kind(), JournalError::Kind::read_only) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(Journal, AFullDiskRefusesTheGroupAndKeepsEverythingCommitted) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a small file system";
  zexec::test::TempDir dir;
  std::string mnt = dir.path() + "/small";
  Mount m(mnt, "size=2m");
  if (m.error() == EPERM) GTEST_SKIP() << "mount refused (no CAP_SYS_ADMIN here)";
  ASSERT_TRUE(m.ok()) << std::strerror(m.error());
  // Something else on the file system, removed later to make room again (1 MB: forgetting the
  // 16 KiB records below writes to the WAL too, measured at over 512 KB for about 20 of them).
  std::string filler = mnt + "/filler";
  std::ofstream(filler) << std::string(1024 * 1024, 'f');
  std::string path = mnt + "/journal";
  Journal j(path, JournalSync::full);
  int committed = 0;
  bool full = false;
  std::string record(16 * 1024, 'd');
  for (int i = 0; i < 1000 && !full; ++i) {
    try {
      j.append(1, 1, record);
      j.append(1, 1, record);
      j.commit();
      committed += 2;
    } catch (const JournalError& e) {
      EXPECT_EQ(e.kind(), JournalError::Kind::full) << e.what();
      EXPECT_NE(std::string(e.what()).find("free space"), std::string::npos) << e.what();
      full = true;
    }
  }
  ASSERT_TRUE(full) << "2 MB never filled up";
  ASSERT_GT(committed, 10);
  EXPECT_FALSE(j.in_group());
  EXPECT_EQ(j.stats().records, static_cast<std::uint64_t>(committed));
  EXPECT_EQ(all(j).size(), static_cast<std::size_t>(committed));
  // Not broken by it: once there is room again, writes go on, forgets included.
  std::filesystem::remove(filler);
  std::vector<std::int64_t> ids;
  for (const auto& r : all(j)) ids.push_back(r.id);
  for (std::size_t i = 0; i < ids.size() / 2; ++i) j.forget(ids[i]);
  j.append(1, 2, "after");
  j.commit();
  EXPECT_EQ(all(j).size(), ids.size() - ids.size() / 2 + 1);
  EXPECT_EQ(all(j).back().bytes, "after");
}

TEST(Journal, FullSyncsAtEveryCommitAndNormalNever) {
  zexec::test::TempDir dir;
  for (JournalSync mode : {JournalSync::full, JournalSync::normal}) {
    std::string path = dir.path() + (mode == JournalSync::full ? "/full" : "/normal");
    Journal j(path, mode);
    j.append(1, 1, "warm up");  // the first commit also writes the WAL header
    j.commit();
    int before = g_syncs.load();
    for (int i = 0; i < 50; ++i) {
      for (int k = 0; k < 20; ++k) j.append(1, 1, "r");  // 20 records, one group, one sync
      j.commit();
    }
    int syncs = g_syncs.load() - before;
    if (mode == JournalSync::full) {
      EXPECT_GE(syncs, 50) << "full: 50 commits";
      EXPECT_LE(syncs, 100) << "full: a sync per commit, not per record";
    } else {
      EXPECT_EQ(syncs, 0) << "normal: no sync at commit";
    }
  }
}

TEST(Journal, CompactionBringsItBackNearItsEmptySize) {
  zexec::test::TempDir dir;
  std::string empty_path = dir.path() + "/empty";
  std::int64_t empty_size;
  {
    Journal e(empty_path, JournalSync::normal);
    e.maintain(std::chrono::milliseconds(100));
    empty_size = e.stats().file_bytes + e.stats().wal_bytes;
  }
  Journal j(dir.path() + "/journal", JournalSync::normal);
  std::vector<std::int64_t> ids;
  for (int g = 0; g < 40; ++g) {
    for (int i = 0; i < 500; ++i) ids.push_back(j.append(1, 1, std::string(200, 'c')));
    j.commit();
  }
  auto grown = j.stats();
  EXPECT_GT(grown.file_bytes + grown.wal_bytes, 4 * 1024 * 1024);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    j.forget(ids[i]);
    if (i % 500 == 499) j.commit();
  }
  j.commit();
  int steps = 0;
  while (!j.maintain(std::chrono::milliseconds(5))) ASSERT_LT(++steps, 10000);
  auto after = j.stats();
  EXPECT_EQ(after.records, 0u);
  EXPECT_EQ(after.wal_bytes, 0);
  EXPECT_LE(after.file_bytes, empty_size + 4 * 4096) << "empty journal: " << empty_size << " bytes";
}

}  // namespace
