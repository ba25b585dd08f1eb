#pragma once
// Knowing which process is which, from /proc, for the manager's registration (one manager per store). A pid alone
// names nothing for long: it is reused, and kill(pid, 0) succeeds on zombies. A process is identified by its pid,
// its start time (clock ticks after boot) and the boot it started in. Export servers are not identified this way:
// their supervisor backend (systemd, or the manager as their parent) knows them.
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "nbdxm/records.hpp"  // ProcessIdentity

namespace nbdxm {

struct ProcessStatus {
  char state = '?';  // R, S, D, Z, ...
  pid_t ppid = 0;
  pid_t session = 0;
  uint64_t start_time = 0;
};

std::optional<ProcessStatus> read_process_status(pid_t pid);  // nullopt when there is no such process
// The identity of a live (not zombie) process, or nullopt.
std::optional<ProcessIdentity> identify_process(pid_t pid);
// True while the process recorded as `identity` exists and has not exited.
bool still_running(const ProcessIdentity& identity);
// argv of a process; empty when it is gone, a zombie or a kernel thread.
std::vector<std::string> read_cmdline(pid_t pid);
std::vector<pid_t> list_processes();
const std::string& current_boot_id();

// The TCP sockets of this network namespace (/proc/net/tcp and tcp6) at one moment, to match them to processes.
class TcpSocketTable {
 public:
  static TcpSocketTable read();
  // Inodes of the established connections on local `port` (any process).
  std::vector<uint64_t> connection_inodes(int port) const;

 private:
  struct Socket {
    int local_port;
    int state;  // as in the kernel's tcp_states.h: 1 established, 10 listen
    uint64_t inode;
  };
  std::vector<Socket> sockets_;
};

// The connected sockets accepted on the Unix socket `path` (/proc/net/unix: a server's accepted sockets carry the
// path they were accepted on), any process: a Unix-socket export's clients.
int unix_socket_connections(const std::string& path);

}  // namespace nbdxm
