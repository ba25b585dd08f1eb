#pragma once
// Putting what a stopped export server wrote on stable storage. A server acknowledges a write once it is in the
// page cache; when the server is killed (nbdkit 1.32 waits forever for idle clients after SIGTERM) nothing flushes
// it, so whoever stops a server syncs the export's devices after the server's processes are gone.
#include <string>
#include <vector>

namespace nbdxm {

struct DeviceSyncResult {
  std::vector<std::string> synced;    // fdatasync'ed
  std::vector<std::string> missing;   // no longer exists: nothing of it is left to sync
  std::vector<std::string> failures;  // one line each: the path and the error
  bool ok() const { return failures.empty(); }
};

// fdatasync of each block device or regular file in `paths` (each opened read-only: syncing needs no write access).
DeviceSyncResult sync_devices(const std::vector<std::string>& paths);

}  // namespace nbdxm
