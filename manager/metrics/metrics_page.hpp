#pragma once
// MetricsPage: a MetricsSnapshot as Prometheus text exposition format (version 0.0.4), the page `GET /metrics`
// returns. Names follow Prometheus's rules (nbdxm_ prefix, base units bytes and seconds, counters end in _total);
// per-export series carry the labels export, job, disk and volume. `promtool check metrics` passes on its output.
#include <string>

#include "metrics_snapshot.hpp"

namespace nbdxm::metrics {

class MetricsPage {
 public:
  static std::string render(const MetricsSnapshot& snapshot);
};

}  // namespace nbdxm::metrics
