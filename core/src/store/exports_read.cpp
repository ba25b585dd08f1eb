// Reading exports through the export_devices view.
#include <fmt/format.h>

#include <SQLiteCpp/Statement.h>

#include "export_rows.hpp"
#include "nbdxm/error.hpp"
#include "nbdxm/export_store.hpp"

namespace nbdxm {
namespace store_rows {

const char* const kExportColumns =
    "export_id, export_name, port, status, status_reason, job_id, vm_disk_id, disk_id, device_mapping_id, "
    "volume_uuid, device_path, operation_mode, requires_device_correlation, size, created_at, updated_at";

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
  return e;
}

}  // namespace store_rows

using store_rows::kExportColumns;
using store_rows::read_export;

std::optional<NbdExport> ExportStore::find_export(const std::string& export_name) {
  SQLite::Statement q(db_.sql(), fmt::format("SELECT {} FROM export_devices WHERE export_name = ?", kExportColumns));
  q.bind(1, export_name);
  if (!q.executeStep()) return std::nullopt;
  return read_export(q);
}

NbdExport ExportStore::get_export(const std::string& export_name) {
  auto e = find_export(export_name);
  if (!e) {
    throw Error(ExitCode::not_found,
                fmt::format("export {} does not exist; `nbdxm export list` shows the exports", export_name));
  }
  return *e;
}

std::vector<NbdExport> ExportStore::list_exports(const ExportFilter& filter) {
  SQLite::Statement q(db_.sql(), fmt::format("SELECT {} FROM export_devices WHERE (?1 IS NULL OR job_id = ?1) "
                                             "AND (?2 IS NULL OR status = ?2) ORDER BY export_id",
                                             kExportColumns));
  if (filter.job_id) q.bind(1, *filter.job_id);
  if (filter.status) q.bind(2, *filter.status);
  std::vector<NbdExport> result;
  while (q.executeStep()) result.push_back(read_export(q));
  return result;
}

}  // namespace nbdxm
