#pragma once
// ExportSupervisor: keeps one export's nbdkit server running, without ever blocking the manager's loop.
//
// start -> launching (nbdkit binds, forks, the launcher exits) -> awaiting_pid (the -P pid file names a process
// whose command line is this export's and which owns the listening socket) -> running. A server that exits or
// cannot start is restarted on the same port after a back-off (0.1 s, doubling, at most 5 s); after kMaxFailures
// failures in a row the export is marked failed with the reason.
//
// stop() acts only on the one process verified as this export's server, through a pidfd. SIGTERM alone is not
// enough: nbdkit 1.32 then stops accepting but waits for its clients to disconnect, and an idle client (the
// migration client holds one connection for a whole job) never does. So the manager also shuts down the server's
// client connections (duplicating its sockets with pidfd_getfd), every kCutInterval until it exits: nbdkit sees its
// clients leave, closes them its own way (the plugin syncs what was written) and exits. Where the kernel denies
// pidfd_getfd (a system call filter such as systemd's @system-service, or no ptrace access, e.g. Yama for a server
// adopted from an earlier manager) and the server has clients, or where it does not exit within kStopGrace, the
// manager stops it (SIGSTOP: it acknowledges nothing more), syncs every file and device it has open, and kills it:
// every write it acknowledged is on stable storage before its connections close.
//
// What it records in the store (server running, server gone, export failed) goes through StoreWrites: a store
// locked by another process delays a record, never the supervisor.
#include <poll.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "export_server.hpp"
#include "nbdxm/child_process.hpp"
#include "nbdxm/export_store.hpp"
#include "nbdxm/process_identity.hpp"
#include "store_writes.hpp"

namespace nbdxm::cli {

class ExportSupervisor {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr int kMaxFailures = 5;
  static constexpr std::chrono::seconds kLaunchTimeout{10};
  static constexpr std::chrono::seconds kPidFileTimeout{5};
  static constexpr std::chrono::seconds kStopGrace{5};
  static constexpr std::chrono::seconds kStableRun{30};  // a server that ran this long starts a new failure count

  enum class Phase { idle, launching, awaiting_pid, running, backoff, stopping, stopped, failed };

  ExportSupervisor(ServerTarget target, const ServerSettings& settings, StoreWrites& writes);
  ExportSupervisor(const ExportSupervisor&) = delete;
  ExportSupervisor& operator=(const ExportSupervisor&) = delete;

  const ServerTarget& target() const { return target_; }
  Phase phase() const { return phase_; }
  bool settled() const;   // running, stopped or failed: not on its way to one of these
  bool finished() const;  // stopped or failed: no process left and nothing more to do
  std::optional<ProcessIdentity> server() const;

  void start(Clock::time_point now);
  // A running server, verified by the caller; recorded in the store unless `as_recorded`.
  void adopt(ProcessHandle server, bool as_recorded, Clock::time_point now);
  // The store says the export is pending although its server runs (another writer set it back): once the server
  // is verified listening again, record it, which makes the export active again.
  void reactivate(Clock::time_point now);
  void stop(Clock::time_point now);
  // The manager is exiting: leave the server (and a launch in progress) running for the next manager to adopt.
  void release();

  // One non-blocking step: looks at the launcher, the pid file, the server and the deadlines.
  void advance(Clock::time_point now);
  void collect_fds(std::vector<pollfd>& fds);
  Clock::time_point next_deadline() const;  // Clock::time_point::max() when only an fd event can move it on

 private:
  void launch(Clock::time_point now);
  void on_launcher_exit(int status, Clock::time_point now);
  void check_pid_file(Clock::time_point now);
  void on_serving(ProcessHandle server, Clock::time_point now);
  void on_failure(const std::string& reason, Clock::time_point now,
                  const std::optional<ProcessIdentity>& gone = std::nullopt);
  void on_server_exit(Clock::time_point now);
  void terminate_server(Clock::time_point now);
  void kill_server(const std::string& why, Clock::time_point now);
  void close_connections(Clock::time_point now);
  bool deliver(int signo, Clock::time_point now);  // false when the server is gone or out of reach
  void record_running(Clock::time_point now);
  std::string describe() const;

  ServerTarget target_;
  const ServerSettings& settings_;
  StoreWrites& writes_;
  Phase phase_ = Phase::idle;
  std::optional<ChildProcess> launcher_;
  std::optional<ProcessHandle> server_;
  Clock::time_point deadline_ = Clock::time_point::max();
  Clock::time_point running_since_{};
  int consecutive_failures_ = 0;
  bool restarting_ = false;      // the next successful start is a restart
  bool stop_requested_ = false;  // stop once the launch in progress has produced a server
  bool killed_ = false;          // SIGKILL was sent
  Clock::time_point next_cut_{};
};

}  // namespace nbdxm::cli
