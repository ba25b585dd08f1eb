#pragma once
// ExportLookup: part of the store query layer (ExportStore). Looks one export up by name through the
// export_devices view, like ExportStore::find_export, with the statement prepared once: a caller that looks
// exports up at connection rate (the plugin, at every client connect) would otherwise spend about as long
// preparing the statement as nbdkit spends on the rest of the connect.
// Not thread-safe: one caller at a time (the plugin serialises its store access).
#include <SQLiteCpp/Statement.h>

#include <optional>
#include <string>

#include "nbdxm/database.hpp"
#include "nbdxm/records.hpp"

namespace nbdxm {

class ExportLookup {
 public:
  explicit ExportLookup(Database& db);

  // The export as the store holds it now (each call is its own read transaction), or nullopt when no export has
  // that name.
  std::optional<NbdExport> find(const std::string& export_name);

 private:
  SQLite::Statement query_;
};

}  // namespace nbdxm
