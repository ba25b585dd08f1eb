#include "nbdxm/process_identity.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
// glibc 2.36's <sys/pidfd.h> lacks the C++ linkage guard.
extern "C" {
#include <sys/pidfd.h>
}

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <utility>

namespace nbdxm {
namespace {

// Reads a /proc file with plain read(2): a process can exit while its files are read (ESRCH), which is an answer
// (no such process), not an exception.
std::optional<std::string> read_small_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string content;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n > 0) {
      content.append(buffer, static_cast<size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      ::close(fd);
      if (n < 0) return std::nullopt;
      return content;
    }
  }
}

template <typename T>
std::optional<T> parse_number(std::string_view text, int base = 10) {
  T value{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, base);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// The socket inodes among a process's open files, by fd number; nullopt when its fd directory cannot be read.
std::optional<std::map<uint64_t, int>> socket_fds(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return std::nullopt;
  std::map<uint64_t, int> sockets;
  while (const dirent* entry = readdir(d)) {
    const auto fd = parse_number<int>(entry->d_name);
    if (!fd) continue;
    char target[64];
    const std::string link = dir + "/" + entry->d_name;
    const ssize_t n = readlink(link.c_str(), target, sizeof target - 1);
    if (n <= 0) continue;
    const std::string_view t(target, static_cast<size_t>(n));
    constexpr std::string_view prefix = "socket:[";
    if (!t.starts_with(prefix) || !t.ends_with("]")) continue;
    if (auto inode = parse_number<uint64_t>(t.substr(prefix.size(), t.size() - prefix.size() - 1))) {
      sockets.emplace(*inode, *fd);
    }
  }
  closedir(d);
  return sockets;
}

std::optional<std::set<uint64_t>> socket_inodes(pid_t pid) {
  auto sockets = socket_fds(pid);
  if (!sockets) return std::nullopt;
  std::set<uint64_t> inodes;
  for (const auto& [inode, fd] : *sockets) inodes.insert(inode);
  return inodes;
}

}  // namespace

std::optional<ProcessStatus> read_process_status(pid_t pid) {
  const auto stat = read_small_file("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return std::nullopt;
  // The command name in field 2 is in parentheses and may itself contain spaces and parentheses.
  const auto close = stat->rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(stat->substr(close + 1));
  std::vector<std::string> f{std::istream_iterator<std::string>(fields), std::istream_iterator<std::string>()};
  // f[0] is field 3 (state), f[1] field 4 (ppid), f[3] field 6 (session), f[19] field 22 (starttime).
  if (f.size() < 20 || f[0].size() != 1) return std::nullopt;
  auto ppid = parse_number<pid_t>(f[1]);
  auto session = parse_number<pid_t>(f[3]);
  auto start = parse_number<uint64_t>(f[19]);
  if (!ppid || !session || !start) return std::nullopt;
  return ProcessStatus{f[0][0], *ppid, *session, *start};
}

const std::string& current_boot_id() {
  static const std::string boot_id = [] {
    auto id = read_small_file("/proc/sys/kernel/random/boot_id").value_or("");
    while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
    return id;
  }();
  return boot_id;
}

std::optional<ProcessIdentity> identify_process(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  const auto status = read_process_status(pid);
  if (!status || status->state == 'Z' || status->state == 'X') return std::nullopt;
  return ProcessIdentity{pid, status->start_time, current_boot_id()};
}

bool still_running(const ProcessIdentity& identity) {
  const auto now = identify_process(identity.pid);
  return now && *now == identity;
}

std::vector<std::string> read_cmdline(pid_t pid) {
  const auto raw = read_small_file("/proc/" + std::to_string(pid) + "/cmdline");
  std::vector<std::string> argv;
  if (!raw) return argv;
  size_t start = 0;
  while (start < raw->size()) {
    const size_t end = raw->find('\0', start);
    if (end == std::string::npos) {
      argv.push_back(raw->substr(start));
      break;
    }
    argv.push_back(raw->substr(start, end - start));
    start = end + 1;
  }
  return argv;
}

std::vector<pid_t> list_processes() {
  std::vector<pid_t> pids;
  DIR* d = opendir("/proc");
  if (d == nullptr) return pids;
  while (const dirent* entry = readdir(d)) {
    if (auto pid = parse_number<pid_t>(entry->d_name)) pids.push_back(*pid);
  }
  closedir(d);
  std::sort(pids.begin(), pids.end());
  return pids;
}

TcpSocketTable TcpSocketTable::read() {
  TcpSocketTable table;
  for (const char* path : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::istringstream in(read_small_file(path).value_or(""));
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
      std::istringstream fields(line);
      std::string sl, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
      if (!(fields >> sl >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> inode)) {
        continue;
      }
      const auto colon = local.rfind(':');
      if (colon == std::string::npos) continue;
      auto port = parse_number<int>(std::string_view(local).substr(colon + 1), 16);
      auto st = parse_number<int>(state, 16);
      auto ino = parse_number<uint64_t>(inode);
      if (port && st && ino && *ino != 0) table.sockets_.push_back({*port, *st, *ino});
    }
  }
  return table;
}

bool TcpSocketTable::listening(pid_t pid, int port) const {
  constexpr int kListen = 10;
  const auto inodes = socket_inodes(pid);
  if (!inodes) return false;
  return std::any_of(sockets_.begin(), sockets_.end(), [&](const Socket& s) {
    return s.state == kListen && s.local_port == port && inodes->contains(s.inode);
  });
}

std::optional<int> TcpSocketTable::connections(pid_t pid, int port) const {
  constexpr int kEstablished = 1;
  const auto inodes = socket_inodes(pid);
  if (!inodes) return std::nullopt;
  return static_cast<int>(std::count_if(sockets_.begin(), sockets_.end(), [&](const Socket& s) {
    return s.state == kEstablished && s.local_port == port && inodes->contains(s.inode);
  }));
}

std::vector<uint64_t> TcpSocketTable::connection_inodes(int port) const {
  constexpr int kEstablished = 1;
  std::vector<uint64_t> inodes;
  for (const auto& s : sockets_) {
    if (s.state == kEstablished && s.local_port == port) inodes.push_back(s.inode);
  }
  return inodes;
}

bool owns_listener(pid_t pid, int port) { return TcpSocketTable::read().listening(pid, port); }

std::optional<ProcessHandle> ProcessHandle::open(const ProcessIdentity& identity) {
  if (identity.pid <= 0 || identity.boot_id != current_boot_id()) return std::nullopt;
  // Open first, then check: if the pid was reused before pidfd_open, the start time no longer matches.
  const int fd = pidfd_open(identity.pid, 0);
  if (fd < 0) return std::nullopt;
  ProcessHandle handle(fd, identity);
  if (!still_running(identity)) return std::nullopt;
  return handle;
}

ProcessHandle::ProcessHandle(ProcessHandle&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), identity_(std::move(other.identity_)) {}

ProcessHandle& ProcessHandle::operator=(ProcessHandle&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    identity_ = std::move(other.identity_);
  }
  return *this;
}

ProcessHandle::~ProcessHandle() {
  if (fd_ >= 0) ::close(fd_);
}

bool ProcessHandle::exited() const { return wait_exit(std::chrono::milliseconds(0)); }

bool ProcessHandle::wait_exit(std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    pollfd p{fd_, POLLIN, 0};
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    const int rc = ::poll(&p, 1, static_cast<int>(std::clamp<int64_t>(left.count(), 0, 60'000)));
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) return true;  // an unusable handle counts as gone: never signal it
    if (rc == 0 && std::chrono::steady_clock::now() >= deadline) return false;
  }
}

int ProcessHandle::signal(int signo) const { return pidfd_send_signal(fd_, signo, nullptr, 0) == 0 ? 0 : errno; }

std::optional<int> ProcessHandle::reap() const {
  siginfo_t info{};
  if (::waitid(P_PIDFD, static_cast<id_t>(fd_), &info, WEXITED | WNOHANG) != 0 || info.si_pid == 0) return std::nullopt;
  return info.si_code == CLD_EXITED ? W_EXITCODE(info.si_status, 0) : W_EXITCODE(0, info.si_status);
}

std::optional<int> ProcessHandle::shutdown_connections(int port) const {
  const auto sockets = socket_fds(identity_.pid);
  if (!sockets) return std::nullopt;
  int count = 0;
  for (uint64_t inode : TcpSocketTable::read().connection_inodes(port)) {
    const auto found = sockets->find(inode);
    if (found == sockets->end()) continue;
    const int copy = pidfd_getfd(fd_, found->second, 0);
    if (copy < 0) {
      if (errno == EBADF) continue;  // closed meanwhile
      return std::nullopt;           // EPERM (no ptrace access, or a seccomp filter) or ENOSYS
    }
    // The socket is shared with the process: shutting it down here ends the connection there too.
    ::shutdown(copy, SHUT_RDWR);
    ::close(copy);
    ++count;
  }
  return count;
}

void ProcessHandle::sync_open_files() const {
  const std::string dir = "/proc/" + std::to_string(identity_.pid) + "/fd";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return;
  while (const dirent* entry = readdir(d)) {
    if (entry->d_name[0] == '.') continue;
    const std::string path = dir + "/" + entry->d_name;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) continue;
    // Reopening through /proc reaches the very file or device the process has open; any descriptor of it will do
    // for fdatasync.
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) continue;
    ::fdatasync(fd);
    ::close(fd);
  }
  closedir(d);
}

}  // namespace nbdxm
