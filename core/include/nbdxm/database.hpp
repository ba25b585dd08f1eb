#pragma once
// A connection to the state store, configured the one way every nbdxm process uses it: foreign keys on, WAL,
// synchronous=FULL and a busy timeout, so that concurrent writers wait instead of failing.
#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>
#include <SQLiteCpp/Transaction.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "nbdxm/error.hpp"

namespace nbdxm {

class Database {
 public:
  enum class Access { read_write, read_only };
  static constexpr std::chrono::milliseconds kBusyTimeout{10000};
  static constexpr const char* kDefaultPath = "/var/lib/nbdxm/state.db";

  // Who keeps the connection to one thread at a time. by_sqlite: SQLite's own mutex, around every call. by_caller:
  // the caller holds a lock of its own around every use (ExportWatcher does); leaving SQLite's mutex out made the
  // plugin's connects per second about 1 % faster.
  enum class Serialization { by_sqlite, by_caller };

  // Opens an existing store. Throws Error naming the path and the fix when it is missing or unreadable.
  static Database open(const std::string& path, Access access, Serialization serialization = Serialization::by_sqlite);
  // Opens the store for `nbdxm init`, creating the file (but not its directory) when it does not exist.
  static Database create(const std::string& path);
  Database(Database&&) = default;
  // Not assignable: the assignment would close the old connection while its prepared statement still exists.
  Database& operator=(Database&&) = delete;

  SQLite::Database& sql() { return db_; }
  const std::string& path() const { return path_; }
  // How long each later statement waits for a lock another connection holds before it fails with SQLITE_BUSY
  // (kBusyTimeout from the start). The manager's loop and the plugin's watcher wait much less than a command does.
  void set_busy_timeout(std::chrono::milliseconds timeout);
  std::chrono::milliseconds busy_timeout() const { return busy_timeout_; }

  int user_version();
  struct InitResult {
    int from_version;
    int to_version;
  };
  // Creates or upgrades the schema to schema::latest_version() in one transaction. Idempotent. Refuses a store
  // written by a newer nbdxm.
  InitResult init();
  // Throws Error unless the store is at the schema version this binary was built with.
  void require_current_schema();

  // The store changes whenever another connection commits; cheap to poll (PRAGMA data_version, prepared once:
  // every export server checks it 50 times a second while the store is being written, see StoreCheckSchedule).
  int64_t data_version();

 private:
  Database(const std::string& path, int flags, Access access);
  void configure(Access access);

  std::string path_;
  std::chrono::milliseconds busy_timeout_{kBusyTimeout};
  SQLite::Database db_;
  std::unique_ptr<SQLite::Statement> data_version_query_;  // after db_: finalized before the connection closes
};

// Resets a prepared statement when the scope ends, however it ends: a statement left stepping holds its read
// transaction open, which pins an old snapshot of the store and keeps the WAL from being checkpointed.
class StatementReset {
 public:
  explicit StatementReset(SQLite::Statement& query) : query_(query) {}
  StatementReset(const StatementReset&) = delete;
  StatementReset& operator=(const StatementReset&) = delete;
  ~StatementReset() { query_.tryReset(); }

 private:
  SQLite::Statement& query_;
};

// Another process kept the store's write lock for longer than the connection's busy timeout. Its message names the
// store; callers that can wait (the manager) try again later.
class StoreBusy : public Error {
 public:
  using Error::Error;
};

// A write transaction that takes the write lock at BEGIN, so two writers never deadlock on a lock upgrade.
// Rolls back unless commit() is called. Inside another one on the same connection it is a savepoint of it: its
// commit keeps its changes for the outer one's commit, its rollback undoes only its own (so a caller can group many
// writes into one commit, and one sync of the store, without changing what each of them does).
class WriteTransaction {
 public:
  explicit WriteTransaction(Database& db);  // throws StoreBusy
  WriteTransaction(const WriteTransaction&) = delete;
  WriteTransaction& operator=(const WriteTransaction&) = delete;
  ~WriteTransaction();
  void commit();

 private:
  SQLite::Database& sql_;
  std::optional<SQLite::Transaction> tx_;  // the outermost one; unset for a savepoint
  bool savepoint_open_ = false;
};

}  // namespace nbdxm
