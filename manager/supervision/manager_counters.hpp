#pragma once
// ManagerCounters: what the manager's loop counts about itself since it started, for /metrics (manager/metrics/).
// The loop adds; the metrics thread reads at any time: relaxed atomics, no lock, so a scrape never waits for the
// loop nor the loop for a scrape. Shared ownership: the metrics server may outlive the reconciler by a moment.
#include <atomic>
#include <cstdint>

namespace nbdxm::supervision {

struct ManagerCounters {
  std::atomic<uint64_t> server_restarts{0};       // a server exited unexpectedly and was started again
  std::atomic<uint64_t> servers_given_up{0};      // a server kept failing: its export was marked failed
  std::atomic<uint64_t> store_reads_failed{0};    // a look at the store that failed (retried kStoreRetry later)
  std::atomic<uint64_t> store_writes_refused{0};  // a write of the manager the store refused (logged, dropped)
};

}  // namespace nbdxm::supervision
