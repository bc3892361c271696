// The journal on SQLite: one table of opaque records, WAL mode, one transaction per group.
#include "journal.hpp"

#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

namespace zexecd {
namespace {

// "zexc": PRAGMA application_id tells a zexec journal from any other SQLite file.
constexpr std::int32_t kApplicationId = 0x7a657863;
// PRAGMA user_version: the layout below. A zexecd that finds another refuses to guess.
constexpr int kFormatVersion = 1;
// Pages incremental_vacuum frees per step of maintain() (4 KiB each), and the WAL size at which
// maintain() checkpoints between steps: each checkpoint then copies at most about 1 MiB.
constexpr int kVacuumStep = 64;
constexpr std::int64_t kWalCheckpointBytes = 1 << 20;
// The WAL file is cut back to this after a checkpoint; SQLite checkpoints by itself at 1000
// pages (4 MiB), so a busy daemon that is never idle still has a bounded WAL.
constexpr const char* kWalLimit = "PRAGMA journal_size_limit = 4194304";

std::int64_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<std::int64_t>(st.st_size) : 0;
}

struct Finalizer {
  sqlite3_stmt* s;
  ~Finalizer() { sqlite3_finalize(s); }
};

}  // namespace

void Journal::fail(int rc, const std::string& doing) {
  int primary = rc & 0xff;
  int sys = db_ ? sqlite3_system_errno(db_) : 0;
  std::string what =
      "journal " + path_ + ": " + doing + ": " + (db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc));
  if (sys != 0) what += std::string(" (") + std::strerror(sys) + ")";
  JournalError::Kind kind = JournalError::Kind::io;
  if (primary == SQLITE_FULL || sys == ENOSPC || sys == EDQUOT) {
    kind = JournalError::Kind::full;
    what += "; free space on its file system (submits are refused until there is)";
  } else if (primary == SQLITE_READONLY || sys == EROFS || sys == EACCES || sys == EPERM) {
    kind = JournalError::Kind::read_only;
    what += "; the zexec user must be able to write the file and its folder, or choose another --journal";
  } else if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB) {
    kind = JournalError::Kind::unusable;
    what +=
        "; restore it from a backup, or move it aside to start with an empty journal (its tasks are then "
        "lost)";
  } else if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) {
    kind = JournalError::Kind::in_use;
    what += "; another zexecd has it open: give each daemon its own --journal";
  } else if (open_) {
    // Fail-stop: after a failed write or fsync, what reached the disk is unknown.
    what += "; the journal takes no more writes until zexecd restarts";
    broken_ = what;
  }
  throw JournalError(kind, what);
}

void Journal::exec(const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
  sqlite3_free(err);
  if (rc != SQLITE_OK) fail(rc, sql);
}

sqlite3_stmt* Journal::prepare(const char* sql) {
  sqlite3_stmt* s = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr);
  if (rc != SQLITE_OK) fail(rc, std::string("preparing ") + sql);
  return s;
}

namespace {
// The one integer a PRAGMA or a count returns; rc is SQLite's result for the caller to judge.
std::int64_t query_int(sqlite3* db, const char* sql, int& rc) {
  sqlite3_stmt* s = nullptr;
  rc = sqlite3_prepare_v2(db, sql, -1, &s, nullptr);
  if (rc != SQLITE_OK) return 0;
  Finalizer f{s};
  rc = sqlite3_step(s);
  if (rc != SQLITE_ROW) return 0;
  rc = SQLITE_OK;
  return sqlite3_column_int64(s, 0);
}
}  // namespace

// SQLite's own report of a path it cannot write is "unable to open database file" with the errno
// of its last attempt (ENOENT, from the read-only retry), so ask the file system first: the file,
// and its folder, where the WAL is made beside it.
void Journal::check_writable() {
  std::filesystem::path p(path_);
  std::filesystem::path dir = p.has_parent_path() ? p.parent_path() : std::filesystem::path(".");
  auto refuse = [&](const std::string& what, int err) {
    JournalError::Kind kind = (err == EROFS || err == EACCES || err == EPERM) ? JournalError::Kind::read_only
                                                                              : JournalError::Kind::io;
    throw JournalError(kind, "journal " + path_ + ": " + what + " (" + std::strerror(err) + ")" +
                                 (kind == JournalError::Kind::read_only
                                      ? "; the zexec user must be able to write the file and its folder, "
                                        "or choose another --journal"
                                      : ""));
  };
  if (::access(dir.c_str(), W_OK) != 0) refuse("cannot write its folder " + dir.string(), errno);
  if (::access(path_.c_str(), F_OK) == 0 && ::access(path_.c_str(), W_OK) != 0)
    refuse("cannot write it", errno);
}

Journal::Journal(std::string path, JournalSync sync) : path_(std::move(path)), sync_(sync) {
  check_writable();
  int rc = sqlite3_open_v2(path_.c_str(), &db_,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  try {
    if (rc != SQLITE_OK) fail(rc, "cannot open");
    sqlite3_extended_result_codes(db_, 1);
    // A file SQLite could open only for reading (the OS refused write access).
    if (sqlite3_db_readonly(db_, "main") == 1) fail(SQLITE_READONLY, "cannot write it");
    // One zexecd per journal: the first write takes an exclusive lock and keeps it, and no
    // shared-memory index is needed (the WAL index lives in zexecd's heap).
    exec("PRAGMA locking_mode = EXCLUSIVE");
    check_format();
    exec(sync_ == JournalSync::full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
    exec(kWalLimit);
    insert_ = prepare("INSERT INTO records(kind, owner, bytes) VALUES (?, ?, ?)");
    erase_ = prepare("DELETE FROM records WHERE id = ?");
    erase_owner_ = prepare("DELETE FROM records WHERE owner = ?");
    begin_ = prepare("BEGIN IMMEDIATE");
    commit_ = prepare("COMMIT");
    int qrc = 0;
    stats_.records = static_cast<std::uint64_t>(query_int(db_, "SELECT count(*) FROM records", qrc));
    if (qrc != SQLITE_OK) fail(qrc, "counting its records");
    open_ = true;
  } catch (...) {
    sqlite3_finalize(insert_);
    sqlite3_finalize(erase_);
    sqlite3_finalize(erase_owner_);
    sqlite3_finalize(begin_);
    sqlite3_finalize(commit_);
    sqlite3_close(db_);
    db_ = nullptr;
    throw;
  }
}

Journal::~Journal() {
  if (in_group_) rollback_group();
  sqlite3_finalize(insert_);
  sqlite3_finalize(erase_);
  sqlite3_finalize(erase_owner_);
  sqlite3_finalize(begin_);
  sqlite3_finalize(commit_);
  sqlite3_close(db_);
}

// A new file becomes an empty journal; an existing one must be ours, of this version, intact.
void Journal::check_format() {
  int rc = 0;
  std::int64_t app = query_int(db_, "PRAGMA application_id", rc);
  if (rc != SQLITE_OK) fail(rc, "not a zexec journal");
  std::int64_t objects = query_int(db_, "SELECT count(*) FROM sqlite_schema", rc);
  if (rc != SQLITE_OK) fail(rc, "not a zexec journal");
  if (app == 0 && objects == 0) {
    // auto_vacuum must be chosen before the first table exists.
    exec("PRAGMA auto_vacuum = INCREMENTAL");
    std::string mode;
    {
      sqlite3_stmt* s = prepare("PRAGMA journal_mode = WAL");
      Finalizer f{s};
      rc = sqlite3_step(s);
      if (rc != SQLITE_ROW) fail(rc, "switching to WAL mode");
      mode = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
    }
    if (mode != "wal") fail(SQLITE_READONLY, "switching to WAL mode gave " + mode);
    exec("BEGIN IMMEDIATE");
    exec(("PRAGMA application_id = " + std::to_string(kApplicationId)).c_str());
    exec(("PRAGMA user_version = " + std::to_string(kFormatVersion)).c_str());
    exec(
        "CREATE TABLE records(id INTEGER PRIMARY KEY, kind INTEGER NOT NULL, owner INTEGER NOT NULL,"
        " bytes BLOB NOT NULL)");
    exec("COMMIT");
    return;
  }
  if (app != kApplicationId) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "0x%08llx", static_cast<unsigned long long>(app & 0xffffffff));
    throw JournalError(JournalError::Kind::unusable,
                       "journal " + path_ + ": not a zexec journal (a SQLite database with application_id " +
                           hex + "); point --journal at another file, or move this one aside");
  }
  std::int64_t version = query_int(db_, "PRAGMA user_version", rc);
  if (rc != SQLITE_OK) fail(rc, "reading its format version");
  if (version != kFormatVersion)
    throw JournalError(JournalError::Kind::unusable,
                       "journal " + path_ + ": format version " + std::to_string(version) +
                           ", this zexecd reads " + std::to_string(kFormatVersion) +
                           " only; run the zexecd that wrote it until its tasks are done, or move it aside");
  exec("PRAGMA journal_mode = WAL");  // persistent, but a copy made without its -wal may say DELETE
  // Cheap on a compacted journal (it holds only what is unfinished or undelivered).
  sqlite3_stmt* s = prepare("PRAGMA quick_check");
  Finalizer f{s};
  rc = sqlite3_step(s);
  if (rc != SQLITE_ROW) fail(rc, "checking it");
  std::string verdict = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
  if (verdict != "ok") fail(SQLITE_CORRUPT, "corrupt (quick_check: " + verdict + ")");
}

void Journal::check_usable() const {
  if (!broken_.empty()) throw JournalError(JournalError::Kind::io, broken_);
}

void Journal::begin_group() {
  check_usable();
  int rc = sqlite3_step(begin_);
  sqlite3_reset(begin_);
  if (rc != SQLITE_DONE) fail(rc, "BEGIN IMMEDIATE");
  in_group_ = true;
  group_delta_ = 0;
}

void Journal::rollback_group() {
  // A failed statement or COMMIT may have rolled back already (autocommit is on again then).
  if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  in_group_ = false;
  group_delta_ = 0;
}

std::int64_t Journal::append(std::uint32_t kind, std::uint64_t owner, std::string_view bytes) {
  if (!in_group_) begin_group();
  sqlite3_bind_int64(insert_, 1, kind);
  sqlite3_bind_int64(insert_, 2, static_cast<sqlite3_int64>(owner));
  sqlite3_bind_blob64(insert_, 3, bytes.data(), bytes.size(), SQLITE_STATIC);
  int rc = sqlite3_step(insert_);
  sqlite3_reset(insert_);
  sqlite3_clear_bindings(insert_);
  if (rc != SQLITE_DONE) {
    rollback_group();
    fail(rc, "appending a record");
  }
  ++group_delta_;
  return sqlite3_last_insert_rowid(db_);
}

void Journal::erase(sqlite3_stmt* s, std::int64_t key, const char* doing) {
  if (!in_group_) begin_group();
  sqlite3_bind_int64(s, 1, key);
  int rc = sqlite3_step(s);
  sqlite3_reset(s);
  if (rc != SQLITE_DONE) {
    rollback_group();
    fail(rc, doing);
  }
  group_delta_ -= sqlite3_changes(db_);
}

void Journal::forget(std::int64_t id) {
  erase(erase_, id, "forgetting a record");
}

void Journal::forget_owner(std::uint64_t owner) {
  erase(erase_owner_, static_cast<std::int64_t>(owner), "forgetting a session's records");
}

void Journal::commit() {
  if (!in_group_) return;
  int rc = sqlite3_step(commit_);
  sqlite3_reset(commit_);
  if (rc != SQLITE_DONE) {
    ++stats_.commit_failures;
    rollback_group();
    fail(rc, "committing");
  }
  stats_.records = static_cast<std::uint64_t>(static_cast<std::int64_t>(stats_.records) + group_delta_);
  ++stats_.commits;
  in_group_ = false;
  group_delta_ = 0;
}

void Journal::for_each(const std::function<void(const JournalRecord&)>& fn) {
  sqlite3_stmt* s = prepare("SELECT id, kind, owner, bytes FROM records ORDER BY id");
  Finalizer f{s};
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    JournalRecord r;
    r.id = sqlite3_column_int64(s, 0);
    r.kind = static_cast<std::uint32_t>(sqlite3_column_int64(s, 1));
    r.owner = static_cast<std::uint64_t>(sqlite3_column_int64(s, 2));
    const void* p = sqlite3_column_blob(s, 3);
    r.bytes =
        std::string_view(static_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(s, 3)));
    fn(r);
  }
  if (rc != SQLITE_DONE) fail(rc, "reading its records");
}

bool Journal::maintain(std::chrono::milliseconds budget) {
  if (in_group_ || !broken_.empty()) return false;
  auto deadline = std::chrono::steady_clock::now() + budget;
  int rc = 0;
  // Vacuum steps move pages through the WAL; checkpointing it whenever it holds a few steps'
  // worth keeps every checkpoint, and so every call, short (a checkpoint copies the whole WAL).
  while (query_int(db_, "PRAGMA freelist_count", rc) > 0 && rc == SQLITE_OK) {
    exec(("PRAGMA incremental_vacuum(" + std::to_string(kVacuumStep) + ")").c_str());
    if (file_size(path_ + "-wal") > kWalCheckpointBytes) {
      rc = sqlite3_wal_checkpoint_v2(db_, "main", SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
      if (rc != SQLITE_OK) fail(rc, "checkpointing its WAL");
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
  }
  if (rc != SQLITE_OK) fail(rc, "reading its free pages");
  if (file_size(path_ + "-wal") == 0) return true;
  // TRUNCATE: copy the WAL into the database, sync, and cut the WAL to nothing. No reader can
  // hold it up: zexecd is the only one (exclusive locking).
  rc = sqlite3_wal_checkpoint_v2(db_, "main", SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
  if (rc != SQLITE_OK) fail(rc, "checkpointing its WAL");
  return file_size(path_ + "-wal") == 0;
}

JournalStats Journal::stats() const {
  JournalStats s = stats_;
  s.file_bytes = file_size(path_);
  s.wal_bytes = file_size(path_ + "-wal");
  return s;
}

}  // namespace zexecd
