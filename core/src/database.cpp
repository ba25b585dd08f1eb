#include "nbdxm/database.hpp"

#include <fmt/format.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <SQLiteCpp/Statement.h>
#include <algorithm>
#include <filesystem>

#include "nbdxm/error.hpp"
#include "nbdxm/schema.hpp"

namespace nbdxm {
namespace {

// A process running as root that creates the -wal/-shm side files would leave them owned by root, and the service
// user could then no longer write. Give them to the store file's owner.
void give_side_files_to_store_owner(const std::string& path) {
  if (geteuid() != 0) return;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return;
  for (const char* suffix : {"-wal", "-shm"}) {
    const std::string side = path + suffix;
    struct stat side_st {};
    if (::stat(side.c_str(), &side_st) == 0 && (side_st.st_uid != st.st_uid || side_st.st_gid != st.st_gid)) {
      if (::chown(side.c_str(), st.st_uid, st.st_gid) != 0) {
        // Not fatal for this process; `nbdxm check` reports ownership problems.
      }
    }
  }
}

}  // namespace

Database::Database(const std::string& path, int flags, Access access) : path_(path), db_(path, flags) {
  configure(access);
}

Database Database::open(const std::string& path, Access access, Serialization serialization) {
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

WriteTransaction::WriteTransaction(Database& db) {
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

}  // namespace nbdxm
