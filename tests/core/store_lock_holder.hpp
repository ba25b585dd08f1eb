#pragma once
// Another process holding the store's lock, as another appliance service might, for the tests of what a locked store
// must not stall.
#include <chrono>
#include <optional>
#include <string>

#include "nbdxm/child_process.hpp"
#include "store_test_support.hpp"

namespace nbdxm::test {

class StoreLockHolder {
 public:
  enum class Lock {
    immediate,  // BEGIN IMMEDIATE (the sqlite3 shell): other writers wait; in WAL mode readers do not
    // A WAL recovery in progress: readers wait too (SQLITE_BUSY_RECOVERY). Exclusive locking mode cannot stand in
    // for it: while other processes keep the store open (the plugin and the manager always do), a connection in
    // exclusive locking mode cannot get its lock. A python3 process holds the -shm file's write and recover locks,
    // as a recovering connection does, with the wal-index header's second copy changed so that readers see it torn
    // and must wait for the recovery; the header is put back before the locks are released.
    recovery,
  };
  // Starts the holder and returns once the lock is held (a probe from another connection is refused). It releases
  // it (commits; puts the header back) and exits at release() or after `at_most`, whichever comes first. `sql`
  // (immediate only) runs in its transaction.
  StoreLockHolder(const TempDir& dir, const std::string& db, Lock lock, std::chrono::seconds at_most,
                  const std::string& sql = "");
  ~StoreLockHolder();  // releases
  StoreLockHolder(const StoreLockHolder&) = delete;
  StoreLockHolder& operator=(const StoreLockHolder&) = delete;

  // Whether the lock is held now: another connection's probe is refused (a write for immediate, a read for
  // recovery).
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
