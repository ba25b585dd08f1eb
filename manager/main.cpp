// nbdxm: entry point. Parses the command line with CLI11 and maps every failure to one line and an exit code.
#include <fmt/format.h>

#include <SQLiteCpp/Exception.h>
#include <cstdlib>

#include "commands.hpp"
#include "nbdxm/database.hpp"
#include "nbdxm/error.hpp"
#include "nbdxm/printable.hpp"
#include "nbdxm/store_error.hpp"

namespace {

// The innermost command the command line selected ("nbdxm job add" selects add).
const CLI::App* selected_command(const CLI::App& app) {
  const CLI::App* command = &app;
  while (!command->get_subcommands().empty()) command = command->get_subcommands().back();
  return command;
}

std::string command_path(const CLI::App* command) {
  std::string path = command->get_name();
  for (const CLI::App* parent = command->get_parent(); parent != nullptr; parent = parent->get_parent()) {
    path = parent->get_name() + " " + path;
  }
  return path;
}

std::string subcommand_names(const CLI::App* command) {
  std::string names;
  // Hidden commands (no group: `export-server`, run by the supervisor) are not offered.
  const auto offered = [](const CLI::App* sub) { return !sub->get_name().empty() && !sub->get_group().empty(); };
  for (const CLI::App* sub : command->get_subcommands(offered)) {
    names += (names.empty() ? "" : ", ") + sub->get_name();
  }
  return names;
}

// One line naming the command, what was wrong and where its help is.
std::string usage_message(const CLI::App& app, const CLI::ParseError& e) {
  const CLI::App* command = selected_command(app);
  const std::string path = command_path(command);
  const std::string names = subcommand_names(command);
  const bool is_group = !names.empty();
  if (is_group && (e.get_name() == "RequiredError" || e.get_name() == "ExtrasError")) {
    // CLI11 keeps what it could not place; with a group selected, that is a mistyped command.
    const std::vector<std::string> unknown = app.remaining(true);
    const std::string what =
        unknown.empty() ? "a command is required" : fmt::format("unknown command {}", unknown.front());
    return fmt::format("{}: {}; expected one of: {} (see `{} --help`)", path, what, names, path);
  }
  return fmt::format("{}: {} (see `{} --help`)", path, e.what(), path);
}

}  // namespace

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
  cli::register_import_command(app, options);
  cli::register_export_server_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "{}\n", printable(usage_message(app, e)));
    return static_cast<int>(ExitCode::usage);
  } catch (const Error& e) {
    fmt::print(stderr, "nbdxm: {}\n", printable(e.what()));
    return e.exit_code();
  } catch (const SQLite::Exception& e) {
    const Error error = store_error(e);  // never the raw SQLite message for a refusal
    fmt::print(stderr, "nbdxm: {}\n", printable(error.what()));
    return error.exit_code();
  } catch (const std::exception& e) {
    fmt::print(stderr, "nbdxm: {}\n", printable(e.what()));
    return static_cast<int>(ExitCode::failure);
  }
  return 0;
}
