#pragma once
// StoreChangeSignal: a file descriptor that becomes readable when some process writes to the state store's files,
// so that a reader can wait for changes instead of polling; StoreCheckSchedule: when such a reader checks the store.
//
// SQLite appends every commit to the store's -wal file with write(2), which inotify reports. The commit becomes
// visible to readers only afterwards (SQLite then publishes it in the wal-index, a memory map of the -shm file,
// which inotify does not see, and with synchronous=FULL it syncs the -wal first). So a signal means "the store is
// changing", not "it has changed": the caller reads the store again for a while after each signal.
//
// The store's directory is watched rather than its files, so that the signal survives a -wal file being removed
// and created again.
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "nbdxm/file_descriptor.hpp"

namespace nbdxm {

class StoreChangeSignal {
 public:
  // Throws Error when the directory cannot be watched: it is not readable by this user, or the user's inotify
  // limits (fs.inotify.max_user_instances, max_user_watches) are used up.
  explicit StoreChangeSignal(const std::string& db_path);

  // Readable (poll(2) POLLIN) while events are pending.
  int fd() const noexcept { return inotify_.get(); }

  // Reads every pending event; true when one of them concerned the store's files (the database and the -wal,
  // -shm and -journal files beside it) or when events were lost, false when all concerned other files.
  bool drain();

 private:
  FileDescriptor inotify_;
  std::string store_name_;  // the database's file name; its companions' names start with it
};

// The signal for the store at db_path; nullptr where it cannot be watched, after telling `log` why and that the
// store will be checked every `interval` instead.
std::unique_ptr<StoreChangeSignal> watch_store_changes(const std::string& db_path, std::chrono::milliseconds interval,
                                                       const std::function<void(const std::string&)>& log);

// How often a reader checks the store (PRAGMA data_version) for changes.
struct StoreCheckPace {
  // While the store is being written, and all the time where it cannot be watched: well inside the issue's
  // 100 ms bound on noticing a revocation.
  std::chrono::milliseconds interval{20};
  // How long checks go on at `interval` after a StoreChangeSignal: long enough for the commit that wrote to become
  // visible, including its sync of the -wal file.
  std::chrono::milliseconds settle_window{1000};
  // An idle store is checked this often all the same: a safety net for writes that inotify cannot report (a store
  // on a network file system).
  std::chrono::milliseconds idle_interval{1000};
};

// When a reader that waits on a StoreChangeSignal checks the store next. It starts settling, as a commit may be on
// its way when the reader starts.
//
// While the store settles, checks come every pace.interval whatever is written, and the reader should not wait on
// the signal (it drains it at each check instead): with one reader per export, a burst of commits (a manager
// recording 200 adopted servers) would otherwise wake every reader once per commit. The first check after an idle
// spell comes one interval after the write that ended it, when the commit has usually been published.
class StoreCheckSchedule {
 public:
  using Clock = std::chrono::steady_clock;
  // `watched`: whether the reader has a StoreChangeSignal; without one it checks at pace.interval all the time.
  StoreCheckSchedule(StoreCheckPace pace, bool watched, Clock::time_point now)
      : pace_(pace), watched_(watched), settle_until_(now + pace.settle_window), last_check_(now) {}

  bool settling(Clock::time_point now) const { return !watched_ || now < settle_until_; }
  // Whether to wait on the signal until the next check.
  bool listening(Clock::time_point now) const { return watched_ && !settling(now); }
  void store_written(Clock::time_point now) {
    if (!settling(now)) last_check_ = now;
    settle_until_ = now + pace_.settle_window;
  }
  void checked(Clock::time_point now) { last_check_ = now; }
  // `hurry`: check at pace.interval regardless (the last check failed, say).
  Clock::time_point next_check(Clock::time_point now, bool hurry = false) const {
    return last_check_ + (hurry || settling(now) ? pace_.interval : pace_.idle_interval);
  }

 private:
  StoreCheckPace pace_;
  bool watched_;
  Clock::time_point settle_until_;
  Clock::time_point last_check_;
};

}  // namespace nbdxm
