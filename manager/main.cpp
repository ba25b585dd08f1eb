// nbdxm: entry point. Parses the command line with CLI11 and maps every failure to one line and an exit code.
#include <fmt/format.h>

#include <SQLiteCpp/Exception.h>
#include <cstdlib>

#include "commands.hpp"
#include "nbdxm/database.hpp"
#include "nbdxm/error.hpp"

int main(int argc, char** argv) {
  using namespace nbdxm;
  CLI::App app{
      "nbdxm: NBD export manager with an integrated state store.\n"
      "Records replication jobs, disks and volume attachments, and serves each export over NBD from the "
      "device its volume is attached as, resolved at connect time.",
      "nbdxm"};
  app.footer(exit_code_help());
  app.set_version_flag("--version", std::string("nbdxm ") + NBDXM_VERSION);
  app.require_subcommand(1);
  app.fallthrough();

  cli::GlobalOptions options;
  options.db = Database::kDefaultPath;
  app.add_option("--db", options.db, "State store path (default /var/lib/nbdxm/state.db)")
      ->envname("NBDXM_DB")
      ->capture_default_str();
  app.add_flag("--json", options.json, "Print JSON (objects keyed by column name) instead of text");

  cli::register_store_commands(app, options);
  cli::register_export_commands(app, options);
  cli::register_serve_command(app, options);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "nbdxm: {} (see `nbdxm --help`)\n", e.what());
    return static_cast<int>(ExitCode::usage);
  } catch (const Error& e) {
    fmt::print(stderr, "nbdxm: {}\n", e.what());
    return e.exit_code();
  } catch (const SQLite::Exception& e) {
    fmt::print(stderr, "nbdxm: state store error: {}\n", e.what());
    return static_cast<int>(ExitCode::failure);
  } catch (const std::exception& e) {
    fmt::print(stderr, "nbdxm: {}\n", e.what());
    return static_cast<int>(ExitCode::failure);
  }
  return 0;
}
