// Device mappings (volume attachments), by volume UUID.
#include <fmt/format.h>

#include <SQLiteCpp/Statement.h>

#include "nbdxm/error.hpp"
#include "nbdxm/export_store.hpp"
#include "nbdxm/store_error.hpp"
#include "nbdxm/store_values.hpp"
#include "store_rows.hpp"

namespace nbdxm {
namespace {

// The 'oma' mapping other than volume_uuid's that holds device_path, if any.
std::optional<DeviceMapping> oma_holder_of(SQLite::Database& db, const std::string& device_path,
                                           const std::string& volume_uuid) {
  SQLite::Statement q(db, fmt::format("SELECT {} FROM device_mappings WHERE operation_mode = 'oma' AND "
                                      "device_path = ? AND volume_uuid <> ?",
                                      rows::kMappingColumns));
  q.bind(1, device_path);
  q.bind(2, volume_uuid);
  if (!q.executeStep()) return std::nullopt;
  return rows::read_mapping(q);
}

void refuse_taken_device_path(SQLite::Database& db, const std::string& device_path, const std::string& volume_uuid) {
  if (auto holder = oma_holder_of(db, device_path, volume_uuid)) {
    throw Error(ExitCode::conflict,
                fmt::format("device path {} is already mapped to volume {}; an 'oma' device path maps one volume",
                            device_path, holder->volume_uuid));
  }
}

std::vector<VmDisk> disks_linked_to(SQLite::Database& db, const std::string& volume_uuid) {
  SQLite::Statement q(
      db, fmt::format("SELECT {} FROM vm_disks WHERE cloudstack_volume_uuid = ? ORDER BY id", rows::kDiskColumns));
  q.bind(1, volume_uuid);
  std::vector<VmDisk> disks;
  while (q.executeStep()) disks.push_back(rows::read_disk(q));
  return disks;
}

}  // namespace

std::optional<DeviceMapping> ExportStore::find_mapping(const std::string& volume_uuid) {
  SQLite::Statement q(db_.sql(),
                      fmt::format("SELECT {} FROM device_mappings WHERE volume_uuid = ?", rows::kMappingColumns));
  q.bind(1, volume_uuid);
  if (!q.executeStep()) return std::nullopt;
  return rows::read_mapping(q);
}

DeviceMapping ExportStore::get_mapping(const std::string& volume_uuid) {
  values::require_volume_uuid(volume_uuid);
  auto mapping = find_mapping(volume_uuid);
  if (!mapping) {
    throw Error(ExitCode::not_found,
                fmt::format("volume {} has no device mapping; `nbdxm mapping list` shows the mappings", volume_uuid));
  }
  return *mapping;
}

std::vector<DeviceMapping> ExportStore::list_mappings() {
  SQLite::Statement q(db_.sql(),
                      fmt::format("SELECT {} FROM device_mappings ORDER BY created_at, rowid", rows::kMappingColumns));
  std::vector<DeviceMapping> mappings;
  while (q.executeStep()) mappings.push_back(rows::read_mapping(q));
  return mappings;
}

DeviceMapping ExportStore::add_mapping(const NewMapping& mapping) {
  values::require_volume_uuid(mapping.volume_uuid);
  if (mapping.volume_id < 0) {
    throw Error(ExitCode::usage, fmt::format("volume id {} must not be negative", mapping.volume_id));
  }
  if (!values::is_mapping_vm_id(mapping.vm_id)) {
    throw Error(ExitCode::usage, fmt::format("the mapping's vm id {:?} must be 1 to {} characters", mapping.vm_id,
                                             values::kMaxMappingFieldLength));
  }
  values::require_operation_mode(mapping.operation_mode);
  values::require_device_path(mapping.device_path, mapping.operation_mode);
  values::require_mapping_size(mapping.size);
  return translate_store_errors(fmt::format("cannot add a device mapping for volume {}", mapping.volume_uuid), [&] {
    WriteTransaction tx(db_);
    if (auto existing = find_mapping(mapping.volume_uuid)) {
      throw Error(ExitCode::conflict,
                  fmt::format("volume {} already has a device mapping (device path {}, mode {}); change its path with "
                              "`nbdxm mapping set-path` or delete it first",
                              mapping.volume_uuid, existing->device_path, existing->operation_mode));
    }
    if (mapping.operation_mode == "oma") refuse_taken_device_path(db_.sql(), mapping.device_path, mapping.volume_uuid);
    SQLite::Statement q(db_.sql(),
                        "INSERT INTO device_mappings (volume_uuid, volume_id, vm_id, device_path, size, "
                        "operation_mode, requires_device_correlation) VALUES (?, ?, ?, ?, ?, ?, ?)");
    q.bind(1, mapping.volume_uuid);
    q.bind(2, mapping.volume_id);
    q.bind(3, mapping.vm_id);
    q.bind(4, mapping.device_path);
    q.bind(5, mapping.size);
    q.bind(6, mapping.operation_mode);
    q.bind(7, mapping.requires_device_correlation ? 1 : 0);
    q.exec();
    DeviceMapping added = get_mapping(mapping.volume_uuid);
    tx.commit();
    return added;
  });
}

DeviceMapping ExportStore::set_mapping_path(const std::string& volume_uuid, const std::string& device_path) {
  values::require_volume_uuid(volume_uuid);
  return translate_store_errors(fmt::format("cannot change the device path of volume {}", volume_uuid), [&] {
    WriteTransaction tx(db_);
    DeviceMapping mapping = get_mapping(volume_uuid);
    values::require_device_path(device_path, mapping.operation_mode);
    if (mapping.device_path == device_path) return mapping;
    if (mapping.operation_mode == "oma") refuse_taken_device_path(db_.sql(), device_path, volume_uuid);
    SQLite::Statement q(db_.sql(), "UPDATE device_mappings SET device_path = ? WHERE volume_uuid = ?");
    q.bind(1, device_path);
    q.bind(2, volume_uuid);
    q.exec();
    mapping = get_mapping(volume_uuid);
    tx.commit();
    return mapping;
  });
}

DeletedMapping ExportStore::delete_mapping(const std::string& volume_uuid) {
  values::require_volume_uuid(volume_uuid);
  return translate_store_errors(fmt::format("cannot delete the device mapping of volume {}", volume_uuid), [&] {
    WriteTransaction tx(db_);
    DeletedMapping deleted{get_mapping(volume_uuid), disks_linked_to(db_.sql(), volume_uuid), {}};
    for (auto& e : list_exports()) {
      if (e.device_mapping_id == deleted.mapping.id) deleted.exports.push_back(std::move(e));
    }
    SQLite::Statement q(db_.sql(), "DELETE FROM device_mappings WHERE volume_uuid = ?");
    q.bind(1, volume_uuid);
    q.exec();
    for (auto& disk : deleted.unlinked_disks) disk = get_disk(disk.job_id, disk.disk_id);  // as they are now
    tx.commit();
    return deleted;
  });
}

}  // namespace nbdxm
