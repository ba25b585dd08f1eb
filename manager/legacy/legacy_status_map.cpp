#include "legacy_status_map.hpp"

#include <algorithm>
#include <array>
#include <cctype>

namespace nbdxm::legacy {
namespace {

constexpr std::array kJobStatuses{
    StatusMapping{"pending", "pending"},
    StatusMapping{"queued", "pending"},
    StatusMapping{"created", "pending"},
    StatusMapping{"initializing", "pending"},
    StatusMapping{"waiting", "pending"},
    StatusMapping{"replicating", "replicating"},
    StatusMapping{"running", "replicating"},
    StatusMapping{"in_progress", "replicating"},
    StatusMapping{"copying", "replicating"},
    StatusMapping{"syncing", "replicating"},
    StatusMapping{"provisioning", "replicating"},
    StatusMapping{"snapshotting", "replicating"},
    StatusMapping{"started", "replicating"},
    StatusMapping{"completed", "completed"},
    StatusMapping{"complete", "completed"},
    StatusMapping{"succeeded", "completed"},
    StatusMapping{"success", "completed"},
    StatusMapping{"done", "completed"},
    StatusMapping{"finished", "completed"},
    StatusMapping{"failed", "failed"},
    StatusMapping{"error", "failed"},
    StatusMapping{"errored", "failed"},
    StatusMapping{"cancelled", "cancelled"},
    StatusMapping{"canceled", "cancelled"},
    StatusMapping{"aborted", "cancelled"},
    StatusMapping{"stopped", "cancelled"},
};

constexpr std::array kSyncStatuses{
    StatusMapping{"pending", "pending"},     StatusMapping{"queued", "pending"},
    StatusMapping{"syncing", "syncing"},     StatusMapping{"replicating", "syncing"},
    StatusMapping{"running", "syncing"},     StatusMapping{"in_progress", "syncing"},
    StatusMapping{"copying", "syncing"},     StatusMapping{"completed", "completed"},
    StatusMapping{"complete", "completed"},  StatusMapping{"succeeded", "completed"},
    StatusMapping{"synced", "completed"},    StatusMapping{"done", "completed"},
    StatusMapping{"failed", "failed"},       StatusMapping{"error", "failed"},
    StatusMapping{"cancelled", "cancelled"}, StatusMapping{"canceled", "cancelled"},
    StatusMapping{"aborted", "cancelled"},
};

std::string normalized(std::string_view status) {
  const auto first = status.find_first_not_of(" \t");
  const auto last = status.find_last_not_of(" \t");
  std::string result(first == std::string_view::npos ? "" : status.substr(first, last - first + 1));
  std::transform(result.begin(), result.end(), result.begin(), [](unsigned char c) { return std::tolower(c); });
  return result;
}

}  // namespace

std::span<const StatusMapping> LegacyStatusMap::job_statuses() { return kJobStatuses; }
std::span<const StatusMapping> LegacyStatusMap::sync_statuses() { return kSyncStatuses; }

std::optional<std::string> LegacyStatusMap::map(std::span<const StatusMapping> table, std::string_view status) {
  const std::string key = normalized(status);
  for (const auto& entry : table) {
    if (entry.from == key) return std::string(entry.to);
  }
  return std::nullopt;
}

}  // namespace nbdxm::legacy
