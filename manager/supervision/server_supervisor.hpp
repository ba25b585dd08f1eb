#pragma once
// ServerSupervisor: how `nbdxm serve` keeps one nbdkit server per live export running. The reconciler decides which
// exports must be served (serve) and which no longer (stop); a backend runs the servers and reports what happened to
// them as events. The reconciler never learns which backend runs, and no backend reads or writes the store.
//
// Backends:
// - systemd (systemd_supervisor.*): each export's server is a systemd socket + service unit pair. systemd binds the
//   export's port and hands it to nbdkit (socket activation), restarts a server that exits, and keeps the units (and
//   their clients) when the manager stops, crashes or is upgraded; a new manager adopts them by listing them.
// - direct (direct_supervisor.*): each server is a foreground child of the manager, given a socket the manager bound;
//   restarted with back-off; stopped (and its device synced) with the manager. Exports do not outlive the manager.
//
// Both start the same program with the same arguments (server_command.hpp), and both report `stopped` only once
// every write the server acknowledged is on stable storage (the export's device synced after the server is gone).
#include <poll.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace nbdxm::supervision {

// What every export server of one manager gets (the settings of `nbdxm serve`).
struct ServerSettings {
  std::string nbdkit;
  std::string plugin;
  std::string db_path;  // absolute: servers run with / as their working directory
  std::string listen_address;
  std::string run_dir;
  bool allow_regular_files = false;
  bool allow_uncorrelated = false;  // serve mappings without device correlation (tests, demos)
  std::string byid_dir;
  int max_connections = 16;
  int server_threads = 4;  // nbdkit -t
  // Limits of each export's unit (systemd backend): TasksMax= and MemoryMax= (bytes).
  uint64_t tasks_max = 0;
  uint64_t memory_max = 0;
  // Who may reach the export: its own, from the export's row (`export create --tls`, `--allow-from`).
  bool tls = false;        // TLS required, with the export's pre-shared key (tls_psk_path)
  std::string allow_from;  // canonical CIDRs, comma-separated (the plugin's allow-from=); empty: any client
  bool shared = false;     // the shared server: every shared export by name (the plugin's shared=true)
  bool operator==(const ServerSettings&) const = default;
};

// Whether a server started with `running` must be replaced at once under `wanted` because the change narrows who
// or what it serves (listen address changed, allow-regular-files or allow-uncorrelated turned off, a lower connection
// limit, TLS turned on, an allowlist set or changed other than by adding networks); any other difference waits until
// the server has no client.
bool narrows_access(const ServerSettings& running, const ServerSettings& wanted);

// The export a server is for. A different name, port or socket is a different server, and so is a re-used row
// (`export create` resets created_at): its clients must not be those of the old server. A TCP export's server
// listens on `port` (at the manager's listen address); a Unix-socket export's on `socket` (port 0).
struct ServerTarget {
  int64_t export_id = 0;
  std::string export_name;
  int port = 0;
  std::string created_at;
  std::string socket;   // <run-dir>/exports/<name>.sock for a unix export (unix_socket_path); empty for tcp
  std::string address;  // a TCP listener's address when it is not the manager's (the shared listener's)
  bool operator==(const ServerTarget&) const = default;
};

// The manager's shared server (`nbdxm serve --shared-listener`, `--shared-socket`) is run as a target of no export:
// export_id 0, this name.
inline constexpr const char* kSharedServerName = "(shared)";

// The group whose members may connect to Unix-socket exports (the package creates it).
inline constexpr const char* kClientsGroup = "nbdxm-clients";

// A server a backend found running when the manager started (adoption).
struct RunningServer {
  ServerTarget target;
  ServerSettings settings;  // what it was started with
  std::string unit;         // the systemd unit's name; empty for the direct backend
  std::string device;       // its spec's current device (what its unit may open)
};

// What happened to a server, for the reconciler to record in the store.
struct ServerEvent {
  enum class Kind {
    serving,           // the port is bound and the server answers (or is ready to be activated by a connect)
    port_unavailable,  // the port cannot be bound (another program holds it): the export needs another port
    restarted,         // the server exited unexpectedly and was started again on the same, still bound, port
    gave_up,           // the server keeps failing: the export must be marked failed with `reason`
    stopped,           // after stop(): no process left, every acknowledged write is on the device
  };
  Kind kind;
  ServerTarget target;
  std::string reason;  // for port_unavailable, restarted, gave_up: one line, from the server's or systemd's words
  std::string unit;    // the systemd unit's name (serving); empty for the direct backend
};

class ServerSupervisor {
 public:
  using Clock = std::chrono::steady_clock;
  virtual ~ServerSupervisor() = default;

  virtual std::string kind() const = 0;  // "systemd" or "direct"

  // The servers running for this store when the manager starts (the systemd backend lists its units; the direct
  // backend has none). Called once, before any serve().
  virtual std::vector<RunningServer> adopt() = 0;
  // Serve the export: start its server, or take over an adopted one (same target). Outcome arrives as an event.
  virtual void serve(const ServerTarget& target, Clock::time_point now) = 0;
  // Stop the export's server; `stopped` follows once it is gone and its device synced.
  virtual void stop(const ServerTarget& target, Clock::time_point now) = 0;
  // Stop and start the export's server with the current settings (settings changed); its port stays bound.
  virtual void replace(const ServerTarget& target, Clock::time_point now) = 0;
  // The export's device changed (its spec names the new one, `device`): the systemd backend lets the server's unit
  // open that device alone from now on (DeviceAllow=); a connect before that is refused (the plugin cannot open the
  // device), never served from the old one. The direct backend's servers share the manager's device access: nothing
  // to do.
  virtual void device_changed(const ServerTarget& target, Clock::time_point now) = 0;
  // How many clients the export's server has now (from the kernel's socket tables).
  virtual int clients(const ServerTarget& target) const = 0;

  // The manager's loop: the fds to poll and the next deadline, then one non-blocking step returning what happened.
  virtual void collect_fds(std::vector<pollfd>& fds) = 0;
  virtual Clock::time_point next_deadline() const = 0;
  virtual std::vector<ServerEvent> advance(Clock::time_point now) = 0;

  // The manager is exiting. systemd: leaves every unit running, for the next manager to adopt. direct: stops every
  // server and syncs its device before returning.
  virtual void shutdown() = 0;
};

enum class SupervisorKind { automatic, systemd, direct };

// `auto` picks systemd where PID 1 is systemd and the system bus answers, and direct otherwise. Throws Error(usage)
// when `systemd` is asked for where it cannot run, naming why and the fix (--supervisor direct), and
// Error(unavailable) when systemd runs but the manager may not manage its export units (first_port: the first port
// of its range, whose unit is the one asked about).
std::unique_ptr<ServerSupervisor> make_supervisor(SupervisorKind kind, const ServerSettings& settings, int first_port);

}  // namespace nbdxm::supervision
