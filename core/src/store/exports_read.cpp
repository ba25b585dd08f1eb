// Reading exports through the export_devices view.
#include <fmt/format.h>

#include <SQLiteCpp/Statement.h>

#include "nbdxm/error.hpp"
#include "nbdxm/export_store.hpp"
#include "store_rows.hpp"

namespace nbdxm {
using rows::kExportColumns;
using rows::read_export;

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
