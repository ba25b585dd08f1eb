#include "nbdxm/database.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <SQLiteCpp/Statement.h>
#include <algorithm>
#include <filesystem>
#include <mutex>
#include <optional>

#include "nbdxm/error.hpp"
#include "nbdxm/file_descriptor.hpp"
#include "nbdxm/schema.hpp"

namespace nbdxm {
namespace {

// Root writes the store in a folder that belongs to the service user, who can plant links there
// (state.db-wal -> /etc/shadow). SQLite opens the side files by name and, as root, fchowns the -wal file it opens
// to the store's owner; so every file SQLite opens is opened without following a last-component symbolic link,
// and as root a planted link, hard link, device or file of another file system is refused before SQLite starts.
int open_without_following(const char* path, int flags, int mode) { return ::open(path, flags | O_NOFOLLOW, mode); }

void install_open_without_following() {
  static std::once_flag once;
  std::call_once(once, [] {
    sqlite3_vfs* vfs = sqlite3_vfs_find(nullptr);
    if (vfs == nullptr || vfs->xSetSystemCall == nullptr ||
        vfs->xSetSystemCall(vfs, "open", reinterpret_cast<sqlite3_syscall_ptr>(&open_without_following)) != SQLITE_OK) {
      throw Error(ExitCode::failure,
                  "SQLite's file system layer does not let nbdxm open files without following "
                  "symbolic links; nbdxm needs SQLite's unix VFS");
    }
  });
}

// Why root must not open this file of the store (the store itself, or one of its side files next to it), or
// nothing when it may. A missing file is fine: SQLite creates it, without following links.
std::optional<std::string> unsafe_for_root(const std::string& file, const struct stat* store) {
  struct stat st {};
  if (::lstat(file.c_str(), &st) != 0) return std::nullopt;
  if (S_ISLNK(st.st_mode)) return fmt::format("{} is a symbolic link", file);
  if (!S_ISREG(st.st_mode)) return fmt::format("{} is not a regular file", file);
  if (st.st_nlink != 1) return fmt::format("{} has {} hard links", file, st.st_nlink);
  if (store != nullptr && st.st_dev != store->st_dev) {
    return fmt::format("{} is on another file system than the store", file);
  }
  return std::nullopt;
}

// As root: refuses a store whose path or side files could make root write or chown a file outside the store. A
// reader may open the store through a link: SQLite resolves it and opens the side files next to the real store,
// without following links, and a reader hands no file to anyone.
void refuse_unsafe_store_files(const std::string& path, Database::Access access) {
  if (geteuid() != 0) return;
  const auto problem = unsafe_for_root(path, nullptr);
  if (problem && (access == Database::Access::read_write || problem->find("symbolic link") == std::string::npos)) {
    throw Error(ExitCode::failure,
                fmt::format("state store {}: {}; as root nbdxm opens only the store's own file: give its real path "
                            "with --db (or NBDXM_DB), or run nbdxm as the store's owner",
                            path, *problem));
  }
  struct stat store {};
  if (::stat(path.c_str(), &store) != 0) return;                              // nbdxm init creates it
  const std::string real = std::filesystem::weakly_canonical(path).string();  // where SQLite puts the side files
  for (const char* suffix : {"-wal", "-shm", "-journal"}) {
    if (const auto side_problem = unsafe_for_root(real + suffix, &store)) {
      throw Error(ExitCode::failure,
                  fmt::format("state store {}: {}; root will not write through it: remove {} (nothing but a "
                              "running nbdxm may have created it) and run the command again",
                              path, *side_problem, real + suffix));
    }
  }
}

// A process running as root that creates the -wal/-shm side files would leave them owned by root, and the service
// user could then no longer write. Give them to the store file's owner: through a descriptor opened without
// following links, and only a regular file with one link on the store's file system. The descriptor is O_PATH:
// closing any other descriptor of the -shm file would drop this process's POSIX locks on it, SQLite's included,
// and the next connection elsewhere would then truncate the shared memory this process has mapped (SIGBUS).
void give_side_files_to_store_owner(const std::string& path) {
  if (geteuid() != 0) return;
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return;
  for (const char* suffix : {"-wal", "-shm"}) {
    const FileDescriptor side(::open((path + suffix).c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    struct stat side_st {};
    if (!side.valid() || ::fstat(side.get(), &side_st) != 0) continue;
    if (!S_ISREG(side_st.st_mode) || side_st.st_nlink != 1 || side_st.st_dev != st.st_dev) continue;
    if (side_st.st_uid == st.st_uid && side_st.st_gid == st.st_gid) continue;
    if (::fchownat(side.get(), "", st.st_uid, st.st_gid, AT_EMPTY_PATH) != 0) {
      // Not fatal for this process; `nbdxm check` reports ownership problems.
    }
  }
}

}  // namespace

Database::Database(const std::string& path, int flags, Access access) : path_(path), db_(path, flags) {
  configure(access);
}

Database Database::open(const std::string& path, Access access, Serialization serialization) {
  install_open_without_following();
  refuse_unsafe_store_files(path, access);
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    throw Error(ExitCode::failure,
                fmt::format("state store {} does not exist; create it with `nbdxm --db {} init`", path, path));
  }
  int flags = access == Access::read_only ? SQLite::OPEN_READONLY : SQLite::OPEN_READWRITE;
  if (serialization == Serialization::by_caller) flags |= SQLITE_OPEN_NOMUTEX;
  try {
    return Database(path, flags, access);
  } catch (const SQLite::Exception& e) {
    throw Error(ExitCode::failure, fmt::format("cannot open state store {}: {}", path, e.what()));
  }
}

Database Database::create(const std::string& path) {
  install_open_without_following();
  refuse_unsafe_store_files(path, Access::read_write);
  try {
    return Database(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE, Access::read_write);
  } catch (const SQLite::Exception& e) {
    throw Error(
        ExitCode::failure,
        fmt::format("cannot create state store {}: {} (does its directory exist and is it writable?)", path, e.what()));
  }
}

void Database::set_busy_timeout(std::chrono::milliseconds timeout) {
  busy_timeout_ = std::max(timeout, std::chrono::milliseconds(0));
  db_.setBusyTimeout(static_cast<int>(busy_timeout_.count()));
}

void Database::configure(Access access) {
  set_busy_timeout(kBusyTimeout);
  // Keep the -wal and -shm files after the last connection closes, so read-only openers (the plugin, running as
  // the service user) always find them and never need to create them.
  int persist = 1;
  sqlite3_file_control(db_.getHandle(), "main", SQLITE_FCNTL_PERSIST_WAL, &persist);
  db_.exec("PRAGMA foreign_keys = ON");
  if (access == Access::read_write) {
    db_.exec("PRAGMA journal_mode = WAL");
    give_side_files_to_store_owner(path_);
  }
  db_.exec("PRAGMA synchronous = FULL");
}

int Database::user_version() { return db_.execAndGet("PRAGMA user_version").getInt(); }

int64_t Database::data_version() {
  if (!data_version_query_) data_version_query_ = std::make_unique<SQLite::Statement>(db_, "PRAGMA data_version");
  const StatementReset reset(*data_version_query_);
  if (!data_version_query_->executeStep()) {
    throw Error(ExitCode::failure, fmt::format("state store {} returned no data_version", path_));
  }
  return data_version_query_->getColumn(0).getInt64();
}

Database::InitResult Database::init() {
  WriteTransaction tx(*this);
  const int from = user_version();
  const int latest = schema::latest_version();
  if (from > latest) {
    throw Error(ExitCode::failure,
                fmt::format("state store {} has schema version {}, newer than this nbdxm ({} understands up to {}); "
                            "upgrade nbdxm instead",
                            path_, from, NBDXM_VERSION, latest));
  }
  for (const auto& step : schema::steps()) {
    if (step.version <= from) continue;
    db_.exec(step.sql);
  }
  db_.exec(fmt::format("PRAGMA user_version = {}", latest));
  tx.commit();
  return {from, latest};
}

void Database::require_current_schema() {
  const int version = user_version();
  const int latest = schema::latest_version();
  if (version == latest) return;
  if (version == 0) {
    throw Error(ExitCode::failure,
                fmt::format("state store {} is not initialised; run `nbdxm --db {} init`", path_, path_));
  }
  if (version < latest) {
    throw Error(ExitCode::failure, fmt::format("state store {} has schema version {} but this nbdxm needs {}; "
                                               "upgrade it with `nbdxm --db {} init`",
                                               path_, version, latest, path_));
  }
  throw Error(ExitCode::failure,
              fmt::format("state store {} has schema version {}, newer than this nbdxm ({} understands up to {}); "
                          "upgrade nbdxm",
                          path_, version, NBDXM_VERSION, latest));
}

namespace {
constexpr const char* kSavepoint = "nbdxm_write";
}  // namespace

WriteTransaction::WriteTransaction(Database& db) : sql_(db.sql()) {
  if (sqlite3_get_autocommit(sql_.getHandle()) == 0) {  // inside a transaction: it holds the write lock already
    sql_.exec(fmt::format("SAVEPOINT {}", kSavepoint));
    savepoint_open_ = true;
    return;
  }
  try {
    tx_.emplace(db.sql(), SQLite::TransactionBehavior::IMMEDIATE);
  } catch (const SQLite::Exception& e) {
    if ((e.getErrorCode() & 0xff) != SQLITE_BUSY) throw;
    const auto waited = db.busy_timeout();
    throw StoreBusy(ExitCode::failure,
                    fmt::format("the state store {} is busy: another process kept it locked for longer than {}; try "
                                "again once it is done",
                                db.path(),
                                waited.count() % 1000 == 0 ? fmt::format("{} s", waited.count() / 1000)
                                                           : fmt::format("{} ms", waited.count())));
  }
}

WriteTransaction::~WriteTransaction() {
  if (!savepoint_open_) return;  // tx_ rolls back by itself unless committed
  try {
    sql_.exec(fmt::format("ROLLBACK TO {0}; RELEASE {0}", kSavepoint));
  } catch (const SQLite::Exception&) {
    // The outer transaction was rolled back already (SQLite does so on some errors): nothing is left to undo.
  }
}

void WriteTransaction::commit() {
  if (!savepoint_open_) {
    tx_->commit();
    return;
  }
  sql_.exec(fmt::format("RELEASE {}", kSavepoint));
  savepoint_open_ = false;
}

}  // namespace nbdxm
