// nbdxm-sync-devices --spec SPEC: syncs every device of an export server's spec after the server is gone, where no
// manager does it: the package's prerm runs it for the export units a removal stops (as user nbdxm, group disk). A
// failure is recorded as the export's durability failure in its counter file (sync_spec_devices), and fails the
// program. A program of its own rather than a command of `nbdxm`, which is being removed when it runs; it links only
// what the sync needs.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <exception>
#include <string>

#include "nbdxm/error.hpp"
#include "nbdxm/printable.hpp"
#include "server_command.hpp"

int main(int argc, char** argv) {
  using namespace nbdxm;
  CLI::App app{"Sync every device of an export server's spec after the server is gone", "nbdxm-sync-devices"};
  std::string spec;
  app.add_option("--spec", spec, "The server spec file (/run/nbdxm/servers/<address>:<port>.json)")->required();
  try {
    app.parse(argc, argv);
    const auto result = supervision::sync_spec_devices(spec);
    for (const auto& path : result.synced) fmt::print(stderr, "nbdxm-sync-devices: synced {}\n", printable(path));
    if (!result.ok()) {
      throw Error(ExitCode::failure, fmt::format("cannot sync {}", fmt::join(result.failures, "; ")));
    }
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "nbdxm-sync-devices: {} (see `nbdxm-sync-devices --help`)\n", printable(e.what()));
    return static_cast<int>(ExitCode::usage);
  } catch (const Error& e) {
    fmt::print(stderr, "nbdxm-sync-devices: {}\n", printable(e.what()));
    return e.exit_code();
  } catch (const std::exception& e) {
    fmt::print(stderr, "nbdxm-sync-devices: {}\n", printable(e.what()));
    return static_cast<int>(ExitCode::failure);
  }
  return 0;
}
