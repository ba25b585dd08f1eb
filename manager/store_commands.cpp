// Placeholder: init, job, mapping, disk, check.
#include <fmt/format.h>
#include "commands.hpp"
#include "nbdxm/database.hpp"

namespace nbdxm::cli {
void register_store_commands(CLI::App& app, GlobalOptions& options) {
  app.add_subcommand("init", "Create the state store, or upgrade it to this version's schema")->callback([&options] {
    auto db = Database::create(options.db);
    auto r = db.init();
    fmt::print("state store {} at schema version {} (was {})\n", options.db, r.to_version, r.from_version);
  });
}
}  // namespace nbdxm::cli
