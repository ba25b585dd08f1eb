#include "legacy_importer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "legacy_status_map.hpp"
#include "nbdxm/store_values.hpp"

namespace nbdxm::legacy {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;
constexpr std::string_view kExportVolumePrefix = "migration-vol-";
const std::array<std::string, 5> kTables{"replication_jobs", "device_mappings", "vm_disks", "nbd_exports",
                                         "volume_operations"};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string shown(const std::optional<std::string>& value) { return value ? fmt::format("{:?}", *value) : "NULL"; }

// One source row's outcome as it is being decided: repairs accumulate; the first rejection is final.
class Decision {
 public:
  Decision(std::string table, std::string source_id)
      : row_{std::move(table), std::move(source_id), Outcome::imported, "", ""} {}

  void repair(std::string_view rule, std::string_view field, std::string_view from, std::string_view to,
              std::string_view why) {
    if (rejected()) return;
    row_.outcome = Outcome::repaired;
    if (row_.rule.find(rule) == std::string::npos) row_.rule += (row_.rule.empty() ? "" : ",") + std::string(rule);
    row_.detail += fmt::format("{}{}: {} -> {} ({})", row_.detail.empty() ? "" : "; ", field, from, to, why);
  }
  void reject(std::string_view rule, std::string detail) {
    if (rejected()) return;
    row_.outcome = Outcome::rejected;
    row_.rule = rule;
    row_.detail = std::move(detail);
  }
  bool rejected() const { return row_.outcome == Outcome::rejected; }
  const RowOutcome& row() const { return row_; }
  std::string why() const { return fmt::format("{}: {}", row_.rule, row_.detail); }

 private:
  RowOutcome row_;
};

// Which fields of a store row differ from the row the import would write ("" when none).
class Differences {
 public:
  template <class T>
  Differences& field(std::string_view name, const T& in_store, const T& from_source) {
    if (!(in_store == from_source)) {
      text_ += fmt::format("{}{} {} (source: {})", text_.empty() ? "" : ", ", name, show(in_store), show(from_source));
    }
    return *this;
  }
  std::string text() const { return text_; }

 private:
  template <class T>
  static std::string show(const T& v) {
    if constexpr (std::is_same_v<T, std::optional<std::string>>) {
      return shown(v);
    } else if constexpr (std::is_same_v<T, std::optional<int64_t>>) {
      return v ? std::to_string(*v) : "NULL";
    } else {
      return fmt::format("{}", v);
    }
  }
  std::string text_;
};

// The store's rows, keyed the way the import looks them up.
struct StoreRows {
  std::map<std::string, Job> jobs;
  std::map<std::string, DeviceMapping> mappings;          // by volume UUID
  std::map<std::string, std::string> mapping_uuid_by_id;  // mapping id -> volume UUID
  std::map<std::string, std::string> oma_paths;           // 'oma' device path -> volume UUID
  std::map<std::pair<std::string, std::string>, VmDisk> disks;
  std::map<std::string, std::pair<std::string, std::string>> disk_by_volume;
  std::map<std::string, NbdExport> exports;
  std::map<std::string, VolumeOperation> operations;

  explicit StoreRows(ExportStore& store) {
    for (auto& j : store.list_jobs()) jobs.emplace(j.id, std::move(j));
    for (auto& m : store.list_mappings()) {
      mapping_uuid_by_id.emplace(m.id, m.volume_uuid);
      if (m.operation_mode == "oma") oma_paths.emplace(m.device_path, m.volume_uuid);
      mappings.emplace(m.volume_uuid, std::move(m));
    }
    for (auto& d : store.list_disks()) {
      if (d.cloudstack_volume_uuid) disk_by_volume.emplace(*d.cloudstack_volume_uuid, std::pair{d.job_id, d.disk_id});
      disks.emplace(std::pair{d.job_id, d.disk_id}, std::move(d));
    }
    for (auto& e : store.list_exports()) exports.emplace(e.export_name, std::move(e));
    for (auto& o : store.list_volume_operations()) operations.emplace(o.id, std::move(o));
  }
};

// A source disk as the import decided it, for the exports that refer to it.
struct PlannedDisk {
  Decision decision;
  VmDisk disk;
  std::optional<std::string> volume;  // the volume its ossea_volume_id resolves to, linked or not
  bool present = false;
};

class Planner {
 public:
  Planner(const LegacyRows& rows, ExportStore& store) : rows_(rows), store_(store) {
    for (const auto& table : kTables) plan_.report.tables.push_back(TableCounts{table, 0, 0, 0, 0, 0});
  }

  ImportPlan run() {
    plan_jobs();
    plan_mappings();
    plan_disks();
    plan_exports();
    plan_operations();
    return std::move(plan_);
  }

 private:
  // Records the outcome; returns whether the row is to be written.
  bool finish(const Decision& d, bool present) {
    plan_.report.add(d.row(), present && !d.rejected());
    return !d.rejected() && !present;
  }

  // A status through its documented table; "" after a rejection.
  static std::string map_status(Decision& d, std::string_view field, const std::optional<std::string>& raw,
                                std::span<const StatusMapping> table, std::string_view unknown_rule) {
    if (!raw) {
      d.repair("status_mapped", field, "NULL", "pending", "NULL has no meaning; the store's default");
      return "pending";
    }
    auto mapped = LegacyStatusMap::map(table, *raw);
    if (!mapped) {
      d.reject(unknown_rule,
               fmt::format("{} {:?} is not in the status table (see nbdxm(8), STATUS MAPPING)", field, *raw));
      return "";
    }
    if (*mapped != *raw) d.repair("status_mapped", field, fmt::format("{:?}", *raw), *mapped, "status table");
    return *mapped;
  }

  // A UUID as the store keeps it (lower-case), repairing case; nullopt and a rejection when it is no UUID.
  static std::optional<std::string> canonical_uuid(Decision& d, std::string_view field, const std::string& raw,
                                                   std::string_view what) {
    std::string uuid = lower(raw);
    if (!values::is_canonical_uuid(uuid)) {
      d.reject("volume_uuid_malformed", fmt::format("{} {:?} is not a UUID", what, raw));
      return std::nullopt;
    }
    if (uuid != raw) d.repair("uuid_lowercased", field, raw, uuid, "the store keeps canonical lower-case UUIDs");
    return uuid;
  }

  void plan_jobs() {
    for (const auto& src : rows_.jobs) {
      Decision d("replication_jobs", src.id);
      Job job{
          src.id, src.source_vm_id, src.source_vm_name, "", src.created_at.value_or(""), src.updated_at.value_or("")};
      if (!values::is_job_id(src.id)) {
        d.reject("job_id_format", fmt::format("the job id must be 1 to {} characters", values::kMaxNameLength));
      } else if (src.source_vm_id.empty() || src.source_vm_name.empty()) {
        d.reject("job_vm_missing", "source_vm_id and source_vm_name must not be empty");
      } else {
        job.status = map_status(d, "status", src.status, LegacyStatusMap::job_statuses(), "job_status_unknown");
      }
      bool present = false;
      if (auto it = store_.jobs.find(src.id); !d.rejected() && it != store_.jobs.end()) {
        const std::string diff = Differences()
                                     .field("source_vm_id", it->second.source_vm_id, job.source_vm_id)
                                     .field("source_vm_name", it->second.source_vm_name, job.source_vm_name)
                                     .field("status", it->second.status, job.status)
                                     .text();
        if (diff.empty()) {
          present = true;
        } else {
          d.reject("store_conflict",
                   fmt::format("the store already has job {} with {}; the store's row is kept", src.id, diff));
        }
      }
      if (d.rejected()) job_rejections_.emplace(src.id, d.why());
      if (finish(d, present)) plan_.records.jobs.push_back(std::move(job));
    }
  }

  void check_mapping(Decision& d, const LegacyMapping& src, DeviceMapping& m) {
    if (src.id.empty() || src.id.size() > values::kMaxMappingFieldLength) {
      return d.reject("mapping_id_format", "the mapping id must be 1 to 64 characters");
    }
    if (auto uuid = canonical_uuid(d, "volume_uuid", src.volume_uuid, "volume_uuid")) m.volume_uuid = *uuid;
    if (!values::is_mapping_vm_id(src.vm_id)) {
      d.reject("mapping_vm_id_format", fmt::format("vm_id must be 1 to {} characters", values::kMaxMappingFieldLength));
    }
    if (!src.operation_mode) {
      d.repair("operation_mode_default", "operation_mode", "NULL", "oma", "the column's default");
    } else if (*src.operation_mode != "oma" && *src.operation_mode != "failover") {
      d.reject("operation_mode_invalid",
               fmt::format("operation_mode {:?} is neither oma nor failover", *src.operation_mode));
    }
    if (!values::is_device_path_length(src.device_path) ||
        (m.operation_mode == "oma" && !values::is_normalized_absolute_path(src.device_path))) {
      d.reject("device_path_invalid",
               fmt::format("device_path {:?} is not a normalized absolute device path", src.device_path));
    }
    if (!values::is_mapping_size(src.size)) {
      d.reject("mapping_size_invalid", fmt::format("size {} bytes is not between 1 byte and 1 PiB", src.size));
    }
    if (!src.volume_id_numeric) {
      d.repair("volume_id_default", "volume_id_numeric", "NULL", "0", "the store needs a number; 0 means unknown");
    } else if (*src.volume_id_numeric < 0) {
      d.reject("volume_id_invalid", fmt::format("volume_id_numeric {} is negative", *src.volume_id_numeric));
    }
  }

  // Several 'oma' mappings of one device path: the most recently synced one is kept (device letters are reused
  // after a detach, so the latest observation of a path is the one that can still be true).
  void reject_shared_oma_paths(std::vector<Decision>& decisions, const std::vector<DeviceMapping>& planned,
                               const std::vector<LegacyMapping>& sources) {
    std::map<std::string, size_t> keeper;
    auto later = [&](size_t a, size_t b) {
      const auto& x = sources[a];
      const auto& y = sources[b];
      return std::tie(x.last_sync, x.created_at, x.id) > std::tie(y.last_sync, y.created_at, y.id);
    };
    for (size_t i = 0; i < planned.size(); ++i) {
      if (decisions[i].rejected() || planned[i].operation_mode != "oma") continue;
      auto [it, added] = keeper.emplace(planned[i].device_path, i);
      if (!added && later(i, it->second)) it->second = i;
    }
    for (size_t i = 0; i < planned.size(); ++i) {
      if (decisions[i].rejected() || planned[i].operation_mode != "oma") continue;
      const size_t k = keeper.at(planned[i].device_path);
      if (k != i) {
        decisions[i].reject("duplicate_oma_device_path",
                            fmt::format("device path {} is also the oma path of volume {} (mapping {}, synced later); "
                                        "an 'oma' device path maps one volume",
                                        planned[i].device_path, planned[k].volume_uuid, sources[k].id));
      }
    }
  }

  bool mapping_present(Decision& d, const DeviceMapping& m) {
    if (auto it = store_.mappings.find(m.volume_uuid); it != store_.mappings.end()) {
      const auto& s = it->second;
      const auto diff = Differences()
                            .field("id", s.id, m.id)
                            .field("volume_id", s.volume_id, m.volume_id)
                            .field("vm_id", s.vm_id, m.vm_id)
                            .field("device_path", s.device_path, m.device_path)
                            .field("operation_mode", s.operation_mode, m.operation_mode)
                            .field("size", s.size, m.size)
                            .text();
      if (diff.empty()) return true;
      d.reject("store_conflict", fmt::format("the store already has a mapping of volume {} with {}; the store's row "
                                             "is kept",
                                             m.volume_uuid, diff));
      return false;
    }
    if (auto it = store_.mapping_uuid_by_id.find(m.id); it != store_.mapping_uuid_by_id.end()) {
      d.reject("store_conflict",
               fmt::format("the store's mapping {} is of volume {}; the store's row is kept", m.id, it->second));
    } else if (auto path = store_.oma_paths.find(m.device_path);
               m.operation_mode == "oma" && path != store_.oma_paths.end()) {
      d.reject("store_conflict", fmt::format("device path {} is the oma path of volume {} in the store; an 'oma' "
                                             "device path maps one volume",
                                             m.device_path, path->second));
    }
    return false;
  }

  void plan_mappings() {
    const auto& sources = rows_.mappings;
    std::vector<Decision> decisions;
    std::vector<DeviceMapping> planned(sources.size());
    std::set<std::string> uuids;
    for (size_t i = 0; i < sources.size(); ++i) {
      const auto& src = sources[i];
      decisions.emplace_back("device_mappings", src.id);
      DeviceMapping& m = planned[i];
      m = DeviceMapping{src.id,
                        "",
                        src.volume_id_numeric.value_or(0),
                        src.vm_id,
                        src.device_path,
                        src.operation_mode.value_or("oma"),
                        src.cloudstack_device_id,
                        src.requires_device_correlation.value_or(true),
                        src.cloudstack_state,
                        src.linux_state,
                        src.size,
                        src.last_sync.value_or(""),
                        src.created_at.value_or(""),
                        src.updated_at.value_or("")};
      check_mapping(decisions[i], src, m);
      if (!m.volume_uuid.empty() && !uuids.insert(m.volume_uuid).second) {
        decisions[i].reject("duplicate_volume_uuid",
                            fmt::format("volume {} has an earlier mapping; a volume has one mapping", m.volume_uuid));
      }
    }
    reject_shared_oma_paths(decisions, planned, sources);
    for (size_t i = 0; i < sources.size(); ++i) {
      Decision& d = decisions[i];
      const bool present = !d.rejected() && mapping_present(d, planned[i]);
      if (d.rejected()) {
        if (!planned[i].volume_uuid.empty()) mapping_rejections_.emplace(planned[i].volume_uuid, d.why());
      } else {
        mappings_.emplace(planned[i].volume_uuid, planned[i]);
      }
      if (finish(d, present)) plan_.records.mappings.push_back(planned[i]);
    }
  }

  // The mapping a disk or export of `uuid` can refer to: the import's, else the store's own.
  const DeviceMapping* mapping_of(const std::string& uuid) const {
    if (auto it = mappings_.find(uuid); it != mappings_.end()) return &it->second;
    if (mapping_rejections_.contains(uuid)) return nullptr;
    if (auto it = store_.mappings.find(uuid); it != store_.mappings.end()) return &it->second;
    return nullptr;
  }

  void check_disk_values(Decision& d, const LegacyDisk& src, VmDisk& disk) {
    if (!src.job_id) return d.reject("disk_job_missing", "it has no job (job_id is NULL)");
    if (auto it = job_rejections_.find(*src.job_id); it != job_rejections_.end()) {
      return d.reject("disk_job_rejected", fmt::format("its job {} was rejected ({})", *src.job_id, it->second));
    }
    if (!job_ids_.contains(*src.job_id)) {
      return d.reject("disk_job_missing", fmt::format("its job {} does not exist in replication_jobs", *src.job_id));
    }
    if (!values::is_disk_id(src.disk_id)) {
      return d.reject("disk_id_format", fmt::format("disk_id must be 1 to {} characters", values::kMaxNameLength));
    }
    if (src.size_gb <= 0 && src.capacity_bytes.value_or(0) > 0) {
      disk.size_gb = (*src.capacity_bytes + kGiB - 1) / kGiB;
      d.repair("disk_size_from_capacity", "size_gb", std::to_string(src.size_gb), std::to_string(disk.size_gb),
               fmt::format("from capacity_bytes {}", *src.capacity_bytes));
    }
    if (!values::is_disk_size_gb(disk.size_gb)) {
      return d.reject("disk_size_invalid",
                      fmt::format("size_gb {} is not between 1 and {} and capacity_bytes gives none", src.size_gb,
                                  values::kMaxDiskSizeGb));
    }
    if (src.unit_number && *src.unit_number < 0) {
      disk.unit_number.reset();
      d.repair("unit_number_cleared", "unit_number", std::to_string(*src.unit_number), "NULL", "negative");
    }
    disk.sync_status =
        map_status(d, "sync_status", src.sync_status, LegacyStatusMap::sync_statuses(), "disk_sync_status_unknown");
    const double progress = src.sync_progress_percent.value_or(0);
    disk.sync_progress_percent = std::clamp(progress, 0.0, 100.0);
    if (disk.sync_progress_percent != progress) {
      d.repair("progress_clamped", "sync_progress_percent", fmt::format("{}", progress),
               fmt::format("{}", disk.sync_progress_percent), "a percentage is between 0 and 100");
    }
    if (disk.bytes_synced < 0) {
      d.repair("bytes_synced_cleared", "bytes_synced", std::to_string(disk.bytes_synced), "0", "negative");
      disk.bytes_synced = 0;
    }
  }

  // The disk's volume through ossea_volume_id -> ossea_volumes.volume_id, and its link when the volume is mapped.
  void link_disk(PlannedDisk& p, const LegacyDisk& src) {
    Decision& d = p.decision;
    if (d.rejected() || !src.ossea_volume_id) return;
    auto vol = volumes_.find(*src.ossea_volume_id);
    if (vol == volumes_.end()) {
      return d.reject("disk_volume_missing",
                      fmt::format("its ossea_volume_id {} is not in ossea_volumes", *src.ossea_volume_id));
    }
    const std::string what = fmt::format("ossea_volumes {} volume_id", vol->first);
    p.volume = canonical_uuid(d, "cloudstack_volume_uuid", vol->second->volume_id, what);
    if (!p.volume) return;
    if (auto it = mapping_rejections_.find(*p.volume); it != mapping_rejections_.end()) {
      return d.reject("disk_volume_rejected",
                      fmt::format("the mapping of its volume {} was rejected ({})", *p.volume, it->second));
    }
    const DeviceMapping* m = mapping_of(*p.volume);
    const int64_t volume_bytes = m ? m->size : vol->second->size_gb * kGiB;
    if (volume_bytes > 0 && volume_bytes < p.disk.size_gb * kGiB) {
      return d.reject("disk_larger_than_volume", fmt::format("the disk is {} GiB but its volume {} has {} bytes",
                                                             p.disk.size_gb, *p.volume, volume_bytes));
    }
    if (m) {
      p.disk.cloudstack_volume_uuid = *p.volume;
    } else {
      d.repair("volume_not_mapped", "cloudstack_volume_uuid", *p.volume, "NULL",
               "the volume has no device mapping (detached); the store links a disk only to a mapped volume");
    }
  }

  // A volume backs one vm_disk: of the source disks linked to one volume, the latest (highest id) keeps the link.
  void unlink_shared_volumes(std::vector<PlannedDisk>& planned) {
    std::map<std::string, size_t> keeper;
    for (size_t i = 0; i < planned.size(); ++i) {
      if (!planned[i].decision.rejected() && planned[i].disk.cloudstack_volume_uuid) {
        keeper[*planned[i].disk.cloudstack_volume_uuid] = i;
      }
    }
    for (size_t i = 0; i < planned.size(); ++i) {
      auto& p = planned[i];
      if (p.decision.rejected() || !p.disk.cloudstack_volume_uuid) continue;
      const auto& k = planned[keeper.at(*p.disk.cloudstack_volume_uuid)];
      if (&k == &p) continue;
      p.decision.repair("volume_shared", "cloudstack_volume_uuid", *p.disk.cloudstack_volume_uuid, "NULL",
                        fmt::format("the volume backs the later disk {} of job {} (vm_disks {}); a volume backs one "
                                    "vm_disk",
                                    k.disk.disk_id, k.disk.job_id, k.decision.row().source_id));
      p.disk.cloudstack_volume_uuid.reset();
    }
  }

  bool disk_present(PlannedDisk& p) {
    Decision& d = p.decision;
    const VmDisk& disk = p.disk;
    if (auto it = store_.disks.find({disk.job_id, disk.disk_id}); it != store_.disks.end()) {
      const auto diff =
          Differences()
              .field("vm_dk_path", it->second.vm_dk_path, disk.vm_dk_path)
              .field("size_gb", it->second.size_gb, disk.size_gb)
              .field("cloudstack_volume_uuid", it->second.cloudstack_volume_uuid, disk.cloudstack_volume_uuid)
              .text();
      if (diff.empty()) return true;
      d.reject("store_conflict", fmt::format("the store already has disk {} of job {} with {}; the store's row is "
                                             "kept",
                                             disk.disk_id, disk.job_id, diff));
    } else if (disk.cloudstack_volume_uuid) {
      if (auto v = store_.disk_by_volume.find(*disk.cloudstack_volume_uuid); v != store_.disk_by_volume.end()) {
        d.reject("store_conflict", fmt::format("volume {} already backs disk {} of job {} in the store; a volume "
                                               "backs one vm_disk",
                                               *disk.cloudstack_volume_uuid, v->second.second, v->second.first));
      }
    }
    return false;
  }

  void plan_disks() {
    for (const auto& j : rows_.jobs) job_ids_.insert(j.id);
    for (const auto& v : rows_.volumes) volumes_.emplace(v.id, &v);
    std::vector<PlannedDisk> planned;
    std::set<std::pair<std::string, std::string>> keys;
    for (const auto& src : rows_.disks) {
      PlannedDisk p{Decision("vm_disks", std::to_string(src.id)), VmDisk{}, std::nullopt, false};
      p.disk = VmDisk{0,
                      src.job_id.value_or(""),
                      src.disk_id,
                      src.vm_dk_path,
                      src.size_gb,
                      src.unit_number,
                      std::nullopt,
                      std::nullopt,
                      "pending",
                      0,
                      src.bytes_synced.value_or(0),
                      src.created_at.value_or(""),
                      src.updated_at.value_or("")};
      check_disk_values(p.decision, src, p.disk);
      if (!p.decision.rejected() && !keys.insert({p.disk.job_id, p.disk.disk_id}).second) {
        p.decision.reject("duplicate_disk", fmt::format("job {} has an earlier disk {}; disk ids are unique per job",
                                                        p.disk.job_id, p.disk.disk_id));
      }
      link_disk(p, src);
      planned.push_back(std::move(p));
    }
    unlink_shared_volumes(planned);
    for (size_t i = 0; i < planned.size(); ++i) {
      auto& p = planned[i];
      p.present = !p.decision.rejected() && disk_present(p);
      if (p.volume) disks_by_job_volume_[{p.disk.job_id, *p.volume}].push_back(rows_.disks[i].id);
      if (finish(p.decision, p.present)) plan_.records.disks.push_back(p.disk);
      disks_.emplace(rows_.disks[i].id, std::move(p));
    }
  }

  // The volume an export was of, from every column that says so; all must agree.
  std::optional<std::string> export_volume(Decision& d, const LegacyExport& src, const PlannedDisk* disk) {
    std::vector<std::pair<std::string, std::string>> claims;  // (column, UUID)
    auto claim = [&](std::string_view column, const std::optional<std::string>& raw) {
      if (!raw || raw->empty()) return;
      const std::string uuid = lower(*raw);
      if (!values::is_canonical_uuid(uuid)) {
        return d.reject("volume_uuid_malformed", fmt::format("{} {:?} is not a UUID", column, *raw));
      }
      if (uuid != *raw) d.repair("uuid_lowercased", column, *raw, uuid, "the store keeps canonical lower-case UUIDs");
      claims.emplace_back(column, uuid);
    };
    claim("device_mapping_uuid", src.device_mapping_uuid);
    claim("volume_id", src.volume_id);
    if (src.export_name.starts_with(kExportVolumePrefix)) {
      const std::string named = lower(src.export_name.substr(kExportVolumePrefix.size()));
      if (values::is_canonical_uuid(named)) claims.emplace_back("export_name", named);
    }
    if (disk && disk->volume)
      claims.emplace_back(fmt::format("vm_disk {}", disk->decision.row().source_id), *disk->volume);
    if (d.rejected()) return std::nullopt;
    for (const auto& [column, uuid] : claims) {
      if (uuid != claims.front().second) {
        d.reject("export_untied", fmt::format("{} says volume {} but {} says volume {}", claims.front().first,
                                              claims.front().second, column, uuid));
        return std::nullopt;
      }
    }
    if (claims.empty()) {
      d.reject("export_untied",
               "no column names its volume (device_mapping_uuid and volume_id are empty, its disk "
               "has none)");
      return std::nullopt;
    }
    if (!src.device_mapping_uuid || src.device_mapping_uuid->empty()) {
      d.repair("volume_found", "device_mapping_uuid", shown(src.device_mapping_uuid), claims.front().second,
               fmt::format("from {}", claims.front().first));
    }
    return claims.front().second;
  }

  // The export's disk: by vm_disk_id, else the one disk of its job with its volume.
  const PlannedDisk* export_disk(Decision& d, const LegacyExport& src, const std::optional<std::string>& volume) {
    if (src.vm_disk_id) {
      if (auto it = disks_.find(*src.vm_disk_id); it != disks_.end()) return &it->second;
    }
    if (!volume || !src.job_id) {
      d.reject("export_untied", fmt::format("vm_disk_id {} names no disk and {} to find it through",
                                            src.vm_disk_id ? std::to_string(*src.vm_disk_id) : "NULL",
                                            src.job_id ? "no volume" : "no job"));
      return nullptr;
    }
    const auto it = disks_by_job_volume_.find({*src.job_id, *volume});
    const size_t n = it == disks_by_job_volume_.end() ? 0 : it->second.size();
    if (n != 1) {
      d.reject("export_untied",
               fmt::format("vm_disk_id is {} and job {} has {} disks of volume {}; exactly one "
                           "is needed",
                           src.vm_disk_id ? std::to_string(*src.vm_disk_id) : "NULL", *src.job_id, n, *volume));
      return nullptr;
    }
    const PlannedDisk* disk = &disks_.at(it->second.front());
    d.repair("disk_found", "vm_disk_id", src.vm_disk_id ? std::to_string(*src.vm_disk_id) : "NULL",
             disk->decision.row().source_id,
             fmt::format("the one disk of job {} with volume {}", *src.job_id, *volume));
    return disk;
  }

  void tie_export(Decision& d, const LegacyExport& src, ImportedExport& e) {
    const PlannedDisk* by_id = nullptr;
    if (src.vm_disk_id) {
      if (auto it = disks_.find(*src.vm_disk_id); it != disks_.end()) by_id = &it->second;
    }
    const auto volume = export_volume(d, src, by_id);
    if (d.rejected()) return;
    const PlannedDisk* disk = by_id ? by_id : export_disk(d, src, volume);
    if (d.rejected()) return;
    if (disk->decision.rejected()) {
      return d.reject("export_disk_rejected", fmt::format("its vm_disk {} was rejected ({})",
                                                          disk->decision.row().source_id, disk->decision.why()));
    }
    if (disk->volume && *disk->volume != *volume) {
      return d.reject("export_untied",
                      fmt::format("its volume {} is not its disk's volume {}", *volume, *disk->volume));
    }
    if (!src.job_id) {
      d.repair("job_found", "job_id", "NULL", disk->disk.job_id, "its disk's job");
    } else if (*src.job_id != disk->disk.job_id) {
      return d.reject("export_job_mismatch",
                      fmt::format("its job {} is not its disk's job {}", *src.job_id, disk->disk.job_id));
    }
    const DeviceMapping* m = mapping_of(*volume);
    if (m == nullptr) {
      auto rejected = mapping_rejections_.find(*volume);
      return d.reject("export_volume_unmapped",
                      rejected == mapping_rejections_.end()
                          ? fmt::format("its volume {} has no device mapping", *volume)
                          : fmt::format("the mapping of its volume {} was rejected ({})", *volume, rejected->second));
    }
    if (src.device_path != m->device_path) {
      d.repair("device_path_dropped", "device_path", src.device_path, "(none)",
               fmt::format("the copy differs from its mapping's {}; the store resolves the device through the "
                           "mapping",
                           m->device_path));
    }
    e.job_id = disk->disk.job_id;
    e.disk_id = disk->disk.disk_id;
    e.device_mapping_id = m->id;
  }

  bool export_present(Decision& d, const ImportedExport& e) {
    auto it = store_.exports.find(e.export_name);
    if (it == store_.exports.end()) return false;
    const auto& s = it->second;
    const auto diff = Differences()
                          .field("job_id", s.job_id, e.job_id)
                          .field("disk_id", s.disk_id, e.disk_id)
                          .field("device_mapping_id", s.device_mapping_id, e.device_mapping_id)
                          .field("port", s.port, e.port)
                          .field("status", s.status, std::string("revoked"))
                          .text();
    if (diff.empty()) return true;
    d.reject("store_conflict",
             fmt::format("the store already has export {} with {}; the store's row is kept", e.export_name, diff));
    return false;
  }

  void plan_exports() {
    std::set<std::string> names;
    for (const auto& src : rows_.exports) {
      Decision d("nbd_exports", std::to_string(src.id));
      ImportedExport e{
          "",
          "",
          "",
          src.export_name,
          static_cast<int>(src.port),
          fmt::format("imported from the previous generation's database, where its status was {:?}", src.status),
          src.created_at.value_or("")};
      if (!values::is_valid_export_name(src.export_name)) {
        d.reject("export_name_format", fmt::format("export name {:?} is not 1 to {} of [A-Za-z0-9._-] starting "
                                                   "with a letter or digit",
                                                   src.export_name, values::kMaxNameLength));
      } else if (!values::is_port(src.port)) {
        d.reject("export_port_invalid", fmt::format("port {} is not between 1 and 65535", src.port));
      } else if (!names.insert(src.export_name).second) {
        d.reject("duplicate_export_name", fmt::format("export name {} is used by an earlier export", src.export_name));
      }
      if (!d.rejected()) tie_export(d, src, e);
      const bool present = !d.rejected() && export_present(d, e);
      if (finish(d, present)) plan_.records.exports.push_back(std::move(e));
    }
  }

  void plan_operations() {
    static const std::set<std::string> kTypes{"create", "attach", "detach", "delete", "cleanup"};
    static const std::set<std::string> kStatuses{"pending", "executing", "completed", "failed", "cancelled"};
    for (const auto& src : rows_.operations) {
      Decision d("volume_operations", src.id);
      VolumeOperation o{src.id,
                        src.type,
                        src.status,
                        src.volume_id,
                        src.vm_id,
                        src.request,
                        src.response,
                        src.error,
                        src.created_at.value_or(""),
                        src.updated_at.value_or(""),
                        src.completed_at};
      if (src.id.empty() || src.id.size() > values::kMaxMappingFieldLength) {
        d.reject("operation_id_format", "the operation id must be 1 to 64 characters");
      } else if (!kTypes.contains(src.type) || !kStatuses.contains(src.status)) {
        d.reject("operation_value_invalid",
                 fmt::format("type {:?} or status {:?} is not one the store knows", src.type, src.status));
      } else if (!nlohmann::json::accept(src.request) || (src.response && !nlohmann::json::accept(*src.response))) {
        d.reject("operation_json_invalid", "request or response is not valid JSON");
      } else if (const std::string uuid = lower(src.volume_id);
                 uuid != src.volume_id && values::is_canonical_uuid(uuid)) {
        d.repair("uuid_lowercased", "volume_id", src.volume_id, uuid, "the store keeps canonical lower-case UUIDs");
        o.volume_id = uuid;
      }
      bool present = false;
      if (auto it = store_.operations.find(src.id); !d.rejected() && it != store_.operations.end()) {
        const auto diff = Differences()
                              .field("type", it->second.type, o.type)
                              .field("status", it->second.status, o.status)
                              .field("volume_id", it->second.volume_id, o.volume_id)
                              .field("vm_id", it->second.vm_id, o.vm_id)
                              .text();
        present = diff.empty();
        if (!present) {
          d.reject("store_conflict", fmt::format("the store already has operation {} with {}; the store's row is "
                                                 "kept",
                                                 src.id, diff));
        }
      }
      if (finish(d, present)) plan_.records.operations.push_back(std::move(o));
    }
  }

  const LegacyRows& rows_;
  StoreRows store_;
  ImportPlan plan_;
  std::set<std::string> job_ids_;
  std::map<std::string, std::string> job_rejections_;      // job id -> why
  std::map<std::string, DeviceMapping> mappings_;          // imported or already present, by volume UUID
  std::map<std::string, std::string> mapping_rejections_;  // volume UUID -> why
  std::map<int64_t, const LegacyVolume*> volumes_;
  std::map<int64_t, PlannedDisk> disks_;  // by source id
  std::map<std::pair<std::string, std::string>, std::vector<int64_t>> disks_by_job_volume_;
};

}  // namespace

ImportPlan LegacyImporter::plan(const LegacyRows& rows, ExportStore& store) { return Planner(rows, store).run(); }

ImportReport LegacyImporter::run(const LegacyRows& rows, ExportStore& store, bool dry_run) {
  if (dry_run) {
    ImportReport report = plan(rows, store).report;
    report.dry_run = true;
    return report;
  }
  ImportReport report;
  store.write_import([&] {
    ImportPlan planned = plan(rows, store);
    report = std::move(planned.report);
    return std::move(planned.records);
  });
  return report;
}

}  // namespace nbdxm::legacy
