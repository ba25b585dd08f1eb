// Placeholder until the manager issue lands: `nbdxm serve`.
#include "commands.hpp"

namespace nbdxm::cli {
void register_serve_command(CLI::App&, GlobalOptions&) {}
}  // namespace nbdxm::cli
