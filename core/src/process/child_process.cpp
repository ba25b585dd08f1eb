#include "nbdxm/child_process.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
// glibc 2.36's <sys/pidfd.h> lacks the C++ linkage guard.
extern "C" {
#include <sys/pidfd.h>
}

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <thread>

#include "nbdxm/error.hpp"

extern char** environ;

namespace nbdxm {
namespace {

class SpawnFileActions {
 public:
  SpawnFileActions() { posix_spawn_file_actions_init(&actions_); }
  ~SpawnFileActions() { posix_spawn_file_actions_destroy(&actions_); }
  SpawnFileActions(const SpawnFileActions&) = delete;
  SpawnFileActions& operator=(const SpawnFileActions&) = delete;
  void redirect(int fd, const std::optional<std::string>& path) {
    if (path) posix_spawn_file_actions_addopen(&actions_, fd, path->c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  }
  // A long-lived child (a daemon) must not keep the parent's other files, such as a test runner's pipes, open.
  void close_from(int lowest) { posix_spawn_file_actions_addclosefrom_np(&actions_, lowest); }
  // dup2 to the same number clears close-on-exec (glibc, as POSIX 2018 asks).
  void give(int fd, int as) { posix_spawn_file_actions_adddup2(&actions_, fd, as); }
  posix_spawn_file_actions_t* get() { return &actions_; }

 private:
  posix_spawn_file_actions_t actions_;
};

class SpawnAttributes {
 public:
  explicit SpawnAttributes(bool new_session) {
    posix_spawnattr_init(&attr_);
    // The child starts with default signal handling and an empty mask, whatever the parent blocked.
    sigset_t none;
    sigemptyset(&none);
    sigset_t all;
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr_, &none);
    posix_spawnattr_setsigdefault(&attr_, &all);
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
    if (new_session) flags |= POSIX_SPAWN_SETSID;
    posix_spawnattr_setflags(&attr_, flags);
  }
  ~SpawnAttributes() { posix_spawnattr_destroy(&attr_); }
  SpawnAttributes(const SpawnAttributes&) = delete;
  SpawnAttributes& operator=(const SpawnAttributes&) = delete;
  posix_spawnattr_t* get() { return &attr_; }

 private:
  posix_spawnattr_t attr_;
};

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> result;
  for (auto& s : strings) result.push_back(s.data());
  result.push_back(nullptr);
  return result;
}

}  // namespace

ChildProcess ChildProcess::spawn(const SpawnOptions& options) {
  if (options.argv.empty()) throw Error(ExitCode::failure, "spawn: no program given");
  std::vector<std::string> argv = options.argv;
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const auto name = entry.substr(0, entry.find('='));
    if (std::find(options.unset_env.begin(), options.unset_env.end(), name) == options.unset_env.end()) {
      env.emplace_back(entry);
    }
  }
  env.insert(env.end(), options.extra_env.begin(), options.extra_env.end());
  auto argv_c = c_strings(argv);
  auto env_c = c_strings(env);

  SpawnFileActions actions;
  actions.redirect(STDOUT_FILENO, options.stdout_path);
  actions.redirect(STDERR_FILENO, options.stderr_path);
  constexpr int kListenFd = 3;  // SD_LISTEN_FDS_START
  if (options.listen_fd >= 0) actions.give(options.listen_fd, kListenFd);
  if (options.close_other_fds) actions.close_from(options.listen_fd >= 0 ? kListenFd + 1 : STDERR_FILENO + 1);
  SpawnAttributes attributes(options.new_session);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, argv_c[0], actions.get(), attributes.get(), argv_c.data(), env_c.data());
  if (rc != 0) {
    throw Error(ExitCode::failure, fmt::format("cannot start {}: {}", options.argv[0], std::strerror(rc)));
  }
  return ChildProcess(pid);
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(other.pid_), status_(other.status_), exit_fd_(other.exit_fd_) {
  other.pid_ = -1;
  other.exit_fd_ = -1;
}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0 && !status_) stop();
    close_exit_fd();
    pid_ = other.pid_;
    status_ = other.status_;
    exit_fd_ = other.exit_fd_;
    other.pid_ = -1;
    other.exit_fd_ = -1;
  }
  return *this;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !status_) stop();
  close_exit_fd();
}

int ChildProcess::exit_fd() {
  // Safe from pid reuse: an unreaped child's pid cannot be given to another process.
  if (exit_fd_ < 0 && pid_ > 0 && !status_) exit_fd_ = pidfd_open(pid_, 0);
  return exit_fd_;
}

void ChildProcess::close_exit_fd() {
  if (exit_fd_ >= 0) ::close(exit_fd_);
  exit_fd_ = -1;
}

bool ChildProcess::running() {
  if (pid_ <= 0 || status_) return false;
  int status = 0;
  const pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) status_ = status;
  return !status_;
}

std::optional<int> ChildProcess::wait(std::chrono::milliseconds timeout) {
  if (status_ || pid_ <= 0) return status_;
  if (timeout == std::chrono::milliseconds::max()) {
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    status_ = status;
    return status_;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return status_;
}

int ChildProcess::stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0) return 0;
  if (running()) {
    ::kill(pid_, SIGTERM);
    if (!wait(grace)) {
      ::kill(pid_, SIGKILL);
      wait();
    }
  }
  return status_.value_or(0);
}

pid_t ChildProcess::release() {
  const pid_t pid = pid_;
  pid_ = -1;
  close_exit_fd();
  return pid;
}

int run_to_completion(const SpawnOptions& options, std::chrono::milliseconds timeout) {
  auto child = ChildProcess::spawn(options);
  auto status = child.wait(timeout);
  if (!status) status = child.stop();
  if (WIFEXITED(*status)) return WEXITSTATUS(*status);
  if (WIFSIGNALED(*status)) return 128 + WTERMSIG(*status);
  return 1;
}

}  // namespace nbdxm
