#pragma once
// The documented tables that map the previous generation's free-text statuses onto the store's sets (README,
// "Adopting nbdxm on an existing appliance", and nbdxm(8) show the same tables). A status is matched after trimming
// and lower-casing; one not in its table has no mapping and its row is rejected.
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace nbdxm::legacy {

struct StatusMapping {
  std::string_view from;
  std::string_view to;
};

class LegacyStatusMap {
 public:
  static std::span<const StatusMapping> job_statuses();   // replication_jobs.status -> replication_jobs.status
  static std::span<const StatusMapping> sync_statuses();  // vm_disks.sync_status -> vm_disks.sync_status
  static std::optional<std::string> map(std::span<const StatusMapping> table, std::string_view status);
};

}  // namespace nbdxm::legacy
