#pragma once
// SystemdSupervisor: the `systemd` backend. Each export's server is an instance of the installed template units
// nbdxm-export@.socket and nbdxm-export@.service, the instance being the server's listen address and port
// (server_instance, unit-escaped). systemd binds the port (the socket unit), hands it to the server, restarts a
// server that ends unexpectedly (Restart=, start rate limits), and on a stop kills the server (KillSignal=SIGKILL,
// no stop command: a unit's stop costs systemd little); once both units are inactive the manager syncs every device
// of the server's spec, and only then reports the stop. The units outlive the manager; a new manager adopts them by
// listing them and reading their spec files, and syncs the devices of the specs of units stopped while no manager
// ran.
//
// Everything the backend learns comes from systemd's signals (Subscribe: JobRemoved, the units' PropertiesChanged),
// dispatched from the manager's poll loop: no polling. After a signal, the backend reads the state of the units it
// concerns and reports what changed:
// - serving: the service is active after the start (or the adopted unit is);
// - port_unavailable: the socket unit failed with result `resources` (systemd could not bind the port);
// - restarted: the service's NRestarts grew;
// - gave_up: the service or its socket ended failed (start rate limit hit, or the start itself failed), or the units
//   were stopped by someone else;
// - stopped: after stop(), both units are inactive and every device of the server's spec is synced (the devices of
//   all servers stopped in one advance() side by side).
//
// A server's unit may open its export's current device alone (DevicePolicy=closed in the template, DeviceAllow= set
// at each start and by device_changed() when the mapping moves), so a server never reaches another export's volume,
// nor the appliance's own disks; an export of a regular file (allow-regular-files) may open no device at all.
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "server_supervisor.hpp"
#include "systemd_bus.hpp"

namespace nbdxm::supervision {

class SystemdSupervisor : public ServerSupervisor {
 public:
  // The run directory the installed units name (their ExecStart= reads /run/nbdxm/servers/INSTANCE.json).
  static constexpr const char* kRunDir = "/run/nbdxm";
  static constexpr std::chrono::seconds kRetryAfter{1};
  // Stop calls awaiting systemd's reply at a time: the system bus lets a connection await 128 replies
  // (dbus-daemon's max_replies_per_connection) and refuses more calls; the rest wait in a queue.
  static constexpr int kStopCallsInFlight = 64;
  // Reads of NRestarts awaiting their reply at a time (adoption), beside the stop calls: within the same 128.
  static constexpr int kReadsInFlight = 32;
  // The package's polkit rule, which lets user nbdxm manage its export units (and no others).
  static constexpr const char* kPolkitRule = "/usr/share/polkit-1/rules.d/50-nbdxm.rules";

  // Subscribes to systemd's signals. Throws BusError.
  SystemdSupervisor(ServerSettings settings, std::unique_ptr<SystemdBus> bus);

  // systemd's unit-name escaping of an instance (systemd-escape), and its reverse.
  static std::string escape_instance(const std::string& instance);
  static std::string unescape_instance(const std::string& escaped);
  static std::string service_unit(const std::string& instance);  // nbdxm-export@ESCAPED.service
  static std::string socket_unit(const std::string& instance);   // nbdxm-export@ESCAPED.socket

  std::string kind() const override { return "systemd"; }
  std::vector<RunningServer> adopt() override;
  void serve(const ServerTarget& target, Clock::time_point now) override;
  void stop(const ServerTarget& target, Clock::time_point now) override;
  void replace(const ServerTarget& target, Clock::time_point now) override;
  void device_changed(const ServerTarget& target, Clock::time_point now) override;
  int clients(const ServerTarget& target) const override;
  void collect_fds(std::vector<pollfd>& fds) override;
  Clock::time_point next_deadline() const override;
  std::vector<ServerEvent> advance(Clock::time_point now) override;
  void shutdown() override {}  // the units stay, for the next manager

 private:
  enum class Phase {
    adopted,   // found running when the manager started; serve() takes it over
    waiting,   // its instance is still held by a server being stopped
    starting,  // StartUnit/RestartUnit sent
    serving,
    stopping,  // StopUnit sent; then `stopped`, or a start under the new instance (replace)
    failed,    // gave_up reported; nothing more until stop()
  };
  enum class Action { none, stop };  // what to send again after a refused call (else: read the state again)
  struct Server {
    uint64_t id = 0;  // names it to a call's reply, which may come after it is forgotten
    ServerTarget target;
    std::string instance;  // of the units running (or to run) for it
    Phase phase = Phase::waiting;
    std::vector<std::string> jobs;  // pending jobs of ours (object paths): state is read once they are done
    int calls = 0;                  // stop calls queued or sent whose reply (the job, or a refusal) has not come yet
    bool service_stopped = false;   // stopping: the service itself was stopped (it ran without its socket)
    bool dirty = false;             // a signal concerned its units: read their state
    bool restart_instead = false;   // starting: RestartUnit (replace with the instance unchanged)
    bool start_after_stop = false;  // stopping only to start under `next_instance` (replace)
    std::string next_instance;
    bool gave_up = false;           // gave_up was reported for it
    bool unknown = false;           // found running without a readable spec: stopped, its target unknown
    uint32_t restarts = 0;          // NRestarts when last seen
    bool restarts_unknown = false;  // its read failed: the next evaluation takes the count as it is then
    bool listed_serving = false;    // adopted: the listing showed its service and socket active
    std::string last_exit;          // how the server last ended, seen while systemd waited to restart it
    Action retry = Action::none;
    bool device_retry = false;  // device_changed() is to be tried again at retry_at
    Clock::time_point retry_at = Clock::time_point::max();
  };

  std::unique_ptr<Server> make_server();
  // The target's server not stopping, else (or_stopping) one stopping, else nullptr.
  Server* find(const ServerTarget& target, bool or_stopping = false);
  bool instance_held(const std::string& instance, const Server* besides) const;
  void begin_start(Server& server, Clock::time_point now);
  void begin_stop(Server& server, Clock::time_point now);
  void send_stop(Server& server, const std::string& unit, Clock::time_point now);
  void send_queued_stops(Clock::time_point now);
  Server* by_id(uint64_t id);
  void on_stop_reply(uint64_t id, const std::string& job, const BusError* error);
  void retry_stop(Server& server, const BusError& error, Clock::time_point now);
  void read_restarts(Server& server);
  void send_queued_reads();
  void on_restarts_reply(uint64_t id, uint32_t restarts, const BusError* error);
  void evaluate(Server& server, Clock::time_point now);
  void evaluate_starting(Server& server, const UnitState& service, const UnitState& socket);
  void evaluate_serving(Server& server, const UnitState& service, const UnitState& socket);
  void evaluate_stopping(Server& server, const UnitState& service, const UnitState& socket, Clock::time_point now);
  void give_up(Server& server, const std::string& reason);
  void event(ServerEvent::Kind kind, const Server& server, std::string reason);
  void on_job_removed(const std::string& job);
  void on_unit_changed(const std::string& unit_path);
  void forget(const Server& server);
  std::vector<UnitProperty> device_allow(const Server& server) const;
  void report_stops();
  // At the start: the devices of the specs of units not running (live: escaped instance -> service unit).
  void sync_stopped_units(const std::map<std::string, std::string>& live) const;
  void remove_spec(const std::string& instance, const ServerTarget& target) const;

  ServerSettings settings_;
  std::unique_ptr<SystemdBus> bus_;
  std::vector<std::unique_ptr<Server>> servers_;
  std::vector<ServerEvent> events_;  // returned by the next advance()
  // A server whose units stopped: `stopped` is reported once its spec's devices are synced (report_stops).
  struct StoppedServer {
    ServerTarget target;
    std::string instance;
    std::string reason;
  };
  std::vector<StoppedServer> unsynced_;
  bool wake_ = false;  // advance() has work without a signal (serve/stop calls, retries)
  uint64_t next_id_ = 1;
  std::deque<std::pair<uint64_t, std::string>> queued_stops_;  // server id, unit: sent as replies come
  int stops_in_flight_ = 0;
  std::deque<std::pair<uint64_t, std::string>> queued_reads_;  // server id, service unit: NRestarts to read
  int reads_in_flight_ = 0;
};

// The backend where it can run: PID 1 is systemd and the system bus answers, and the run directory is the units'.
// Throws Error(usage) naming what is missing and the fix (--supervisor direct). Then asks systemd whether this
// process may manage its export units, at start rather than at each export's first start: throws
// Error(unavailable) naming the missing right (or the missing template units) and the fix.
std::unique_ptr<ServerSupervisor> make_systemd_supervisor(const ServerSettings& settings, int first_port);
// Whether PID 1 is systemd (/run/systemd/system exists) and systemd answers on the system bus.
bool systemd_available();

}  // namespace nbdxm::supervision
