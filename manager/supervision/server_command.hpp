#pragma once
// How an export server is started, the same way under both backends: the program run is `nbdxm export-server --spec
// SPEC`, which reads the server spec file and execs nbdkit with server_argv() in the foreground, its listening socket
// handed over as fd 3 (socket activation: LISTEN_FDS=1, see `man nbdkit-service`). The spec file is the one place
// that says what a server serves; it lives in <run-dir>/servers/<instance>.json, the instance being the listen
// address and port (`127.0.0.1:10810`, `[::1]:10810`), which is also the systemd unit's instance.
//
// The spec also lists `devices`: every device path the export was mapped to while the spec existed, and `device`,
// the one it is mapped to now (under systemd the only device the server's unit may open: DeviceAllow=). After a
// server is gone its devices are synced, so that every write the server acknowledged is on stable storage even when
// the export's rows have been deleted from the store since: by the manager, in process, under both backends, before
// it reports the stop (under systemd, for a unit stopped while no manager ran, at its next start; for the units a
// package removal stops, by the package's prerm with `nbdxm-sync-devices --spec SPEC`).
#include <string>
#include <vector>

#include "nbdxm/device_sync.hpp"
#include "server_supervisor.hpp"

namespace nbdxm::supervision {

// An export life the shared server serves from one of its spec's devices (one entry per life and device).
struct SpecLife {
  int64_t export_id = 0;
  std::string created_at;
  std::string export_name;
  std::string device;
  bool operator==(const SpecLife&) const = default;
};

struct ServerSpec {
  ServerSettings settings;
  ServerTarget target;
  std::vector<std::string> devices;
  std::string device;  // the current one (among `devices`); empty in a spec of an earlier nbdxm
  // The shared server's spec only (its own target is no export life): which lives each device serves, so that a
  // failed sync of a device is charged to them.
  std::vector<SpecLife> lives = {};
  bool operator==(const ServerSpec&) const = default;
};

// nbdkit's argv for the target: foreground, logging to stderr, -t server_threads, the limit filter, no pid file and
// no port (the socket is passed).
std::vector<std::string> server_argv(const ServerSettings& settings, const ServerTarget& target);
// `127.0.0.1:10810`, or `[::1]:10810` for an IPv6 listen address; a Unix-socket export's socket path (the socket
// unit's ListenStream=%I takes either).
std::string server_instance(const ServerSettings& settings, const ServerTarget& target);
// The address a TCP server of the target listens at: the target's own (the shared listener's), else the manager's.
const std::string& listen_address_of(const ServerSettings& settings, const ServerTarget& target);
// Where a Unix-socket export's server listens: <run-dir>/exports/<name>.sock.
std::string unix_socket_path(const std::string& run_dir, const std::string& export_name);
// "port 10810" or "socket /run/nbdxm/exports/NAME.sock", for log lines.
std::string listener_of(const ServerTarget& target);
// The clients the target's server has now (the kernel's TCP or Unix socket table).
int server_clients(const ServerTarget& target);
std::string server_spec_dir(const std::string& run_dir);
// <run-dir>/counters: the servers' counter files (nbdxm/export_counters.hpp), passed to each as counters-dir=. The
// manager creates it (mode 0750) when it starts; the servers, running as the manager's user, create their files.
std::string counters_dir(const std::string& run_dir);
// The spec of an instance (unescaped), and that of the target's instance under `settings`.
std::string server_spec_path(const std::string& run_dir, const std::string& instance);
std::string server_spec_path(const ServerSettings& settings, const ServerTarget& target);

// Writes the spec atomically (temporary file + rename), mode 0640; creates the servers directory. Throws
// std::runtime_error naming the file.
void write_server_spec(const std::string& path, const ServerSpec& spec);
// Throws Error(usage) naming the file and what is wrong with it (not JSON, a value of the wrong type). A spec of
// another version of nbdxm is read: unknown keys are ignored, missing ones keep their defaults.
ServerSpec read_server_spec(const std::string& path);
// Only the spec's `devices` (what the device sync needs), the rest not read. Throws as read_server_spec.
std::vector<std::string> read_server_spec_devices(const std::string& path);
// The spec for the target with `device` added to the devices of the spec already at its path (those of an earlier
// server of the same instance must still be synced when it stops), unless it is there already or empty, and made
// the current one (unless empty: the current one stays).
ServerSpec merged_server_spec(const std::string& path, const ServerSettings& settings, const ServerTarget& target,
                              const std::string& device);

// Syncs every device listed in the spec at `path` (sync_devices): the current one and those of earlier mappings and
// servers of the instance; a missing spec syncs nothing. A failure is recorded as a durability failure of the
// export's life in its counter file, for the manager to fold into the store; in the shared server's spec, of each
// life served from the failed device (none: the failure is returned, to be logged).
DeviceSyncResult sync_spec_devices(const std::string& path);
// The same for the spec of the target's instance, each failure logged (the manager, in process).
DeviceSyncResult sync_spec_devices(const ServerSettings& settings, const ServerTarget& target);
// The same for each target, side by side (up to kParallelSyncs at a time): each export's device is a volume of its
// own, so one fdatasync need not wait for another's (a whole job's servers stop at once).
constexpr size_t kParallelSyncs = 16;
void sync_spec_devices(const ServerSettings& settings, const std::vector<ServerTarget>& targets);
// Every device of each spec file at `paths` (sync_spec_devices), side by side as above, each failure logged; whether
// each spec's devices were all synced (a missing spec syncs nothing and counts as synced).
std::vector<bool> sync_spec_files(const std::vector<std::string>& paths);
// Records each failure of `result` as a durability failure of the target's export life, in its counter file under
// run_dir, for the manager to fold into the store (a sync after its server stopped is the life's last durability
// point).
void record_sync_failures(const std::string& run_dir, const ServerTarget& target, const DeviceSyncResult& result);

// The pre-shared key of a TLS export's life (`export create --tls`): <store's directory>/tls/<name>.<created_at as
// digits>.psk, one line `<export name>:<64 hex digits>` (nbdkit --tls-psk and libnbd's tls-psk-file read it; the
// export's name is the TLS identity). The store's directory is the service user's (/var/lib/nbdxm); tls/ is 0700
// and each key 0600, so only the service user (and root) can read a key. A new life of the export (revoke, create
// again) has another file and so a new key; the manager removes a life's key when its server is stopped for good.
std::string tls_key_dir(const std::string& db_path);
std::string tls_psk_path(const std::string& db_path, const ServerTarget& target);
// Creates the key file with a fresh random 256-bit key (getrandom) unless it exists. Throws std::runtime_error
// naming the file.
void ensure_tls_psk(const std::string& path, const std::string& identity);
void remove_tls_psk(const std::string& path);

// What a device path names now, symbolic links followed (a /dev/disk/by-id link made, and moved, by udev): the
// device node a server opening the path opens; empty while the path resolves to nothing.
std::string resolved_device(const std::string& path);

// The store path as servers are given it (absolute, symbolic links resolved).
std::string canonical_db_path(const std::string& db_path);

// How `running` differs from `wanted`, one line naming each setting ("listen 127.0.0.1 -> 0.0.0.0, ..."); empty
// when they are equal.
std::string describe_difference(const ServerSettings& running, const ServerSettings& wanted);

}  // namespace nbdxm::supervision
