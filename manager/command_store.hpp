#pragma once
// One command's connection to the store: opened, its schema checked to be current, and the query layer over it.
#include "commands.hpp"
#include "nbdxm/database.hpp"
#include "nbdxm/export_store.hpp"

namespace nbdxm::cli {

struct CommandStore {
  CommandStore(const GlobalOptions& options, Database::Access access);
  CommandStore(const CommandStore&) = delete;  // `exports` refers to `db`
  CommandStore& operator=(const CommandStore&) = delete;

  Database db;
  ExportStore exports;
};

}  // namespace nbdxm::cli
