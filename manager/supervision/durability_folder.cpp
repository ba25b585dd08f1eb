#include "durability_folder.hpp"

#include <filesystem>

#include "nbdxm/export_counters.hpp"
#include "serve_log.hpp"

namespace nbdxm::supervision {

using cli::log_event;

DurabilityFolder::DurabilityFolder(std::string dir, StoreWrites& writes, std::function<void()> recorded)
    : dir_(std::move(dir)), writes_(writes), recorded_(std::move(recorded)) {}

void DurabilityFolder::advance(Clock::time_point now) {
  if (now < next_) return;
  next_ = now + kInterval;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    if (entry.path().extension() == ".bin") fold(entry.path().string(), false, now);
  }
}

void DurabilityFolder::retire(const ServerTarget& target, Clock::time_point now, bool keep_file) {
  fold(ExportCounters::path(dir_, target.export_id, target.created_at), !keep_file, now);
}

void DurabilityFolder::retire_all_but(const std::set<Life>& keep, Clock::time_point now) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    if (entry.path().extension() != ".bin") continue;
    const std::string path = entry.path().string();
    try {
      const auto counters = ExportCounters::open_read_only(path);
      if (!counters) continue;
      const auto identity = counters->identity();
      if (keep.contains({identity.export_id, identity.created_at})) continue;
    } catch (const std::exception&) {
      // Not a counter file of this version: left for the operator (fold says so).
    }
    fold(path, true, now);
  }
}

void DurabilityFolder::fold(const std::string& path, bool remove, Clock::time_point now) {
  std::unique_ptr<ExportCounters> counters;
  try {
    counters = ExportCounters::open_read_only(path);
  } catch (const std::exception& e) {
    if (unreadable_logged_.insert(path).second) log_event("cannot read a server's counters: {}", e.what());
    return;
  }
  if (!counters) {
    folded_.erase(path);
    return;
  }
  const auto identity = counters->identity();
  const auto durability = counters->durability();
  counters.reset();
  if (queued_.contains(path)) {  // folded again once that write is settled
    if (remove) remove_when_stored_.insert(path);
    return;
  }
  const auto known = folded_.find(path);
  if (durability.failures <= (known == folded_.end() ? 0 : known->second)) {
    if (remove) {
      folded_.erase(path);
      std::error_code ec;
      std::filesystem::remove(path, ec);
    }
    return;
  }
  queued_.insert(path);
  if (remove) remove_when_stored_.insert(path);
  log_event("export id {}: {} (failed syncs: {}); marking the export failed", identity.export_id, durability.reason,
            durability.failures);
  writes_.add(
      identity.export_id, fmt::format("export id {}: recording its durability failure", identity.export_id),
      [identity, durability, recorded = recorded_](ExportStore& store) {
        if (store.record_durability_failure(identity.export_id, identity.created_at, durability.failures,
                                            durability.reason)) {
          recorded();
        }
      },
      now, [this, path, failures = durability.failures](bool stored) { settle(path, failures, stored); });
}

void DurabilityFolder::settle(const std::string& path, uint64_t failures, bool stored) {
  queued_.erase(path);
  // A refused write (the export is gone, say) would be refused again: the count is not handed over twice, and the
  // file stays for the operator and the next manager.
  folded_[path] = failures;
  const bool retired = remove_when_stored_.erase(path) > 0;
  if (stored && retired) {
    folded_.erase(path);
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
}

}  // namespace nbdxm::supervision
