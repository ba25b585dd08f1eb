// Import: the rows `nbdxm import legacy` decided on, written in one transaction, and the volume operations it reads.
#include <fmt/format.h>

#include <SQLiteCpp/Statement.h>

#include "nbdxm/error.hpp"
#include "nbdxm/export_store.hpp"
#include "nbdxm/store_error.hpp"

namespace nbdxm {
namespace {

constexpr const char* kNow = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

// An empty timestamp means "now" (the schema's default).
std::string timestamp_sql() { return fmt::format("coalesce(nullif(?, ''), {})", kNow); }

template <class T>
void bind_optional(SQLite::Statement& q, int index, const std::optional<T>& value) {
  if (value) {
    q.bind(index, *value);
  } else {
    q.bind(index);
  }
}

std::optional<std::string> optional_text(const SQLite::Column& column) {
  if (column.isNull()) return std::nullopt;
  return column.getString();
}

void insert_jobs(SQLite::Database& db, const std::vector<Job>& jobs) {
  SQLite::Statement q(db, fmt::format("INSERT INTO replication_jobs (id, source_vm_id, source_vm_name, status, "
                                      "created_at, updated_at) VALUES (?, ?, ?, ?, {0}, {0})",
                                      timestamp_sql()));
  for (const auto& job : jobs) {
    q.bind(1, job.id);
    q.bind(2, job.source_vm_id);
    q.bind(3, job.source_vm_name);
    q.bind(4, job.status);
    q.bind(5, job.created_at);
    q.bind(6, job.updated_at);
    q.exec();
    q.reset();
  }
}

void insert_mappings(SQLite::Database& db, const std::vector<DeviceMapping>& mappings) {
  SQLite::Statement q(db, fmt::format("INSERT INTO device_mappings (id, volume_uuid, volume_id, vm_id, device_path, "
                                      "operation_mode, cloudstack_device_id, requires_device_correlation, "
                                      "cloudstack_state, linux_state, size, last_sync, created_at, updated_at) "
                                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {0}, {0}, {0})",
                                      timestamp_sql()));
  for (const auto& m : mappings) {
    q.bind(1, m.id);
    q.bind(2, m.volume_uuid);
    q.bind(3, m.volume_id);
    q.bind(4, m.vm_id);
    q.bind(5, m.device_path);
    q.bind(6, m.operation_mode);
    bind_optional(q, 7, m.cloudstack_device_id);
    q.bind(8, m.requires_device_correlation ? 1 : 0);
    q.bind(9, m.cloudstack_state);
    q.bind(10, m.linux_state);
    q.bind(11, m.size);
    q.bind(12, m.last_sync);
    q.bind(13, m.created_at);
    q.bind(14, m.updated_at);
    q.exec();
    q.reset();
  }
}

void insert_disks(SQLite::Database& db, const std::vector<VmDisk>& disks) {
  SQLite::Statement q(db,
                      fmt::format("INSERT INTO vm_disks (job_id, disk_id, vm_dk_path, size_gb, unit_number, "
                                  "cloudstack_volume_uuid, cloudstack_volume_id, sync_status, sync_progress_percent, "
                                  "bytes_synced, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, "
                                  "(SELECT volume_id FROM device_mappings WHERE volume_uuid = ?6), ?, ?, ?, {0}, {0})",
                                  timestamp_sql()));
  for (const auto& d : disks) {
    q.bind(1, d.job_id);
    q.bind(2, d.disk_id);
    q.bind(3, d.vm_dk_path);
    q.bind(4, d.size_gb);
    bind_optional(q, 5, d.unit_number);
    bind_optional(q, 6, d.cloudstack_volume_uuid);
    q.bind(7, d.sync_status);
    q.bind(8, d.sync_progress_percent);
    q.bind(9, d.bytes_synced);
    q.bind(10, d.created_at);
    q.bind(11, d.updated_at);
    q.exec();
    q.reset();
  }
}

void insert_exports(SQLite::Database& db, const std::vector<ImportedExport>& exports) {
  // The disk by (job, disk id): the store assigned its id. A missing disk leaves vm_disk_id NULL, which the schema
  // refuses (NOT NULL), so the whole import rolls back rather than writing an export of nothing.
  SQLite::Statement q(db, fmt::format("INSERT INTO nbd_exports (job_id, vm_disk_id, device_mapping_id, export_name, "
                                      "port, status, status_reason, created_at, updated_at) VALUES (?1, "
                                      "(SELECT id FROM vm_disks WHERE job_id = ?1 AND disk_id = ?2), ?3, ?4, ?5, "
                                      "'revoked', ?6, {0}, {0})",
                                      fmt::format("coalesce(nullif(?7, ''), {})", kNow)));
  for (const auto& e : exports) {
    q.bind(1, e.job_id);
    q.bind(2, e.disk_id);
    q.bind(3, e.device_mapping_id);
    q.bind(4, e.export_name);
    q.bind(5, e.port);
    q.bind(6, e.status_reason);
    q.bind(7, e.created_at);
    q.exec();
    q.reset();
  }
}

void insert_operations(SQLite::Database& db, const std::vector<VolumeOperation>& operations) {
  SQLite::Statement q(db, fmt::format("INSERT INTO volume_operations (id, type, status, volume_id, vm_id, request, "
                                      "response, error, created_at, updated_at, completed_at) "
                                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, {0}, {0}, ?)",
                                      timestamp_sql()));
  for (const auto& o : operations) {
    q.bind(1, o.id);
    q.bind(2, o.type);
    q.bind(3, o.status);
    q.bind(4, o.volume_id);
    bind_optional(q, 5, o.vm_id);
    q.bind(6, o.request);
    bind_optional(q, 7, o.response);
    bind_optional(q, 8, o.error);
    q.bind(9, o.created_at);
    q.bind(10, o.updated_at);
    bind_optional(q, 11, o.completed_at);
    q.exec();
    q.reset();
  }
}

}  // namespace

std::vector<VolumeOperation> ExportStore::list_volume_operations() {
  SQLite::Statement q(db_.sql(),
                      "SELECT id, type, status, volume_id, vm_id, request, response, error, created_at, updated_at, "
                      "completed_at FROM volume_operations ORDER BY created_at, id");
  std::vector<VolumeOperation> operations;
  while (q.executeStep()) {
    VolumeOperation o;
    o.id = q.getColumn(0).getString();
    o.type = q.getColumn(1).getString();
    o.status = q.getColumn(2).getString();
    o.volume_id = q.getColumn(3).getString();
    o.vm_id = optional_text(q.getColumn(4));
    o.request = q.getColumn(5).getString();
    o.response = optional_text(q.getColumn(6));
    o.error = optional_text(q.getColumn(7));
    o.created_at = q.getColumn(8).getString();
    o.updated_at = q.getColumn(9).getString();
    o.completed_at = optional_text(q.getColumn(10));
    operations.push_back(std::move(o));
  }
  return operations;
}

void ExportStore::write_import(const std::function<ImportRecords()>& plan) {
  translate_store_errors("cannot import", [&] {
    WriteTransaction tx(db_);
    const ImportRecords records = plan();
    insert_jobs(db_.sql(), records.jobs);
    insert_mappings(db_.sql(), records.mappings);
    insert_disks(db_.sql(), records.disks);
    insert_exports(db_.sql(), records.exports);
    insert_operations(db_.sql(), records.operations);
    tx.commit();
  });
}

}  // namespace nbdxm
