#pragma once
// MetricsSnapshot: everything one scrape of /metrics shows, gathered at once (MetricsCollector) and then rendered
// (MetricsPage) without touching the store, the counter files or the manager again.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "nbdxm/export_counters.hpp"
#include "nbdxm/refusal_counters.hpp"

namespace nbdxm::metrics {

struct MetricsSnapshot {
  // An export the store holds that is not revoked, or that still has a counter file of its current life.
  struct Export {
    std::string name;  // label `export`
    std::string job;
    std::string disk;
    std::string volume;
    std::string status;
    std::string durability;
    std::optional<ExportCounters::Snapshot> counters;  // none before its first connect (no counter file yet)
  };
  struct Manager {
    uint64_t server_restarts = 0;
    uint64_t servers_given_up = 0;
    uint64_t store_reads_failed = 0;
    uint64_t store_writes_refused = 0;
    double start_time_seconds = 0;  // Unix time
  };

  bool store_up = false;  // the store could be read for this scrape (else no export and no store counts)
  std::vector<Export> exports;
  std::map<std::string, int64_t> exports_by_status;  // every row of nbd_exports, revoked ones too
  int64_t open_durability_failures = 0;              // not yet acknowledged (`nbdxm check` exits 5 while any)
  std::optional<RefusalCounters::Counts> refusals;   // none before a server's first start
  Manager manager;
};

}  // namespace nbdxm::metrics
