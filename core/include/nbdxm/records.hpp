#pragma once
// Plain values read from the store, one struct per table (NbdExport is a row of the export_devices view: the
// export joined with its disk and its device mapping, the only way anything learns an export's device).
// The store layer reads and writes these values only; finding and checking processes in /proc is the process layer's
// (process_identity.hpp), which the store does not use.
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

namespace nbdxm {

// A process as the store records it (export_manager, export_servers): a pid alone names nothing for long, so the
// start time and the boot go with it.
struct ProcessIdentity {
  pid_t pid = -1;
  uint64_t start_time = 0;  // /proc/PID/stat field 22
  std::string boot_id;      // /proc/sys/kernel/random/boot_id
  bool operator==(const ProcessIdentity&) const = default;
};

struct Job {
  std::string id;
  std::string source_vm_id;
  std::string source_vm_name;
  std::string status;
  std::string created_at;
  std::string updated_at;
};

struct DeviceMapping {
  std::string id;
  std::string volume_uuid;
  int64_t volume_id = 0;
  std::string vm_id;
  std::string device_path;
  std::string operation_mode;
  std::optional<int64_t> cloudstack_device_id;
  bool requires_device_correlation = true;
  std::string cloudstack_state;
  std::string linux_state;
  int64_t size = 0;
  std::string last_sync;
  std::string created_at;
  std::string updated_at;
};

struct VmDisk {
  int64_t id = 0;
  std::string job_id;
  std::string disk_id;
  std::string vm_dk_path;
  int64_t size_gb = 0;
  std::optional<int64_t> unit_number;
  std::optional<std::string> cloudstack_volume_uuid;
  std::optional<int64_t> cloudstack_volume_id;
  std::string sync_status;
  double sync_progress_percent = 0;
  int64_t bytes_synced = 0;
  std::string created_at;
  std::string updated_at;
};

struct NbdExport {
  int64_t id = 0;
  std::string export_name;
  int port = 0;
  std::string status;
  std::optional<std::string> status_reason;
  std::string job_id;
  int64_t vm_disk_id = 0;
  std::string disk_id;
  std::string device_mapping_id;
  std::string volume_uuid;
  std::string device_path;  // resolved through device_mappings at the time of reading
  std::string operation_mode;
  bool requires_device_correlation = true;
  int64_t size = 0;  // the mapping's size in bytes
  std::string created_at;
  std::string updated_at;
  bool tls = false;                       // its server requires TLS with the export's own pre-shared key
  std::optional<std::string> allow_from;  // the client networks its server accepts (CIDRs, commas); nullopt: any
  std::string durability = "on-close";    // on-close or write-through (schema.sql, version 5)
  // How clients reach it (schema.sql, transport): tcp (its own port), unix (its own socket, named after it) or
  // shared (the manager's shared server, by name). `port` is 0 for unix and shared exports: they have none.
  std::string transport = "tcp";
  std::optional<std::string> allow_peers;  // a unix export's uid:N/gid:N rules (commas); nullopt: any client

  // Who may connect, as the plugin's allow-from= takes it: the addresses of a tcp export or the uid/gid rules of a
  // unix export; nullopt: any client that reaches its listener.
  const std::optional<std::string>& allowed_clients() const { return transport == "unix" ? allow_peers : allow_from; }

  bool live() const { return status == "pending" || status == "active"; }
};

// A failed sync of an export's writes (table export_durability_failures): acknowledged writes may be lost.
struct DurabilityFailure {
  int64_t export_id = 0;
  std::string export_name;
  std::string served_created_at;  // the export's life that failed
  int64_t failures = 0;
  std::string reason;
  std::string first_failed_at;
  std::string last_failed_at;
  std::optional<std::string> acknowledged_at;
};

// What an export life's servers counted (table export_counters, schema version 6), as the manager folded it from
// the life's counter file. Request kinds in the order read, write, zero, trim, flush.
struct ExportCounterRecord {
  static constexpr int kKinds = 5;
  int64_t export_id = 0;
  std::string served_created_at;  // the export's life counted
  int64_t bytes_written = 0;
  int64_t bytes_zeroed = 0;
  int64_t bytes_trimmed = 0;
  int64_t bytes_read = 0;
  int64_t requests[kKinds] = {};
  int64_t failed[kKinds] = {};
  int64_t connections_open = 0;
  int64_t connections_total = 0;
  int64_t refused_not_active = 0;
  int64_t refused_device = 0;
  std::optional<std::string> last_write_at;
  int64_t coverage_bytes = 0;  // distinct bytes written or zeroed in this life
  int64_t volume_size = 0;
  int64_t write_rate_bytes_per_second = 0;  // over the last 10 s
  // Read only (the store's): the coverage against the disk's size (at most 100), and when the numbers last changed.
  double progress_percent = 0;
  std::string updated_at;

  // The numbers the manager writes (what it compares to write only rows that changed).
  bool same_numbers(const ExportCounterRecord& other) const;
};

// A volume daemon operation (table volume_operations; nbdxm only keeps its shape valid).
struct VolumeOperation {
  std::string id;
  std::string type;
  std::string status;
  std::string volume_id;
  std::optional<std::string> vm_id;
  std::string request;  // JSON text
  std::optional<std::string> response;
  std::optional<std::string> error;
  std::string created_at;
  std::string updated_at;
  std::optional<std::string> completed_at;
};

// The manager's record of an export's server (table export_servers, schema version 2).
struct ExportServer {
  int64_t export_id = 0;
  std::optional<std::string> supervisor;  // 'systemd' or 'direct' while a server runs; nullopt otherwise
  std::optional<std::string> unit;        // the systemd unit's name (systemd backend)
  std::optional<std::string> listen_address;
  std::optional<std::string> started_at;
  int64_t restart_count = 0;  // restarts after the server exited unexpectedly or could not start
  std::optional<std::string> last_failure;
  std::optional<std::string> last_failure_at;
  std::optional<std::string> settings_stale;  // how the running server's settings differ from the manager's
  std::string updated_at;
  bool running() const { return supervisor.has_value(); }
};

// The running manager, `nbdxm serve` (table export_manager, schema version 2).
struct ManagerInstance {
  ProcessIdentity process;
  std::string listen_address;
  int port_low = 0;
  int port_high = 0;
  std::string run_dir;
  bool allow_regular_files = false;
  std::string byid_dir;
  int max_connections = 16;
  bool tls_default = false;  // `nbdxm serve --tls require`: exports are created with TLS unless --no-tls
  std::string version;
  std::string started_at;
  std::string durability = "on-close";         // what `export create` gives an export by default
  std::string transport_default = "tcp";       // `nbdxm serve --transport`: tcp or unix
  std::optional<std::string> shared_listener;  // ADDR:PORT or a socket path (`--shared-listener`, `--shared-socket`)
};

}  // namespace nbdxm
