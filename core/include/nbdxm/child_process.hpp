#pragma once
// The single process-spawning helper of nbdxm (manager, tests and benchmarks all use it).
// ChildProcess owns a child: unless released, its destructor stops it (SIGTERM, then SIGKILL) and reaps it.
#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace nbdxm {

struct SpawnOptions {
  std::vector<std::string> argv;           // argv[0] is looked up in PATH when it has no slash
  std::vector<std::string> extra_env;      // "NAME=value" added to the current environment
  std::optional<std::string> stdout_path;  // appended to; default: inherited
  std::optional<std::string> stderr_path;  // appended to; default: inherited
  bool new_session = false;                // setsid(): not in the parent's process group or terminal session
  std::vector<std::string> unset_env;      // names removed from the environment the child gets
  bool close_other_fds = false;            // close every fd above 2 in the child, inheritable or not
  int listen_fd = -1;  // given to the child as fd 3 (socket activation, LISTEN_FDS=1); kept by close_other_fds
};

class ChildProcess {
 public:
  static ChildProcess spawn(const SpawnOptions& options);  // throws Error naming the program on failure

  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  // A pidfd for the child, readable (poll(2)) once it has exited; owned by this object; -1 once released.
  int exit_fd();
  bool running();  // reaps the child if it has exited
  // Waits for the child to exit and returns its wait status (as from waitpid), or nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout = std::chrono::milliseconds::max());
  // Sends SIGTERM, waits up to grace, then SIGKILL; returns the wait status.
  int stop(std::chrono::milliseconds grace = std::chrono::seconds(5));
  // Gives up ownership: the destructor will neither stop nor reap the child.
  pid_t release();

 private:
  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  void close_exit_fd();
  pid_t pid_ = -1;
  std::optional<int> status_;
  int exit_fd_ = -1;
};

// Runs a program to completion and returns its exit code (128+signal if killed); output goes to the given paths.
int run_to_completion(const SpawnOptions& options,
                      std::chrono::milliseconds timeout = std::chrono::milliseconds::max());

}  // namespace nbdxm
