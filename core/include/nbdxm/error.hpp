#pragma once
// The one error type of nbdxm. Every refusal carries the exit code the CLI returns and a one-line message that
// names the thing and the fix, in the user's terms.
#include <stdexcept>
#include <string>

namespace nbdxm {

enum class ExitCode : int {
  ok = 0,
  failure = 1,       // anything else (I/O error, corrupt store, bug)
  usage = 2,         // bad arguments or input format
  not_found = 3,     // the named job, disk, mapping or export does not exist
  conflict = 4,      // the write would break an invariant; nothing was changed
  check_failed = 5,  // `nbdxm check` found problems; `nbdxm import legacy` rejected rows (the rest committed)
  unavailable = 6,   // the manager is not running or a server could not be started
};

class Error : public std::runtime_error {
 public:
  Error(ExitCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ExitCode code() const noexcept { return code_; }
  int exit_code() const noexcept { return static_cast<int>(code_); }

 private:
  ExitCode code_;
};

// Describes every exit code, for --help and the README.
const char* exit_code_help();

}  // namespace nbdxm
