#pragma once
// StoreChangeSignal: a file descriptor that becomes readable when some process writes to the state store's files,
// so that a reader can wait for changes instead of polling.
//
// SQLite appends every commit to the store's -wal file with write(2), which inotify reports. The commit becomes
// visible to readers only afterwards (SQLite then publishes it in the wal-index, a memory map of the -shm file,
// which inotify does not see, and with synchronous=FULL it syncs the -wal first). So a signal means "the store is
// changing", not "it has changed": the caller reads the store again for a while after each signal.
//
// The store's directory is watched rather than its files, so that the signal survives a -wal file being removed
// and created again.
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

}  // namespace nbdxm
