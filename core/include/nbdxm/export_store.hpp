#pragma once
// ExportStore: the single query layer over the state store. Every read and write of jobs, disks, device mappings
// and exports by nbdxm goes through here; the schema's constraints and triggers are the real guard, and this layer
// turns their refusals into one-line Errors in the user's terms (exit code 4) with the store unchanged.
#include <chrono>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "nbdxm/database.hpp"
#include "nbdxm/records.hpp"

namespace nbdxm {

struct NewMapping {
  std::string volume_uuid;
  int64_t volume_id = 0;
  std::string vm_id;
  std::string device_path;
  int64_t size = 0;
  std::string operation_mode = "oma";
  bool requires_device_correlation = true;
};

struct NewDisk {
  std::string job_id;
  std::string disk_id;
  std::string vm_dk_path;
  int64_t size_gb = 0;
  std::optional<int64_t> unit_number;
};

// What a write removed or changed besides its own row (the schema's cascades and cleanup triggers), so that the
// caller can say so.
struct JobStatusChange {
  Job job;
  std::vector<NbdExport> revoked_exports;  // live exports the job's end revoked
};

struct DiskLink {
  VmDisk disk;
  std::vector<NbdExport> revoked_exports;  // live exports of the previously linked volume
};

struct DeletedJob {
  Job job;
  std::vector<VmDisk> disks;       // deleted with the job
  std::vector<NbdExport> exports;  // deleted with the job; device mappings are kept
};

struct DeletedMapping {
  DeviceMapping mapping;
  std::vector<VmDisk> unlinked_disks;  // now without a volume
  std::vector<NbdExport> exports;      // deleted with the mapping
};

// One problem `ExportStore::check` found: the rule it breaks (a short identifier) and one line saying where.
struct StoreProblem {
  std::string rule;
  std::string message;
};

struct ExportFilter {
  std::optional<std::string> job_id;
  std::optional<std::string> status;
};

// A new export of a disk's volume (`nbdxm export create`).
struct NewExport {
  std::string job_id;
  std::string disk_id;
  std::optional<std::string> name;      // default: migration-vol-<volume uuid>
  std::optional<int> port;              // default: the allocator's lowest free port
  std::string durability = "on-close";  // on-close or write-through
  std::string transport = "tcp";        // tcp, unix or shared (schema.sql, version 6); only tcp takes a port
};

// The port a unix or shared export records: it names no listener (schema.sql, version 6; export_devices shows NULL).
inline constexpr int kNoListenerPort = 10809;

// Who may reach a new export (`export create --tls`, `--allow-from`); the default: any client, without TLS.
struct ExportAccess {
  bool tls = false;  // its server requires TLS with a key of its own
  // Canonical (values::canonical_allow_from): CIDRs for a tcp export (column allow_from), uid:N/gid:N rules for a
  // unix export (column allow_peers); nullopt: any client.
  std::optional<std::string> allow_from;
};

// Which exports `nbdxm export revoke` means: exactly one of the three.
struct RevokeTarget {
  std::optional<std::string> export_name;
  std::optional<std::string> job_id;
  std::optional<std::string> volume_uuid;
};

// One export a revoke named, as it is afterwards, and whether this revoke is what ended it.
struct Revocation {
  NbdExport target;
  bool revoked_now = false;
};

// Rows of an import (`nbdxm import legacy`), written as they are: the importer has already decided every value.
// Timestamps left empty get the schema's default (now).
// Imported exports are history: written as 'revoked' with the reason, never live.
struct ImportedExport {
  std::string job_id;
  std::string disk_id;  // with job_id: the vm_disk
  std::string device_mapping_id;
  std::string export_name;
  int port = 0;
  std::string status_reason;
  std::string created_at;
};
struct ImportRecords {
  std::vector<Job> jobs;
  std::vector<DeviceMapping> mappings;
  std::vector<VmDisk> disks;
  std::vector<ImportedExport> exports;
  std::vector<VolumeOperation> operations;
};

class PortAllocator;

class ExportStore {
 public:
  explicit ExportStore(Database& db) : db_(db) {}
  Database& database() { return db_; }

  // Jobs. Every method validates its arguments first (Error usage), names what is missing (Error not_found) and
  // refuses what would break an invariant (Error conflict) before or instead of letting the schema refuse it.
  Job add_job(const std::string& id, const std::string& vm_id, const std::string& vm_name);
  std::vector<Job> list_jobs();
  std::optional<Job> find_job(const std::string& id);
  Job get_job(const std::string& id);  // throws not_found
  JobStatusChange set_job_status(const std::string& id, const std::string& status);
  DeletedJob delete_job(const std::string& id);

  // Device mappings, by volume UUID.
  DeviceMapping add_mapping(const NewMapping& mapping);
  DeviceMapping set_mapping_path(const std::string& volume_uuid, const std::string& device_path);
  std::vector<DeviceMapping> list_mappings();
  std::optional<DeviceMapping> find_mapping(const std::string& volume_uuid);
  DeviceMapping get_mapping(const std::string& volume_uuid);  // throws not_found
  DeletedMapping delete_mapping(const std::string& volume_uuid);

  // VM disks, by (job, disk id).
  VmDisk add_disk(const NewDisk& disk);
  std::vector<VmDisk> list_disks(const std::optional<std::string>& job_id = std::nullopt);  // not_found: no such job
  std::optional<VmDisk> find_disk(const std::string& job_id, const std::string& disk_id);
  VmDisk get_disk(const std::string& job_id, const std::string& disk_id);  // throws not_found
  // Records the attached volume for a disk (also sets cloudstack_volume_id from the mapping).
  DiskLink link_disk(const std::string& job_id, const std::string& disk_id, const std::string& volume_uuid);

  // Integrity: SQLite's own checks, every invariant re-checked by query (finds what was written with foreign keys
  // off, triggers dropped or check constraints ignored), the schema objects compared with this binary's schema,
  // and every 'oma' mapping's device present and distinct. Empty when the store is sound. Read-only.
  std::vector<StoreProblem> check();

  // Volume operations (the volume daemon's), read-only here.
  std::vector<VolumeOperation> list_volume_operations();

  // Import (import.cpp): runs `plan` inside one write transaction, so that what it reads through this store is
  // what the write sees, then inserts the records it returns, all or nothing (Error conflict naming the row the
  // schema refused, store unchanged). Jobs, mappings and operations are written as given (empty timestamps: now);
  // disks get their id from the store and cloudstack_volume_id from their mapping; exports are written 'revoked'.
  void write_import(const std::function<ImportRecords()>& plan);

  // Exports: the low-level row writes. Port allocation and naming (the manager) build on these.
  NbdExport add_export(const std::string& job_id, const std::string& disk_id, const std::string& export_name, int port,
                       const std::string& status = "pending");
  NbdExport set_export_status(const std::string& export_name, const std::string& status,
                              const std::optional<std::string>& reason = std::nullopt);

  // Exports, read through the export_devices view (device path resolved now).
  std::optional<NbdExport> find_export(const std::string& export_name);
  NbdExport get_export(const std::string& export_name);  // throws not_found
  std::vector<NbdExport> list_exports(const ExportFilter& filter = {});

  // Export lifecycle, for `nbdxm export` and the manager (exports_lifecycle.cpp).
  // Records a pending export of the disk's volume. Checks, name and port are decided in one write transaction, so
  // parallel creators never get the same port or name. A revoked or failed export of the same name is reused (its
  // row is reset), so re-exporting a volume yields the name clients already know while names stay unique.
  NbdExport create_export(const NewExport& request, const PortAllocator& ports, const ExportAccess& access = {});
  std::vector<NbdExport> live_exports();  // pending and active
  // Revokes the target's live exports with `reason`; returns every export the target names (already revoked or
  // failed ones too). not_found when the named export, job or volume does not exist.
  std::vector<Revocation> revoke_exports(const RevokeTarget& target, const std::string& reason);
  // live -> failed with the reason; false (and no change) when the export is gone or no longer live. A non-empty
  // `created_at` names the export's life the write is about: a row re-used by `export create` since is left alone.
  bool fail_export(int64_t export_id, const std::string& reason, const std::string& created_at = {});
  // Revoked and failed exports last changed more than `older_than` ago; deleted unless dry_run.
  std::vector<NbdExport> collect_garbage(std::chrono::seconds older_than, bool dry_run);

  // The manager's runtime records (schema version 2, export_servers.cpp).
  std::vector<ExportServer> list_export_servers();
  std::optional<ExportServer> find_export_server(int64_t export_id);
  // The manager's records of the servers its supervisor backend runs (schema version 4). Each write names the
  // export's life it is about (`created_at`): a row re-used by `export create` since is left alone (false).
  // The export's server serves: records the backend ('systemd' or 'direct') and the unit (empty: none), clears
  // settings_stale, and turns a pending export active.
  bool record_server_serving(int64_t export_id, const std::string& supervisor, const std::string& unit,
                             const std::string& listen_address, const std::string& created_at);
  // The server exited unexpectedly and its backend started it again: counts the restart and keeps the reason.
  bool record_server_restarted(int64_t export_id, const std::string& reason, const std::string& created_at);
  // The export's server is gone (every acknowledged write synced); `failure` says why when not stopped on purpose.
  // The record of a server serving another life of the export is left alone.
  void record_server_stopped(int64_t export_id, const std::string& created_at,
                             const std::optional<std::string>& failure = std::nullopt);
  // The running server's settings differ from the manager's (`what` says how; nullopt: they match again).
  bool record_server_settings_stale(int64_t export_id, const std::optional<std::string>& what,
                                    const std::string& created_at);
  // Durability failures (durability_failures.cpp; schema.sql, version 5). A server reported `failures` failed syncs
  // of the export's life `created_at`, the last for `reason`: recorded in one write transaction, and the export, if
  // still live in that life, failed with the reason. Idempotent: a count the store already holds changes nothing
  // (the manager reports the same file again after its restart). True when something was recorded now.
  bool record_durability_failure(int64_t export_id, const std::string& created_at, uint64_t failures,
                                 const std::string& reason);
  // Every export's failures (only the unacknowledged ones when open_only), oldest first.
  std::vector<DurabilityFailure> durability_failures(bool open_only);
  std::vector<DurabilityFailure> durability_failures_of(int64_t export_id);
  // Marks the export's unacknowledged failures acknowledged; returns how many (0: none was open). not_found when
  // there is no such export.
  int acknowledge_durability_failures(const std::string& export_name);
  // Progress (counters.cpp; schema.sql, version 6). Records what the export life's servers counted (one row per
  // life, written only when its numbers changed) and folds it into the export's vm_disk: bytes_synced (written and
  // zeroed, summed over the disk's export lives), sync_progress_percent (this life's coverage against the disk's
  // size, when it is the export's current life) and sync_status ('pending' becomes 'syncing' at the first write).
  // False (nothing changed) when the export is gone.
  bool record_export_counters(const ExportCounterRecord& counters);
  // The counters of every export's current life (served_created_at = the export's created_at), by export id.
  std::vector<ExportCounterRecord> current_export_counters();
  // Clears the server records of every export not in `keep`: at a manager's start, the servers its backend does
  // not run are gone (a direct manager's servers went with it).
  void forget_servers(const std::set<int64_t>& keep);
  // The export's port `from` cannot be bound (another program holds it): moves the live export to the lowest free
  // port of the allocator's range, in one write transaction with the allocation. nullopt when the export is no
  // longer live on `from` in that life (nothing changed); Error(conflict) when no port of the range is free.
  std::optional<int> move_export_port(int64_t export_id, int from, const std::string& created_at,
                                      const PortAllocator& ports);
  // Whether a recorded process still runs: the store cannot tell (that is /proc's, the process layer's
  // still_running), so its callers say.
  using StillRunning = std::function<bool(const ProcessIdentity&)>;
  // Records `self` as the store's manager; Error(conflict) naming the other one while another manager is alive.
  void register_manager(const ManagerInstance& self, const StillRunning& still_running);
  void unregister_manager(const ProcessIdentity& self);
  // The recorded manager, if its process still runs.
  std::optional<ManagerInstance> running_manager(const StillRunning& still_running);

 private:
  // Inserts an export row of the disk's linked volume (inside the caller's write transaction).
  void insert_export(const VmDisk& disk, const DeviceMapping& mapping, const std::string& export_name, int port,
                     const std::string& status, const ExportAccess& access = {}, const std::string& transport = "tcp");

  Database& db_;
};

}  // namespace nbdxm
