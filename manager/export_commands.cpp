// Placeholder until the manager issue lands: `nbdxm export` and `nbdxm gc`.
#include "commands.hpp"

namespace nbdxm::cli {
void register_export_commands(CLI::App&, GlobalOptions&) {}
}  // namespace nbdxm::cli
