#include "counter_folder.hpp"

#include <fmt/chrono.h>

#include <algorithm>
#include <cstdint>
#include <ctime>
#include <filesystem>

#include "serve_log.hpp"

namespace nbdxm::supervision {

using cli::log_event;

namespace {

std::string utc_text(int64_t unix_ms) {
  const std::time_t seconds = unix_ms / 1000;
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03}Z", utc, unix_ms % 1000);
}

int64_t as_int(uint64_t value) { return static_cast<int64_t>(std::min<uint64_t>(value, INT64_MAX)); }

}  // namespace

CounterFolder::CounterFolder(std::string dir, StoreWrites& writes, std::function<void()> recorded)
    : dir_(std::move(dir)), writes_(writes), recorded_(std::move(recorded)) {}

void CounterFolder::advance(Clock::time_point now) {
  if (now < next_) return;
  next_ = now + kInterval;
  std::set<std::string> present;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    if (entry.path().extension() == ".bin") present.insert(entry.path().string());
  }
  // A file removed by someone else is unmapped; a write of its that still waits settles without it.
  std::erase_if(files_, [&](const auto& entry) { return !present.contains(entry.first); });
  for (const auto& path : present) {
    if (File* file = mapped(path)) fold(path, *file, now);
  }
}

CounterFolder::File* CounterFolder::mapped(const std::string& path) {
  if (const auto found = files_.find(path); found != files_.end()) return &found->second;
  std::unique_ptr<ExportCounters> counters;
  try {
    counters = ExportCounters::open_read_only(path);
  } catch (const std::exception& e) {
    if (unreadable_logged_.insert(path).second) log_event("cannot read a server's counters: {}", e.what());
    return nullptr;
  }
  if (!counters) return nullptr;
  File& file = files_[path];
  file.identity = counters->identity();
  file.counters = std::move(counters);
  return &file;
}

void CounterFolder::retire(const ServerTarget& target, Clock::time_point now, bool keep_file) {
  const std::string path = ExportCounters::path(dir_, target.export_id, target.created_at);
  if (keep_file) {
    if (File* file = mapped(path)) fold(path, *file, now);
    return;
  }
  retire_path(path, now);
}

uint64_t CounterFolder::connections_open(const ServerTarget& target) {
  const File* file = mapped(ExportCounters::path(dir_, target.export_id, target.created_at));
  return file == nullptr ? 0 : file->counters->counts().connections_open;
}

void CounterFolder::retire_all_but(const std::set<Life>& keep, Clock::time_point now) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    if (entry.path().extension() != ".bin") continue;
    const std::string path = entry.path().string();
    const File* file = mapped(path);  // not a counter file of this version: left for the operator (said once)
    if (file != nullptr && !keep.contains({file->identity.export_id, file->identity.created_at})) {
      retire_path(path, now);
    }
  }
}

void CounterFolder::retire_path(const std::string& path, Clock::time_point now) {
  File* file = mapped(path);
  if (file == nullptr) return;
  fold(path, *file, now);
  file->remove_when_stored = true;
  remove_if_settled(path);
}

void CounterFolder::fold(const std::string& path, File& file, Clock::time_point now) {
  fold_durability(path, file, now);
  fold_counters(path, file, now);
}

void CounterFolder::fold_durability(const std::string& path, File& file, Clock::time_point now) {
  const auto durability = file.counters->durability();
  if (file.failure_queued || durability.failures <= file.failures_stored) return;  // folded again once settled
  file.failure_queued = true;
  const auto& identity = file.identity;
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
      now,
      [this, path, failures = durability.failures](bool stored) {
        const auto found = files_.find(path);
        if (found == files_.end()) return;
        // A refused write (the export is gone, say) would be refused again: the count is not handed over twice,
        // and the file stays for the operator and the next manager.
        found->second.failure_queued = false;
        found->second.failures_stored = failures;
        if (!stored) found->second.failure_refused = true;
        remove_if_settled(path);
      });
}

ExportCounterRecord CounterFolder::record_of(File& file, Clock::time_point now) {
  using Request = ExportCounters::Request;
  const auto s = file.counters->counts();
  const uint64_t written = s.of(Request::write).bytes + s.of(Request::zero).bytes;
  if (file.coverage_of != written) {  // coverage changes only with a write or a zero
    file.coverage_bytes = file.counters->coverage_bytes();
    file.coverage_of = written;
  }
  while (!file.samples.empty() && file.samples.front().at < now - kRateWindow) file.samples.pop_front();
  file.samples.push_back({now, written});
  const Sample& oldest = file.samples.front();
  const double seconds = std::chrono::duration<double>(now - oldest.at).count();

  ExportCounterRecord r;
  r.export_id = file.identity.export_id;
  r.served_created_at = file.identity.created_at;
  r.bytes_written = as_int(s.of(Request::write).bytes);
  r.bytes_zeroed = as_int(s.of(Request::zero).bytes);
  r.bytes_trimmed = as_int(s.of(Request::trim).bytes);
  r.bytes_read = as_int(s.of(Request::read).bytes);
  for (int k = 0; k < ExportCounterRecord::kKinds; ++k) {
    r.requests[k] = as_int(s.requests[k].requests);
    r.failed[k] = as_int(s.requests[k].failed);
  }
  r.connections_open = as_int(s.connections_open);
  r.connections_total = as_int(s.connections_total);
  r.refused_not_active = as_int(s.refused[static_cast<int>(ExportCounters::Refusal::not_active)]);
  r.refused_device = as_int(s.refused[static_cast<int>(ExportCounters::Refusal::device)]);
  if (s.last_write_unix_ms) r.last_write_at = utc_text(*s.last_write_unix_ms);
  r.coverage_bytes = as_int(file.coverage_bytes);
  r.volume_size = s.identity.volume_size;
  r.write_rate_bytes_per_second = seconds > 0 && written > oldest.bytes
                                      ? static_cast<int64_t>(static_cast<double>(written - oldest.bytes) / seconds)
                                      : 0;
  return r;
}

void CounterFolder::fold_counters(const std::string& path, File& file, Clock::time_point now) {
  const ExportCounterRecord record = record_of(file, now);
  if (file.counters_queued) {  // one write per export waits: it takes the newest numbers
    *file.counters_queued = record;
    return;
  }
  if (file.counters_stored && file.counters_stored->same_numbers(record)) return;
  auto queued = std::make_shared<ExportCounterRecord>(record);
  file.counters_queued = queued;
  // Export id 0: the counters are no part of the export's state that the reconciler waits on (waiting_for).
  writes_.add(
      0, fmt::format("export id {}: recording its counters", record.export_id),
      [queued](ExportStore& store) { store.record_export_counters(*queued); }, now,
      [this, path, queued](bool) {
        const auto found = files_.find(path);
        if (found == files_.end()) return;
        // Refused or not, the same numbers are not written again: the next change is.
        found->second.counters_queued.reset();
        found->second.counters_stored = *queued;
        remove_if_settled(path);
      });
}

void CounterFolder::remove_if_settled(const std::string& path) {
  const auto found = files_.find(path);
  if (found == files_.end()) return;
  const File& file = found->second;
  if (!file.remove_when_stored || file.failure_queued || file.counters_queued || file.failure_refused) return;
  std::error_code ec;
  std::filesystem::remove(path, ec);
  files_.erase(found);
}

}  // namespace nbdxm::supervision
