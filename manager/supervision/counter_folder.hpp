#pragma once
// CounterFolder: the manager's one reader of the servers' counter files (nbdxm/export_counters.hpp). Every kInterval
// (and at once at start, so that nothing recorded while no manager ran is lost) it folds each file in
// <run-dir>/counters into the store through StoreWrites (one transaction per step of the loop, for every export):
// - durability failures not yet recorded (ExportStore::record_durability_failure, which also fails the export while
//   it is live; idempotent, so a new manager simply reports every file again);
// - the counters, when a number changed (ExportStore::record_export_counters: the export_counters row and the
//   progress of its vm_disk), with the write rate over the last kRateWindow from the samples kept here. While a write
//   of an export's counters waits for a locked store, newer numbers replace its content: one write per export waits.
// A file stays mapped while it exists (a map per file per second would cost 1,000 mmap/munmap pairs a second at
// 1,000 exports); the bitmap is scanned for the coverage only when the bytes written or zeroed changed. A file is
// removed only once its export's server is stopped and what it holds is in the store, that is after the commit that
// holds it (retire): a manager killed before that commit, or a store that refuses a durability failure, leaves the
// file for the next look.
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>

#include "nbdxm/export_counters.hpp"
#include "nbdxm/records.hpp"
#include "server_supervisor.hpp"
#include "store_writes.hpp"

namespace nbdxm::supervision {

class CounterFolder {
 public:
  using Clock = std::chrono::steady_clock;
  using Life = std::pair<int64_t, std::string>;  // export id, created_at
  static constexpr std::chrono::seconds kInterval{1};
  static constexpr std::chrono::seconds kRateWindow{10};

  // `recorded` runs after a durability failure was written to the store (the export's status changed: look again).
  CounterFolder(std::string dir, StoreWrites& writes, std::function<void()> recorded);

  // Folds every file when due.
  void advance(Clock::time_point now);
  Clock::time_point next_deadline() const { return next_; }
  // The target's server is gone: its file is folded once more, then removed unless `keep_file` (the manager is
  // exiting and its export stays live: the next manager's server continues the file's counters).
  void retire(const ServerTarget& target, Clock::time_point now, bool keep_file = false);
  // The connections of the target's life open now, as its server counts them (0 without a file).
  uint64_t connections_open(const ServerTarget& target);
  // Retires every file whose export life is not in `keep` (at start: files of servers no longer running).
  void retire_all_but(const std::set<Life>& keep, Clock::time_point now);

 private:
  struct Sample {
    Clock::time_point at;
    uint64_t bytes;  // written and zeroed
  };
  struct File {
    std::unique_ptr<ExportCounters> counters;  // mapped while the file exists
    ExportCounters::Identity identity;
    uint64_t failures_stored = 0;  // the durability failure count the store holds (or refused)
    bool failure_queued = false;
    bool failure_refused = false;                          // kept for the operator and the next manager
    std::shared_ptr<ExportCounterRecord> counters_queued;  // the write waiting in StoreWrites, if any
    std::optional<ExportCounterRecord> counters_stored;    // what the store holds
    uint64_t coverage_bytes = 0;
    std::optional<uint64_t> coverage_of;  // the bytes written and zeroed when coverage_bytes was counted
    std::deque<Sample> samples;           // the last kRateWindow
    bool remove_when_stored = false;
  };

  File* mapped(const std::string& path);  // nullptr when there is no such file or it cannot be read (said once)
  void fold(const std::string& path, File& file, Clock::time_point now);
  void fold_durability(const std::string& path, File& file, Clock::time_point now);
  void fold_counters(const std::string& path, File& file, Clock::time_point now);
  ExportCounterRecord record_of(File& file, Clock::time_point now);
  void retire_path(const std::string& path, Clock::time_point now);
  void remove_if_settled(const std::string& path);

  std::string dir_;
  StoreWrites& writes_;
  std::function<void()> recorded_;
  std::map<std::string, File> files_;        // by path
  std::set<std::string> unreadable_logged_;  // an unreadable file is said once
  Clock::time_point next_{};
};

}  // namespace nbdxm::supervision
