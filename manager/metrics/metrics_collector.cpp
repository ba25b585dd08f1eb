#include "metrics_collector.hpp"

#include <filesystem>
#include <map>
#include <utility>

#include "nbdxm/database.hpp"
#include "nbdxm/export_store.hpp"

namespace nbdxm::metrics {
namespace {

using Life = std::pair<int64_t, std::string>;  // export id, created_at

// Every counter file's snapshot by its export life; an unreadable file is left out (the manager's log says why).
std::map<Life, ExportCounters::Snapshot> counter_files(const std::string& dir) {
  std::map<Life, ExportCounters::Snapshot> files;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() != ".bin") continue;
    try {
      if (const auto counters = ExportCounters::open_read_only(entry.path().string())) {
        auto s = counters->snapshot();
        files.emplace(Life{s.identity.export_id, s.identity.created_at}, std::move(s));
      }
    } catch (const std::exception&) {
      // Not a counter file of this version: not shown.
    }
  }
  return files;
}

}  // namespace

MetricsCollector::MetricsCollector(std::string db_path, std::string counters_dir,
                                   std::shared_ptr<const supervision::ManagerCounters> manager,
                                   double start_time_seconds)
    : db_path_(std::move(db_path)),
      counters_dir_(std::move(counters_dir)),
      manager_(std::move(manager)),
      start_time_seconds_(start_time_seconds) {}

MetricsSnapshot MetricsCollector::collect() const {
  MetricsSnapshot snapshot;
  try {
    add_store(snapshot);
    snapshot.store_up = true;
  } catch (const std::exception&) {
    snapshot.exports.clear();
    snapshot.exports_by_status.clear();
  }
  try {
    if (const auto refusals = RefusalCounters::open_read_only(RefusalCounters::path(counters_dir_))) {
      snapshot.refusals = refusals->counts();
    }
  } catch (const std::exception&) {
    // Not a refusal file of this version: shown as none.
  }
  snapshot.manager.server_restarts = manager_->server_restarts.load(std::memory_order_relaxed);
  snapshot.manager.servers_given_up = manager_->servers_given_up.load(std::memory_order_relaxed);
  snapshot.manager.store_reads_failed = manager_->store_reads_failed.load(std::memory_order_relaxed);
  snapshot.manager.store_writes_refused = manager_->store_writes_refused.load(std::memory_order_relaxed);
  snapshot.manager.start_time_seconds = start_time_seconds_;
  return snapshot;
}

void MetricsCollector::add_store(MetricsSnapshot& snapshot) const {
  Database db = Database::open(db_path_, Database::Access::read_only);
  ExportStore store(db);
  const auto rows = store.list_exports();
  snapshot.open_durability_failures = static_cast<int64_t>(store.durability_failures(/*open_only=*/true).size());
  auto files = counter_files(counters_dir_);
  for (const auto& row : rows) {
    ++snapshot.exports_by_status[row.status];
    // Only the file of the export's current life: a re-created export's old file (retired shortly) would give a
    // second series of the same labels.
    const auto file = files.find({row.id, row.created_at});
    if (row.status == "revoked" && file == files.end()) continue;
    MetricsSnapshot::Export e{row.export_name, row.job_id,     row.disk_id, row.volume_uuid,
                              row.status,      row.durability, std::nullopt};
    if (file != files.end()) e.counters = std::move(file->second);
    snapshot.exports.push_back(std::move(e));
  }
}

}  // namespace nbdxm::metrics
