#include "nbdxm/error.hpp"

namespace nbdxm {

const char* exit_code_help() {
  return "Exit codes:\n"
         "  0  success\n"
         "  1  any other failure (I/O error, damaged store)\n"
         "  2  usage: bad arguments or a value in the wrong format\n"
         "  3  not found: the named job, disk, mapping or export does not exist\n"
         "  4  conflict: the change would break a store invariant; nothing was changed\n"
         "  5  check found problems (nbdxm check), or the import rejected source rows (nbdxm import legacy)\n"
         "  6  unavailable: no manager is running, an export's server could not be started, or the manager may not\n"
         "     manage its export units (systemd supervisor)\n";
}

}  // namespace nbdxm
