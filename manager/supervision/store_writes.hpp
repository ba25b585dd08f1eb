#pragma once
// StoreWrites: the manager's writes to the store (servers started and gone, exports failed), made so that another
// process holding the store's write lock never stalls the manager's loop and never loses a write. The manager's
// connection waits at most Reconciler::kStoreWait for a lock; a write that still finds the store locked waits here,
// in order, and is tried again every kRetryInterval until the store takes it. A write the store refuses for another
// reason (the export is gone, say) is logged and dropped: trying it again would change nothing.
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
  static constexpr std::chrono::milliseconds kRetryInterval{200};

  explicit StoreWrites(ExportStore& store) : store_(store) {}

  // Makes the write now, unless earlier writes still wait: then it waits behind them. `what` names it in the log
  // ("export NAME: recording ...").
  void add(int64_t export_id, std::string what, Write write, Clock::time_point now);
  // Tries the waiting writes in order, once they are due, until one finds the store still locked.
  void retry(Clock::time_point now);
  // Tries every waiting write now, due or not (the manager is exiting).
  void flush();
  bool waiting() const { return !queue_.empty(); }
  bool waiting_for(int64_t export_id) const;  // a write about this export waits
  Clock::time_point next_deadline() const;    // Clock::time_point::max() when none waits

 private:
  struct Pending {
    int64_t export_id;
    std::string what;
    Write write;
    bool logged = false;  // "will retry" is said once per write
  };
  bool attempt(Pending& pending);                        // false: the store is still locked
  bool waits(Pending& pending, const std::string& why);  // says so once; false

  ExportStore& store_;
  std::deque<Pending> queue_;
  Clock::time_point next_try_{};
};

}  // namespace nbdxm::supervision
