#pragma once
// DirectSupervisor: the `direct` backend, for containers, CI and demos. Each export's server is a foreground child
// of the manager (`nbdxm export-server --spec SPEC`, in a session of its own), given a listening socket the manager
// bound (SO_REUSEADDR, as nbdkit binds; a Unix-socket export's socket mode 0660, group nbdxm-clients) and keeps
// bound across restarts of the server. A server that exits is
// started again after a back-off (0.1 s, doubling, at most 5 s); after kMaxFailures failures in a row, each within
// kStableRun of its start, the backend gives up. Stopping: SIGKILL to the server's process group (nbdkit 1.32 waits
// forever for idle clients after SIGTERM), then, once it is gone, the spec's devices are synced: `stopped` is
// reported only after that. Exports do not outlive the manager: shutdown() stops every server, and a manager that
// dies takes its servers with it (`export-server --parent-pid`: a parent-death signal).
// A server's output (nbdkit's log, the plugin's refusal lines) goes to <run-dir>/servers/<instance>.log; the last
// line it wrote before it failed is part of the failure's reason.
// The manager's loop polls one fd of the backend's, an epoll set of the servers' exit fds, and a step looks only at
// the servers whose exit fd is readable, whose back-off ended or that wait for their listener: with 1,000 servers, a
// turn of the loop must not cost a system call per server.
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "nbdxm/child_process.hpp"
#include "nbdxm/file_descriptor.hpp"
#include "server_supervisor.hpp"

namespace nbdxm::supervision {

class DirectSupervisor : public ServerSupervisor {
 public:
  static constexpr int kMaxFailures = 5;
  static constexpr std::chrono::seconds kStableRun{30};

  // `server_program`: the argv prefix that runs `nbdxm export-server` (the manager's own executable).
  DirectSupervisor(ServerSettings settings, std::vector<std::string> server_program);
  ~DirectSupervisor() override;

  std::string kind() const override { return "direct"; }
  std::vector<RunningServer> adopt() override { return {}; }
  void serve(const ServerTarget& target, Clock::time_point now) override;
  void stop(const ServerTarget& target, Clock::time_point now) override;
  void replace(const ServerTarget& target, Clock::time_point now) override;
  // The servers open devices with the manager's own rights (no device cgroup of their own): nothing to narrow.
  void device_changed(const ServerTarget&, Clock::time_point) override {}
  int clients(const ServerTarget& target) const override;
  void collect_fds(std::vector<pollfd>& fds) override;
  Clock::time_point next_deadline() const override;
  std::vector<ServerEvent> advance(Clock::time_point now) override;
  void shutdown() override;

 private:
  enum class Phase { waiting_port, running, backoff, stopping };
  struct Server {
    uint64_t id = 0;  // its exit fd's key in the epoll set
    ServerTarget target;
    Phase phase = Phase::waiting_port;
    FileDescriptor socket;
    std::optional<ChildProcess> child;
    Clock::time_point deadline = Clock::time_point::max();
    Clock::time_point started{};
    int failures = 0;
    std::string last_failure;  // why it last exited unexpectedly: the reason of its restart
    bool restarting = false;   // the next start is a restart
    bool replacing = false;    // stopping only to start again with the current settings
    bool stop_wanted = false;  // stop() came while the server was waiting or backing off
  };

  Server* find(const ServerTarget& target);
  bool listener_taken(const ServerTarget& target, const Server* besides) const;
  void start(Server& server, Clock::time_point now, std::vector<ServerEvent>& events);
  bool bind_socket(Server& server, std::vector<ServerEvent>& events);
  bool bind_unix_socket(Server& server, std::vector<ServerEvent>& events);
  bool spawn(Server& server, std::string& why);
  void terminate(Server& server);
  void on_exit(Server& server, Clock::time_point now, std::vector<ServerEvent>& events);
  void finish_stop(Server& server);
  void report_stops(std::vector<ServerEvent>& events);
  void step(Server& server, Clock::time_point now, std::vector<ServerEvent>& events);
  std::vector<uint64_t> exited_servers();
  void forget(const Server& server);

  FileDescriptor exits_;  // epoll set of the running servers' exit fds, keyed by server id
  uint64_t next_id_ = 1;

  ServerSettings settings_;
  std::vector<std::string> server_program_;
  std::vector<std::unique_ptr<Server>> servers_;
  std::vector<ServerEvent> pending_;    // events of serve/stop calls, returned by the next advance()
  std::vector<ServerTarget> unsynced_;  // servers gone, whose devices the end of the next advance() syncs
};

}  // namespace nbdxm::supervision
