#include "store_rows.hpp"

#include <SQLiteCpp/Column.h>

namespace nbdxm::rows {
namespace {

std::optional<int64_t> optional_int(const SQLite::Column& column) {
  if (column.isNull()) return std::nullopt;
  return column.getInt64();
}

}  // namespace

Job read_job(SQLite::Statement& q) {
  Job job;
  job.id = q.getColumn(0).getString();
  job.source_vm_id = q.getColumn(1).getString();
  job.source_vm_name = q.getColumn(2).getString();
  job.status = q.getColumn(3).getString();
  job.created_at = q.getColumn(4).getString();
  job.updated_at = q.getColumn(5).getString();
  return job;
}

DeviceMapping read_mapping(SQLite::Statement& q) {
  DeviceMapping m;
  m.id = q.getColumn(0).getString();
  m.volume_uuid = q.getColumn(1).getString();
  m.volume_id = q.getColumn(2).getInt64();
  m.vm_id = q.getColumn(3).getString();
  m.device_path = q.getColumn(4).getString();
  m.operation_mode = q.getColumn(5).getString();
  m.cloudstack_device_id = optional_int(q.getColumn(6));
  m.requires_device_correlation = q.getColumn(7).getInt() != 0;
  m.cloudstack_state = q.getColumn(8).getString();
  m.linux_state = q.getColumn(9).getString();
  m.size = q.getColumn(10).getInt64();
  m.last_sync = q.getColumn(11).getString();
  m.created_at = q.getColumn(12).getString();
  m.updated_at = q.getColumn(13).getString();
  return m;
}

VmDisk read_disk(SQLite::Statement& q) {
  VmDisk d;
  d.id = q.getColumn(0).getInt64();
  d.job_id = q.getColumn(1).getString();
  d.disk_id = q.getColumn(2).getString();
  d.vm_dk_path = q.getColumn(3).getString();
  d.size_gb = q.getColumn(4).getInt64();
  d.unit_number = optional_int(q.getColumn(5));
  if (!q.getColumn(6).isNull()) d.cloudstack_volume_uuid = q.getColumn(6).getString();
  d.cloudstack_volume_id = optional_int(q.getColumn(7));
  d.sync_status = q.getColumn(8).getString();
  d.sync_progress_percent = q.getColumn(9).getDouble();
  d.bytes_synced = q.getColumn(10).getInt64();
  d.created_at = q.getColumn(11).getString();
  d.updated_at = q.getColumn(12).getString();
  return d;
}

std::vector<NbdExport> live_only(std::vector<NbdExport> exports) {
  std::erase_if(exports, [](const NbdExport& e) { return !e.live(); });
  return exports;
}

NbdExport read_export(SQLite::Statement& q) {
  NbdExport e;
  e.id = q.getColumn(0).getInt64();
  e.export_name = q.getColumn(1).getString();
  e.port = q.getColumn(2).getInt();
  e.status = q.getColumn(3).getString();
  if (!q.getColumn(4).isNull()) e.status_reason = q.getColumn(4).getString();
  e.job_id = q.getColumn(5).getString();
  e.vm_disk_id = q.getColumn(6).getInt64();
  e.disk_id = q.getColumn(7).getString();
  e.device_mapping_id = q.getColumn(8).getString();
  e.volume_uuid = q.getColumn(9).getString();
  e.device_path = q.getColumn(10).getString();
  e.operation_mode = q.getColumn(11).getString();
  e.requires_device_correlation = q.getColumn(12).getInt() != 0;
  e.size = q.getColumn(13).getInt64();
  e.created_at = q.getColumn(14).getString();
  e.updated_at = q.getColumn(15).getString();
  e.tls = q.getColumn(16).getInt() != 0;
  if (!q.getColumn(17).isNull()) e.allow_from = q.getColumn(17).getString();
  e.durability = q.getColumn(18).getString();
  e.transport = q.getColumn(19).getString();
  if (!q.getColumn(20).isNull()) e.allow_peers = q.getColumn(20).getString();
  return e;
}

DurabilityFailure read_durability_failure(SQLite::Statement& q) {
  DurabilityFailure f;
  f.export_id = q.getColumn(0).getInt64();
  f.export_name = q.getColumn(1).getString();
  f.served_created_at = q.getColumn(2).getString();
  f.failures = q.getColumn(3).getInt64();
  f.reason = q.getColumn(4).getString();
  f.first_failed_at = q.getColumn(5).getString();
  f.last_failed_at = q.getColumn(6).getString();
  if (!q.getColumn(7).isNull()) f.acknowledged_at = q.getColumn(7).getString();
  return f;
}

}  // namespace nbdxm::rows
