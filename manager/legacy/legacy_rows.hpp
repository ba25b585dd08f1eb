#pragma once
// The previous generation's rows (MariaDB database migratekit_oma), as read, before any rule is applied: one struct
// per table, only the columns the import uses, NULL as nullopt. Timestamps are UTC ISO-8601 with milliseconds, like
// the store's.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace nbdxm::legacy {

struct LegacyJob {  // replication_jobs
  std::string id;
  std::string source_vm_id;
  std::string source_vm_name;
  std::optional<std::string> status;
  std::optional<std::string> created_at;
  std::optional<std::string> updated_at;
};

struct LegacyVolume {  // ossea_volumes: the numeric id vm_disks point at, and the cloud volume's UUID as text
  int64_t id = 0;
  std::string volume_id;
  int64_t size_gb = 0;
};

struct LegacyDisk {  // vm_disks
  int64_t id = 0;
  std::optional<std::string> job_id;
  std::string disk_id;
  std::string vm_dk_path;
  int64_t size_gb = 0;
  std::optional<int64_t> capacity_bytes;
  std::optional<int64_t> unit_number;
  std::optional<int64_t> ossea_volume_id;
  std::optional<std::string> sync_status;
  std::optional<double> sync_progress_percent;
  std::optional<int64_t> bytes_synced;
  std::optional<std::string> created_at;
  std::optional<std::string> updated_at;
};

struct LegacyMapping {  // device_mappings
  std::string id;
  std::string volume_uuid;
  std::optional<int64_t> volume_id_numeric;
  std::string vm_id;
  std::optional<std::string> operation_mode;
  std::optional<int64_t> cloudstack_device_id;
  std::optional<bool> requires_device_correlation;
  std::string device_path;
  std::string cloudstack_state;
  std::string linux_state;
  int64_t size = 0;  // bytes
  std::optional<std::string> last_sync;
  std::optional<std::string> created_at;
  std::optional<std::string> updated_at;
};

struct LegacyExport {  // nbd_exports
  int64_t id = 0;
  std::optional<std::string> job_id;
  std::optional<std::string> volume_id;  // text, sometimes empty
  std::optional<int64_t> vm_disk_id;
  std::optional<std::string> device_mapping_uuid;
  std::string export_name;
  int64_t port = 0;
  std::string device_path;  // a copy of the mapping's, taken when the export was made
  std::string status;
  std::optional<std::string> created_at;
};

struct LegacyOperation {  // volume_operations (the volume daemon's)
  std::string id;
  std::string type;
  std::string status;
  std::string volume_id;
  std::optional<std::string> vm_id;
  std::string request;
  std::optional<std::string> response;
  std::optional<std::string> error;
  std::optional<std::string> created_at;
  std::optional<std::string> updated_at;
  std::optional<std::string> completed_at;
};

struct LegacyRows {
  std::vector<LegacyJob> jobs;
  std::vector<LegacyVolume> volumes;
  std::vector<LegacyDisk> disks;
  std::vector<LegacyMapping> mappings;
  std::vector<LegacyExport> exports;
  std::vector<LegacyOperation> operations;
};

}  // namespace nbdxm::legacy
