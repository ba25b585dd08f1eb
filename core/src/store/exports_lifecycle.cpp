// The export lifecycle: creating (with name and port), revoking, failing and collecting exports.
#include <fmt/format.h>

#include <SQLiteCpp/Statement.h>
#include <set>

#include "nbdxm/error.hpp"
#include "nbdxm/export_store.hpp"
#include "nbdxm/port_allocator.hpp"
#include "nbdxm/store_error.hpp"
#include "nbdxm/store_values.hpp"
#include "store_rows.hpp"

namespace nbdxm {
namespace {

constexpr const char* kLive = "('pending', 'active')";

bool job_ended(const Job& job) {
  return job.status == "completed" || job.status == "failed" || job.status == "cancelled";
}

std::vector<NbdExport> read_exports(SQLite::Statement& q) {
  std::vector<NbdExport> result;
  while (q.executeStep()) result.push_back(rows::read_export(q));
  return result;
}

std::optional<NbdExport> live_export_where(SQLite::Database& db, const std::string& condition, int64_t value) {
  SQLite::Statement q(db, fmt::format("SELECT {} FROM export_devices WHERE {} = ? AND status IN {}",
                                      rows::kExportColumns, condition, kLive));
  q.bind(1, value);
  if (!q.executeStep()) return std::nullopt;
  return rows::read_export(q);
}

std::set<int> live_ports(SQLite::Database& db, const PortRange& range) {
  SQLite::Statement q(db, fmt::format("SELECT port FROM nbd_exports WHERE status IN {} AND transport = 'tcp' "
                                      "AND port BETWEEN ? AND ?",
                                      kLive));
  q.bind(1, range.low);
  q.bind(2, range.high);
  std::set<int> ports;
  while (q.executeStep()) ports.insert(q.getColumn(0).getInt());
  return ports;
}

}  // namespace

std::optional<int> ExportStore::move_export_port(int64_t export_id, int from, const std::string& created_at,
                                                 const PortAllocator& ports) {
  WriteTransaction tx(db_);
  SQLite::Statement q(db_.sql(), fmt::format("SELECT 1 FROM nbd_exports WHERE id = ? AND port = ? AND created_at = ? "
                                             "AND status IN {} AND transport = 'tcp'",
                                             kLive));
  q.bind(1, export_id);
  q.bind(2, from);
  q.bind(3, created_at);
  if (!q.executeStep()) return std::nullopt;
  std::set<int> held = live_ports(db_.sql(), ports.range());
  held.insert(from);  // held by another program: the reason for the move
  const int port = ports.lowest_free(held);
  SQLite::Statement move(db_.sql(), "UPDATE nbd_exports SET port = ? WHERE id = ?");
  move.bind(1, port);
  move.bind(2, export_id);
  move.exec();
  tx.commit();
  return port;
}

NbdExport ExportStore::create_export(const NewExport& request, const PortAllocator& ports, const ExportAccess& access) {
  if (request.name) values::require_export_name(*request.name);
  if (request.port) values::require_port(*request.port);
  const bool own_port = request.transport == "tcp";
  WriteTransaction tx(db_);
  const Job job = get_job(request.job_id);
  if (job_ended(job)) {
    throw Error(ExitCode::conflict,
                fmt::format("job {} has ended ({}); only a running job's disks can be exported", job.id, job.status));
  }
  const VmDisk disk = get_disk(request.job_id, request.disk_id);
  if (!disk.cloudstack_volume_uuid) {
    throw Error(ExitCode::conflict,
                fmt::format("disk {} of job {} has no linked volume; link one with `nbdxm disk link --job {} "
                            "--disk-id {} --volume-uuid UUID` first",
                            disk.disk_id, job.id, job.id, disk.disk_id));
  }
  const DeviceMapping mapping = get_mapping(*disk.cloudstack_volume_uuid);
  if (mapping.operation_mode != "oma") {
    throw Error(ExitCode::conflict, fmt::format("volume {} is in {} mode (attached to another VM); only 'oma' volumes "
                                                "can be exported",
                                                mapping.volume_uuid, mapping.operation_mode));
  }
  if (auto live = live_export_where(db_.sql(), "vm_disk_id", disk.id)) {
    throw Error(ExitCode::conflict,
                fmt::format("disk {} of job {} already has the live export {} on port {}; use it, or revoke it first "
                            "with `nbdxm export revoke {}`",
                            disk.disk_id, job.id, live->export_name, live->port, live->export_name));
  }

  const std::string name = request.name.value_or("migration-vol-" + mapping.volume_uuid);
  const auto previous = find_export(name);
  if (previous && previous->live()) {
    throw Error(ExitCode::conflict,
                fmt::format("export name {} is taken by the live export of disk {} of job {}; choose another with "
                            "--name",
                            name, previous->disk_id, previous->job_id));
  }

  int port = kNoListenerPort;
  if (!own_port) {
    // unix and shared exports have no port of their own (schema.sql, version 6).
  } else if (request.port) {
    port = *request.port;
    SQLite::Statement held(db_.sql(), fmt::format("SELECT export_name FROM nbd_exports WHERE port = ? AND status IN {} "
                                                  "AND transport = 'tcp'",
                                                  kLive));
    held.bind(1, port);
    if (held.executeStep()) {
      throw Error(ExitCode::conflict, fmt::format("port {} is held by the live export {}; leave out --port to get a "
                                                  "free one",
                                                  port, held.getColumn(0).getString()));
    }
    if (!ports.bindable(port)) {
      throw Error(ExitCode::conflict,
                  fmt::format("port {} on {} is in use by another program; leave out --port to get a free one", port,
                              ports.listen_address()));
    }
  } else {
    port = ports.lowest_free(live_ports(db_.sql(), ports.range()));
  }

  translate_store_errors(fmt::format("cannot create export {}", name), [&] {
    if (previous) {
      // Reuse the revoked or failed row: names stay unique and a volume keeps the name its clients know.
      SQLite::Statement q(db_.sql(),
                          "UPDATE nbd_exports SET job_id = ?, vm_disk_id = ?, device_mapping_id = ?, port = ?, "
                          "status = 'pending', status_reason = NULL, tls = ?, allow_from = ?, transport = ?, "
                          "allow_peers = ?, created_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?");
      q.bind(1, job.id);
      q.bind(2, disk.id);
      q.bind(3, mapping.id);
      q.bind(4, port);
      q.bind(5, access.tls ? 1 : 0);
      if (access.allow_from && request.transport != "unix") q.bind(6, *access.allow_from);
      q.bind(7, request.transport);
      if (access.allow_from && request.transport == "unix") q.bind(8, *access.allow_from);
      q.bind(9, previous->id);
      q.exec();
      SQLite::Statement forget(db_.sql(), "DELETE FROM export_servers WHERE export_id = ?");
      forget.bind(1, previous->id);
      forget.exec();
    } else {
      insert_export(disk, mapping, name, port, "pending", access, request.transport);
    }
    SQLite::Statement durability(db_.sql(), "UPDATE nbd_exports SET durability = ? WHERE export_name = ?");
    durability.bind(1, request.durability);
    durability.bind(2, name);
    durability.exec();
  });
  NbdExport created = get_export(name);
  tx.commit();
  return created;
}

std::vector<NbdExport> ExportStore::live_exports() {
  // The view's status is computed (the exports of an ended job read revoked), so a condition on it alone reads every
  // export ever made: the manager reads this at every commit of any writer, and a store keeps thousands of revoked
  // exports until `nbdxm gc`. The live ones are among those live in the table, which its status index finds.
  SQLite::Statement q(db_.sql(),
                      fmt::format("SELECT {} FROM export_devices WHERE export_id IN (SELECT id FROM nbd_exports WHERE "
                                  "status IN {}) AND status IN {} ORDER BY export_id",
                                  rows::kExportColumns, kLive, kLive));
  return read_exports(q);
}

std::vector<Revocation> ExportStore::revoke_exports(const RevokeTarget& target, const std::string& reason) {
  WriteTransaction tx(db_);
  std::vector<NbdExport> matched;
  if (target.export_name) {
    matched.push_back(get_export(*target.export_name));
  } else if (target.job_id) {
    get_job(*target.job_id);
    ExportFilter filter;
    filter.job_id = target.job_id;
    matched = list_exports(filter);
  } else if (target.volume_uuid) {
    values::require_volume_uuid(*target.volume_uuid);
    get_mapping(*target.volume_uuid);
    SQLite::Statement q(db_.sql(), fmt::format("SELECT {} FROM export_devices WHERE volume_uuid = ? ORDER BY export_id",
                                               rows::kExportColumns));
    q.bind(1, *target.volume_uuid);
    matched = read_exports(q);
  } else {
    throw Error(ExitCode::usage, "name the exports to revoke: an export NAME, --job ID or --volume UUID");
  }
  SQLite::Statement revoke(db_.sql(), fmt::format("UPDATE nbd_exports SET status = 'revoked', status_reason = ? "
                                                  "WHERE id = ? AND status IN {}",
                                                  kLive));
  std::vector<Revocation> result;
  for (const auto& e : matched) {
    // A job keeps its revoked exports until `nbdxm gc` (thousands of rows): only the live ones change, and are read
    // again; the others are reported as they were read in this transaction.
    if (!e.live()) {
      result.push_back({e, false});
      continue;
    }
    revoke.bind(1, reason);
    revoke.bind(2, e.id);
    revoke.exec();
    revoke.reset();
    result.push_back({get_export(e.export_name), true});
  }
  tx.commit();
  return result;
}

bool ExportStore::fail_export(int64_t export_id, const std::string& reason, const std::string& created_at) {
  WriteTransaction tx(db_);
  SQLite::Statement q(db_.sql(), fmt::format("UPDATE nbd_exports SET status = 'failed', status_reason = ?1 "
                                             "WHERE id = ?2 AND status IN {} AND (?3 = '' OR created_at = ?3)",
                                             kLive));
  q.bind(1, reason);
  q.bind(2, export_id);
  q.bind(3, created_at);
  const bool changed = q.exec() > 0;
  tx.commit();
  return changed;
}

std::vector<NbdExport> ExportStore::collect_garbage(std::chrono::seconds older_than, bool dry_run) {
  WriteTransaction tx(db_);
  const std::string cutoff = fmt::format("strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-{} seconds')", older_than.count());
  // An export whose durability failure no operator has acknowledged stays: deleting it would delete the failure
  // (its row goes with the export) and `nbdxm check` would stop reporting it.
  SQLite::Statement q(db_.sql(),
                      fmt::format("SELECT {} FROM export_devices WHERE status IN ('revoked', 'failed') "
                                  "AND updated_at < {} AND NOT EXISTS (SELECT 1 FROM export_durability_failures f "
                                  "WHERE f.export_id = export_devices.export_id AND f.acknowledged_at IS NULL) "
                                  "ORDER BY export_id",
                                  rows::kExportColumns, cutoff));
  std::vector<NbdExport> old = read_exports(q);
  if (!dry_run) {
    SQLite::Statement remove(db_.sql(), "DELETE FROM nbd_exports WHERE id = ?");
    for (const auto& e : old) {
      remove.bind(1, e.id);
      remove.exec();
      remove.reset();
    }
  }
  tx.commit();
  return old;
}

}  // namespace nbdxm
