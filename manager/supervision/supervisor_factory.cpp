// make_supervisor: the backend `nbdxm serve --supervisor` names.
#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>

#include "direct_supervisor.hpp"
#include "nbdxm/error.hpp"
#include "server_supervisor.hpp"
#include "systemd_supervisor.hpp"

namespace nbdxm::supervision {
namespace {

// The manager's own program, which runs `nbdxm export-server` for the direct backend.
std::string own_program() {
  std::error_code ec;
  const auto path = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) throw Error(ExitCode::failure, fmt::format("cannot find this program (/proc/self/exe): {}", ec.message()));
  return path.string();
}

}  // namespace

std::unique_ptr<ServerSupervisor> make_supervisor(SupervisorKind kind, const ServerSettings& settings, int first_port) {
  switch (kind) {
    case SupervisorKind::systemd:
      return make_systemd_supervisor(settings, first_port);
    case SupervisorKind::automatic:  // systemd where PID 1 is systemd and the system bus answers
      if (systemd_available()) return make_systemd_supervisor(settings, first_port);
      break;
    case SupervisorKind::direct:
      break;
  }
  return std::make_unique<DirectSupervisor>(settings, std::vector<std::string>{own_program(), "export-server"});
}

}  // namespace nbdxm::supervision
