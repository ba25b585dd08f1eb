#pragma once
// DurabilityFolder: the manager's reader of the servers' counter files (nbdxm/export_counters.hpp) for durability
// failures. Every kInterval (and at once at start, so that a failure recorded while no manager ran is not lost) it
// maps each file in <run-dir>/counters and hands every failure not yet recorded to the store (StoreWrites:
// ExportStore::record_durability_failure, one small transaction that also fails the export while it is live). The
// store's write is idempotent, so a new manager simply reports every file again. A file is removed only once its
// export's server is stopped and its failures are in the store, that is after the commit that holds them (retire):
// a manager killed before that commit, or a store that refuses it, leaves the file for the next look.
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>

#include "server_supervisor.hpp"
#include "store_writes.hpp"

namespace nbdxm::supervision {

class DurabilityFolder {
 public:
  using Clock = std::chrono::steady_clock;
  using Life = std::pair<int64_t, std::string>;  // export id, created_at
  static constexpr std::chrono::seconds kInterval{1};

  // `recorded` runs after a failure was written to the store (the export's status changed: look again).
  DurabilityFolder(std::string dir, StoreWrites& writes, std::function<void()> recorded);

  // Folds every file when due.
  void advance(Clock::time_point now);
  Clock::time_point next_deadline() const { return next_; }
  // The target's server is gone: its failures are recorded, then its file removed unless `keep_file` (the manager
  // is exiting and its export stays live: the next manager's server continues the file's counters).
  void retire(const ServerTarget& target, Clock::time_point now, bool keep_file = false);
  // Retires every file whose export life is not in `keep` (at start: files of servers no longer running).
  void retire_all_but(const std::set<Life>& keep, Clock::time_point now);

 private:
  void fold(const std::string& path, bool remove, Clock::time_point now);
  // The store's write for `path` is settled: committed (`stored`) with `failures`, or refused.
  void settle(const std::string& path, uint64_t failures, bool stored);

  std::string dir_;
  StoreWrites& writes_;
  std::function<void()> recorded_;
  std::map<std::string, uint64_t> folded_;    // by path: the failure count the store holds (committed)
  std::set<std::string> queued_;              // paths whose write waits in StoreWrites
  std::set<std::string> remove_when_stored_;  // retired paths to remove once their queued write is committed
  std::set<std::string> unreadable_logged_;   // an unreadable file is said once
  Clock::time_point next_{};
};

}  // namespace nbdxm::supervision
