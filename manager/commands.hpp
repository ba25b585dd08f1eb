#pragma once
// Each group of nbdxm subcommands registers itself on the CLI11 app. Commands run from CLI11 callbacks and report
// failure by throwing nbdxm::Error; main() turns that into one line on stderr and the error's exit code.
#include <CLI/CLI.hpp>
#include <string>

namespace nbdxm::cli {

struct GlobalOptions {
  std::string db;     // --db / NBDXM_DB
  bool json = false;  // --json
};

void register_store_commands(CLI::App& app, GlobalOptions& options);   // init, job, mapping, disk, check
void register_export_commands(CLI::App& app, GlobalOptions& options);  // export, gc
void register_serve_command(CLI::App& app, GlobalOptions& options);    // serve (the daemon)
void register_import_command(CLI::App& app, GlobalOptions& options);   // import legacy
void register_export_server_command(CLI::App& app);                    // export-server (run by the supervisor)

}  // namespace nbdxm::cli
