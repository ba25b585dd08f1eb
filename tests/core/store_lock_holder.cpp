#include "store_lock_holder.hpp"

#include <fmt/format.h>
#include <sqlite3.h>
#include <sys/wait.h>

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Exception.h>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

namespace nbdxm::test {
namespace {

// The shell reads its statements from a pipe: the transaction's first, then (once the release file appears or the
// time is up) COMMIT; at the end of its input it exits.
constexpr const char* kScript = R"(db=$1 release=$2 seconds=$3; shift 3
{ printf '%s\n' "$@"
  timeout "$seconds" sh -c 'until [ -e "$0" ]; do sleep 0.02; done' "$release"
  echo 'COMMIT;'
} | sqlite3 -bail "$db")";

// Holds the -shm locks of a WAL recovery (SQLite's wal.c: WAL_WRITE_LOCK at byte 120, WAL_RECOVER_LOCK at 122)
// with the second copy of the wal-index header (bytes 48 to 95) changed in its iChange field, until the release file
// appears or the time is up; then puts the header back and exits, which releases the locks.
constexpr const char* kRecoveryScript = R"(
import fcntl, os, sys, time
shm, release, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
fd = os.open(shm, os.O_RDWR)
deadline = time.monotonic() + 30
while True:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 120)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 122)
        break
    except OSError:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, 120)
        if time.monotonic() > deadline: sys.exit("the -shm locks stayed busy")
        time.sleep(0.01)
original = os.pread(fd, 4, 56)
os.pwrite(fd, bytes(b ^ 0xff for b in original), 56)
end = time.monotonic() + seconds
while time.monotonic() < end and not os.path.exists(release):
    time.sleep(0.02)
os.pwrite(fd, original, 56)
)";

bool refused(const std::string& db, StoreLockHolder::Lock lock) {
  try {
    SQLite::Database probe(db, SQLite::OPEN_READWRITE);  // busy timeout 0: refused at once while the lock is held
    if (lock == StoreLockHolder::Lock::recovery) {
      probe.execAndGet("SELECT count(*) FROM sqlite_master");
    } else {
      probe.exec("BEGIN IMMEDIATE");
      probe.exec("ROLLBACK");
    }
    return false;
  } catch (const SQLite::Exception& e) {
    if ((e.getErrorCode() & 0xff) == SQLITE_BUSY || (e.getErrorCode() & 0xff) == SQLITE_LOCKED) return true;
    throw;
  }
}

}  // namespace

StoreLockHolder::StoreLockHolder(const TempDir& dir, const std::string& db, Lock lock, std::chrono::seconds at_most,
                                 const std::string& sql)
    : db_(db), lock_(lock), release_file_(dir.file("release-store-lock")), output_file_(dir.file("store-lock.log")) {
  std::filesystem::remove(release_file_);
  SpawnOptions options;
  if (lock == Lock::recovery) {
    options.argv = {"/usr/bin/python3", "-c",          kRecoveryScript,
                    db + "-shm",        release_file_, std::to_string(at_most.count())};
  } else {
    // A write that changes nothing, unless the test gives one.
    options.argv = {"sh",
                    "-c",
                    kScript,
                    "sh",
                    db,
                    release_file_,
                    std::to_string(at_most.count()),
                    ".timeout 10000",
                    "BEGIN IMMEDIATE;",
                    sql.empty() ? "INSERT INTO export_manager SELECT * FROM export_manager WHERE 0;" : sql};
  }
  options.stdout_path = output_file_;
  options.stderr_path = output_file_;
  process_.emplace(ChildProcess::spawn(options));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!refused(db_, lock_)) {
    if (!process_->running() || std::chrono::steady_clock::now() >= deadline) {
      throw std::runtime_error(fmt::format("the store's lock holder did not take its lock: {}", output()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

StoreLockHolder::~StoreLockHolder() {
  try {
    release();
  } catch (...) {
    // A test that failed already says why; the holder is killed below all the same.
  }
  if (process_) process_->stop(std::chrono::seconds(1));
}

bool StoreLockHolder::holding() { return !released() && refused(db_, lock_); }

bool StoreLockHolder::released() { return !process_ || !process_->running(); }

void StoreLockHolder::release() {
  if (!process_) return;
  std::ofstream(release_file_).put('\n');
  const auto status = process_->wait(std::chrono::seconds(30));
  if (!status) throw std::runtime_error("the store's lock holder did not exit");
  process_.reset();
  if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    throw std::runtime_error(fmt::format("the store's lock holder failed: {}", output()));
  }
}

std::string StoreLockHolder::output() const {
  std::ifstream in(output_file_);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace nbdxm::test
