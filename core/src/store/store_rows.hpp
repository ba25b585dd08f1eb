#pragma once
// Internal to the store: the column lists and row readers of the tables, shared by the store's source files.
#include <SQLiteCpp/Statement.h>

#include <vector>

#include "nbdxm/export_store.hpp"
#include "nbdxm/records.hpp"

namespace nbdxm::rows {

inline constexpr const char* kJobColumns = "id, source_vm_id, source_vm_name, status, created_at, updated_at";
inline constexpr const char* kMappingColumns =
    "id, volume_uuid, volume_id, vm_id, device_path, operation_mode, cloudstack_device_id, "
    "requires_device_correlation, cloudstack_state, linux_state, size, last_sync, created_at, updated_at";
inline constexpr const char* kDiskColumns =
    "id, job_id, disk_id, vm_dk_path, size_gb, unit_number, cloudstack_volume_uuid, cloudstack_volume_id, "
    "sync_status, sync_progress_percent, bytes_synced, created_at, updated_at";
// The export_devices view's columns: every query that returns exports selects these and reads them with read_export.
inline constexpr const char* kExportColumns =
    "export_id, export_name, port, status, status_reason, job_id, vm_disk_id, disk_id, device_mapping_id, "
    "volume_uuid, device_path, operation_mode, requires_device_correlation, size, created_at, updated_at, tls, "
    "allow_from, durability, transport, allow_peers";
// export_durability_failures (alias f) joined with nbd_exports (alias e), for the export's name.
inline constexpr const char* kDurabilityFailureColumns =
    "f.export_id, e.export_name, f.served_created_at, f.failures, f.reason, f.first_failed_at, f.last_failed_at, "
    "f.acknowledged_at";

Job read_job(SQLite::Statement& q);
DeviceMapping read_mapping(SQLite::Statement& q);
VmDisk read_disk(SQLite::Statement& q);
NbdExport read_export(SQLite::Statement& q);
DurabilityFailure read_durability_failure(SQLite::Statement& q);

inline ExportFilter of_job(const std::string& job_id) {
  ExportFilter filter;
  filter.job_id = job_id;
  return filter;
}

// The pending and active ones of the given exports.
std::vector<NbdExport> live_only(std::vector<NbdExport> exports);

}  // namespace nbdxm::rows
