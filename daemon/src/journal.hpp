// The journal: what zexecd has accepted, kept on disk so that a restart loses none of it
// (--journal PATH; what the broker keeps in it: task_log.hpp). It stores opaque records (the
// broker decides what they hold: a submit frame as received, an update as sent) in SQLite in WAL
// mode, a storage engine Debian ships, with crash recovery built in, rather than a log format of
// our own.
//
// Group commit: append() and forget() only add to the open group; commit() makes the whole group
// durable in one transaction, which with sync = full is one fsync of the WAL however many records
// it holds. The broker commits once per loop turn, so a lone record is synced at once and a burst
// shares one sync. A commit that fails (full disk, an fsync error) rolls the whole group back and
// throws: none of its records exist, and the caller must refuse what they stood for, never only
// log it (beanstalkd's binlog logs fsync errors and carries on).
//
// Compaction as it goes: a forgotten record's pages are freed at once; maintain() hands free pages
// back to the file system and truncates the WAL in small steps, so a journal that ran a million
// tasks and delivered every result returns near its empty size without a long stop of the loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

struct sqlite3;
struct sqlite3_stmt;

namespace zexecd {

enum class JournalSync {
  full,    // fsync at every commit: survives power loss (the default)
  normal,  // no fsync at commit (WAL pages are in the kernel): survives a crash of zexecd
};

// Every failure names the file; what() says what happened and what to do about it.
class JournalError : public std::runtime_error {
 public:
  enum class Kind {
    unusable,   // not a journal, another format version, corrupt: zexecd refuses to start
    read_only,  // the file or its folder cannot be written: refuses to start
    full,       // no space left: the group was rolled back, what it stood for must be refused
    in_use,     // another process (another zexecd) holds it: refuses to start
    io,         // any other I/O error, an fsync failure among them: the group was rolled back,
                // and the journal takes no more writes (fail-stop: after a failed fsync the
                // kernel may have dropped the pages, and whether they reached the disk is unknown)
  };
  JournalError(Kind kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}
  Kind kind() const noexcept { return kind_; }

 private:
  Kind kind_;
};

struct JournalRecord {
  std::int64_t id = 0;      // in append order
  std::uint32_t kind = 0;   // the caller's: what the bytes are
  std::uint64_t owner = 0;  // the caller's: e.g. the session the record belongs to
  std::string_view bytes;   // valid during the callback only
};

struct JournalStats {
  std::uint64_t records = 0;  // live (appended, committed, not forgotten)
  std::uint64_t commits = 0;
  std::uint64_t commit_failures = 0;
  std::int64_t file_bytes = 0;  // the database file
  std::int64_t wal_bytes = 0;   // its write-ahead log
};

class Journal {
 public:
  // Opens PATH, or creates an empty journal there. Throws JournalError: `unusable` for a file
  // that is not a zexec journal (not SQLite, or SQLite of another program), of another format
  // version, or corrupt (SQLite's quick_check); `read_only` when it cannot be written.
  Journal(std::string path, JournalSync sync);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Into the open group (begun by the first call after a commit). The id is final once the
  // group commits. Throws JournalError (full, io) when even the write into the group fails;
  // the group is then rolled back, as by a failed commit.
  std::int64_t append(std::uint32_t kind, std::uint64_t owner, std::string_view bytes);
  // A forget writes pages too: on a full disk it can fail like an append (kind full).
  void forget(std::int64_t id);
  // Every record of that owner (a session that ended), in the open group like forget().
  void forget_owner(std::uint64_t owner);
  bool in_group() const { return in_group_; }
  // Makes the group durable; a no-op without one. On failure the group is rolled back (its
  // appends and forgets never happened) and JournalError (full, io) is thrown.
  void commit();

  // Every live record in id order (at start, before the broker runs: it reads the whole file).
  void for_each(const std::function<void(const JournalRecord&)>& fn);

  // Returns free pages to the file system and truncates the WAL, a bounded step at a time
  // (about `budget` of work); true when nothing is left to do. Call it when the loop is idle.
  bool maintain(std::chrono::milliseconds budget);

  JournalStats stats() const;
  const std::string& path() const { return path_; }

 private:
  [[noreturn]] void fail(int rc, const std::string& doing);
  void check_usable() const;
  void exec(const char* sql);
  sqlite3_stmt* prepare(const char* sql);
  void begin_group();
  void erase(sqlite3_stmt* s, std::int64_t key, const char* doing);  // a DELETE, in the group
  void rollback_group();
  void check_writable();
  void check_format();

  std::string path_;
  JournalSync sync_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* insert_ = nullptr;
  sqlite3_stmt* erase_ = nullptr;
  sqlite3_stmt* erase_owner_ = nullptr;
  sqlite3_stmt* begin_ = nullptr;  // (prepared once: sqlite3_exec would parse them every group)
  sqlite3_stmt* commit_ = nullptr;
  bool open_ = false;  // past the constructor: an io failure from here on breaks the journal
  bool in_group_ = false;
  std::string broken_;  // why the journal takes no more writes (after an io failure), or ""

  std::int64_t group_delta_ = 0;  // records added minus forgotten in the open group
  JournalStats stats_;
};

}  // namespace zexecd
