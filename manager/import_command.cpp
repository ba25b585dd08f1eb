// nbdxm import legacy: adopts an existing appliance's state from the previous generation's MariaDB database.
// Reads the source read-only, decides every row's outcome (LegacyImporter) and writes the store in one transaction.
#include <fmt/format.h>

#include <cstdlib>
#include <memory>

#include "commands.hpp"
#include "import_report.hpp"
#include "legacy_importer.hpp"
#include "legacy_source.hpp"
#include "nbdxm/database.hpp"
#include "nbdxm/error.hpp"
#include "nbdxm/export_store.hpp"

namespace nbdxm::cli {
namespace {

constexpr const char* kPasswordVariable = "NBDXM_IMPORT_PASSWORD";

struct ImportArgs {
  std::string source;
  bool dry_run = false;
};

void run_import(const GlobalOptions& options, const ImportArgs& args) {
  const auto uri = legacy::LegacyUri::parse(args.source);
  const char* password = std::getenv(kPasswordVariable);
  const legacy::LegacyRows rows = legacy::LegacySource(uri, password ? password : "").read_all();
  Database db = Database::open(options.db, args.dry_run ? Database::Access::read_only : Database::Access::read_write);
  db.require_current_schema();
  ExportStore store(db);
  legacy::ImportReport report = legacy::LegacyImporter::run(rows, store, args.dry_run);
  report.source = uri.display();
  report.store = options.db;
  if (options.json) {
    fmt::print("{}\n", report.json().dump(2));
  } else {
    fmt::print("{}", report.text());
  }
  std::fflush(stdout);
  if (const size_t rejected = report.rejected(); rejected > 0) {
    throw Error(
        ExitCode::check_failed,
        fmt::format("{} source row{} rejected (listed in the report); {}", rejected, rejected == 1 ? " was" : "s were",
                    args.dry_run ? "nothing was written (dry run)" : "the other rows were imported"));
  }
}

}  // namespace

void register_import_command(CLI::App& app, GlobalOptions& options) {
  auto* group = app.add_subcommand("import", "Import state from another system: legacy");
  group->require_subcommand(1);
  auto args = std::make_shared<ImportArgs>();
  auto* cmd = group->add_subcommand(
      "legacy",
      "Import the previous generation's MariaDB database (migratekit_oma): replication_jobs, vm_disks (volume links "
      "through ossea_volumes), device_mappings, nbd_exports (as revoked history) and volume_operations, in one "
      "transaction. Every source row is imported, repaired or rejected, and the report says which and why. The "
      "source is only read. Re-running changes nothing. Exit 5 when rows were rejected (the rest is imported).");
  cmd->add_option("--source", args->source,
                  "mariadb://[USER@]HOST[:PORT]/DATABASE or mariadb:///DATABASE?socket=PATH; the password, if any, "
                  "from the environment variable NBDXM_IMPORT_PASSWORD")
      ->required();
  cmd->add_flag("--dry-run", args->dry_run, "Report the outcome without writing the store");
  cmd->callback([&options, args] { run_import(options, *args); });
}

}  // namespace nbdxm::cli
