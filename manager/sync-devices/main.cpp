// nbdxm-sync-devices --spec SPEC: the export unit's ExecStopPost= (packaging/nbdxm-export@.service). After the
// export's server is gone, syncs the export's current device, all the unit's device cgroup lets it open (the manager
// syncs the devices it was mapped to before); a failure is recorded as the export's durability failure in its
// counter file (sync_spec_devices). A program of its own rather than a command of `nbdxm`: it runs at every stop of
// every export unit, where loading all of nbdxm's libraries (SQLite, libnbd and GnuTLS, libsystemd, ...) costs more
// than the sync itself; it links only what the sync needs (see bench/README.md, "the stop cost").
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <exception>
#include <string>

#include "nbdxm/error.hpp"
#include "nbdxm/printable.hpp"
#include "server_command.hpp"

int main(int argc, char** argv) {
  using namespace nbdxm;
  CLI::App app{"Sync an export's current device after its server is gone (the export unit's ExecStopPost=)",
               "nbdxm-sync-devices"};
  std::string spec;
  app.add_option("--spec", spec, "The server spec file (/run/nbdxm/servers/<address>:<port>.json)")->required();
  try {
    app.parse(argc, argv);
    const auto result = supervision::sync_spec_devices(spec, supervision::SpecDevices::current);
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
