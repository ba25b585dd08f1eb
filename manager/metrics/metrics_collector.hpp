#pragma once
// MetricsCollector: gathers one MetricsSnapshot for a scrape of /metrics, on the metrics server's thread. It never
// shares anything with the manager's loop that could make either wait: the store is read through a read-only
// connection of its own, opened for the scrape (WAL: readers never wait for writers, nor writers for them), the
// servers' counter files are mapped read-only, and the loop's own counts are atomics.
#include <memory>
#include <string>

#include "manager_counters.hpp"
#include "metrics_snapshot.hpp"

namespace nbdxm::metrics {

class MetricsCollector {
 public:
  // `counters_dir`: <run-dir>/counters, the servers' counter files and their refusal file.
  MetricsCollector(std::string db_path, std::string counters_dir,
                   std::shared_ptr<const supervision::ManagerCounters> manager, double start_time_seconds);

  // Never throws for an unreadable store (store_up false) or counter file (left out).
  MetricsSnapshot collect() const;

 private:
  void add_store(MetricsSnapshot& snapshot) const;

  std::string db_path_;
  std::string counters_dir_;
  std::shared_ptr<const supervision::ManagerCounters> manager_;
  double start_time_seconds_;
};

}  // namespace nbdxm::metrics
