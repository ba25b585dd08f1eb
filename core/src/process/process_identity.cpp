#include "nbdxm/process_identity.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <iterator>
#include <sstream>

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

int unix_socket_connections(const std::string& path) {
  constexpr int kConnected = 3;  // SS_CONNECTED
  std::istringstream in(read_small_file("/proc/net/unix").value_or(""));
  std::string line;
  std::getline(in, line);  // header
  int count = 0;
  while (std::getline(in, line)) {
    // Num RefCount Protocol Flags Type St Inode Path
    std::istringstream fields(line);
    std::string num, refs, protocol, flags, type, state, inode, socket_path;
    if (!(fields >> num >> refs >> protocol >> flags >> type >> state >> inode >> socket_path)) continue;
    if (socket_path == path && parse_number<int>(state, 16) == kConnected) ++count;
  }
  return count;
}

std::vector<uint64_t> TcpSocketTable::connection_inodes(int port) const {
  constexpr int kEstablished = 1;
  std::vector<uint64_t> inodes;
  for (const auto& s : sockets_) {
    if (s.state == kEstablished && s.local_port == port) inodes.push_back(s.inode);
  }
  return inodes;
}

}  // namespace nbdxm
