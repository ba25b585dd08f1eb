#pragma once
// Knowing which process is which, from /proc. A pid alone names nothing for long: it is reused, and kill(pid, 0)
// succeeds on zombies. A process is identified by its pid, its start time (clock ticks after boot) and the boot it
// started in; what it is comes from its command line; that it serves a port is proven by the listening socket being
// one of its open files (a TCP connect can succeed against another program's listener).
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
  // Whether the process holds a socket listening on `port` (IPv4 or IPv6) among its open files.
  bool listening(pid_t pid, int port) const;
  // Established connections on local `port` among the process's open files; nullopt when its files cannot be read
  // (another user's process and no privilege).
  std::optional<int> connections(pid_t pid, int port) const;
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

bool owns_listener(pid_t pid, int port);  // TcpSocketTable::read().listening(pid, port)

// A pidfd: a handle on one process that a later process reusing the pid can never be mistaken for. Every signal
// nbdxm sends to a server goes through one, after the process's identity was checked.
class ProcessHandle {
 public:
  // Opens a handle on the process recorded as `identity`; nullopt when it is gone or the pid now names another
  // process.
  static std::optional<ProcessHandle> open(const ProcessIdentity& identity);

  ProcessHandle(ProcessHandle&& other) noexcept;
  ProcessHandle& operator=(ProcessHandle&& other) noexcept;
  ProcessHandle(const ProcessHandle&) = delete;
  ProcessHandle& operator=(const ProcessHandle&) = delete;
  ~ProcessHandle();

  int fd() const { return fd_; }  // readable once the process has exited (poll(2))
  const ProcessIdentity& identity() const { return identity_; }
  bool exited() const;
  bool wait_exit(std::chrono::milliseconds timeout) const;
  int signal(int signo) const;  // 0, or the errno of the failure (ESRCH: the process has exited)
  // Collects the exit of a process that has exited and is this process's child (or was inherited by it as the child
  // subreaper): its wait status (as from waitpid). nullopt for anyone else's. Through the pidfd, so that a reused
  // pid can never be collected instead.
  std::optional<int> reap() const;
  // Shuts down both directions of the process's established TCP connections on local `port`, through duplicates
  // of its sockets (pidfd_getfd), so that the process sees its clients leave and closes them its own way. Returns
  // how many, or nullopt when the kernel does not allow it (it needs ptrace access to the process).
  std::optional<int> shutdown_connections(int port) const;
  // fdatasync of every regular file and block device the process has open (through /proc/PID/fd): what it wrote
  // is on stable storage even if it is then killed.
  void sync_open_files() const;

 private:
  ProcessHandle(int fd, ProcessIdentity identity) : fd_(fd), identity_(std::move(identity)) {}
  int fd_ = -1;
  ProcessIdentity identity_;
};

}  // namespace nbdxm
