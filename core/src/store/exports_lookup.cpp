// A prepared lookup of one export by name (see export_lookup.hpp).
#include <fmt/format.h>

#include "nbdxm/export_lookup.hpp"
#include "store_rows.hpp"

namespace nbdxm {

ExportLookup::ExportLookup(Database& db)
    : query_(db.sql(), fmt::format("SELECT {} FROM export_devices WHERE export_name = ?", rows::kExportColumns)) {}

std::optional<NbdExport> ExportLookup::find(const std::string& export_name) {
  const StatementReset reset(query_);
  query_.bind(1, export_name);
  if (!query_.executeStep()) return std::nullopt;
  return rows::read_export(query_);
}

}  // namespace nbdxm
