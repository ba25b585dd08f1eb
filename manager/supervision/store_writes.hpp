#pragma once
// StoreWrites: the manager's writes to the store (servers started and gone, exports failed), made so that another
// process holding the store's write lock never stalls the manager's loop and never loses a write. Writes wait here,
// in order, until retry() makes every due one in one transaction: one commit, and one sync of the store, for all the
// events of a step of the loop (a restart under `direct` starts 1,000 servers at once; each commit costs a sync of
// the -wal file, about 5 ms here). The manager's connection waits at most Reconciler::kStoreWait for the lock;
// writes that still find the store locked are tried again every kRetryInterval until the store takes them. A write
// the store refuses for another reason (the export is gone, say) is logged and dropped, the others kept: trying it
// again would change nothing. An error after which SQLite has undone the whole transaction (the disk is full, say)
// refuses no single write: the batch waits and is tried again, as for a locked store.
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>

#include "nbdxm/export_store.hpp"

namespace nbdxm::supervision {

class StoreWrites {
 public:
  using Clock = std::chrono::steady_clock;
  using Write = std::function<void(ExportStore&)>;
  // Runs once the write is settled: `stored` true after the commit that holds it, false when the store refused it
  // (what depends on the write being on disk, such as removing the file it came from, waits for this).
  using Settled = std::function<void(bool stored)>;
  static constexpr std::chrono::milliseconds kRetryInterval{200};

  explicit StoreWrites(ExportStore& store) : store_(store) {}

  // Queues the write, due at once unless earlier writes wait for a locked store: then it waits behind them. `what`
  // names it in the log ("export NAME: recording ...").
  void add(int64_t export_id, std::string what, Write write, Clock::time_point now, Settled settled = {});
  // Makes the waiting writes in order, in one transaction, once they are due; all wait on when the store is locked.
  void retry(Clock::time_point now);
  // Tries every waiting write now, due or not (the manager is exiting).
  void flush();
  bool waiting() const { return !queue_.empty(); }
  bool waiting_for(int64_t export_id) const;     // a write about this export waits
  Clock::time_point next_deadline() const;       // Clock::time_point::max() when none waits
  uint64_t refused() const { return refused_; }  // writes the store refused so far (/metrics)

 private:
  struct Pending {
    int64_t export_id;
    std::string what;
    Write write;
    Settled settled;
    bool logged = false;       // "will retry" is said once per write
    bool refused = false;      // the store refused it (logged); the others of its batch are kept
    std::string refusal = {};  // why, when refused
  };
  void attempt(Pending& pending);  // marks (and logs) a refusal; throws StoreBusy when the store is locked
  void settle_all();               // the queue is done with: each write's `settled`, then the queue cleared
  void wait(Clock::time_point now, const std::string& why);  // tries again later; says so once per write

  ExportStore& store_;
  std::deque<Pending> queue_;
  Clock::time_point next_try_{};
  uint64_t refused_ = 0;
};

}  // namespace nbdxm::supervision
