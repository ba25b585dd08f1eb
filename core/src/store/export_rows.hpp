#pragma once
// Internal to the store query layer: how a row of the export_devices view is selected and read, shared by every
// query that returns exports (exports_read.cpp, exports_lookup.cpp).
#include <SQLiteCpp/Statement.h>

#include "nbdxm/records.hpp"

namespace nbdxm::store_rows {

// The export_devices columns in the order read_export() expects them.
extern const char* const kExportColumns;

NbdExport read_export(SQLite::Statement& q);

}  // namespace nbdxm::store_rows
