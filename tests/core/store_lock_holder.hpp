#pragma once
// Another process holding the store's lock, as another appliance service might: the sqlite3 shell, in a transaction
// of its own, for the tests of what a locked store must not stall.
#include <chrono>
#include <optional>
#include <string>

#include "nbdxm/child_process.hpp"
#include "store_test_support.hpp"

namespace nbdxm::test {

class StoreLockHolder {
 public:
  enum class Lock {
    immediate,  // BEGIN IMMEDIATE: other writers wait; in WAL mode readers do not
    exclusive,  // exclusive locking mode and a write: readers wait too
  };
  // Starts `sqlite3` on the store, runs `sql` in its transaction and returns once the lock is held (a probe from
  // another connection is refused). It commits and exits at release() or after `at_most`, whichever comes first.
  StoreLockHolder(const TempDir& dir, const std::string& db, Lock lock, std::chrono::seconds at_most,
                  const std::string& sql = "");
  ~StoreLockHolder();  // releases
  StoreLockHolder(const StoreLockHolder&) = delete;
  StoreLockHolder& operator=(const StoreLockHolder&) = delete;

  // Whether the lock is held now: another connection's probe is refused (a write for immediate, a read for
  // exclusive).
  bool holding();
  // Whether the holder has exited: its lock is gone.
  bool released();
  // Asks the holder to commit and waits (up to 30 s) until it has exited; the holder's output when it failed.
  void release();
  std::string output() const;

 private:
  std::string db_;
  Lock lock_;
  std::string release_file_;
  std::string output_file_;
  std::optional<ChildProcess> process_;
};

}  // namespace nbdxm::test
