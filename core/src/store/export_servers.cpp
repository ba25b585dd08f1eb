// The manager's runtime records (schema version 2): export_servers and export_manager.
#include <fmt/format.h>

#include <SQLiteCpp/Statement.h>

#include "nbdxm/error.hpp"
#include "nbdxm/export_store.hpp"
#include "nbdxm/port_allocator.hpp"

namespace nbdxm {
namespace {

constexpr const char* kServerColumns =
    "export_id, supervisor, unit, listen_address, started_at, restart_count, last_failure, last_failure_at, "
    "settings_stale, updated_at";

std::optional<std::string> optional_text(const SQLite::Column& c) {
  if (c.isNull()) return std::nullopt;
  return c.getString();
}

ExportServer read_server(SQLite::Statement& q) {
  ExportServer s;
  s.export_id = q.getColumn(0).getInt64();
  s.supervisor = optional_text(q.getColumn(1));
  s.unit = optional_text(q.getColumn(2));
  s.listen_address = optional_text(q.getColumn(3));
  s.started_at = optional_text(q.getColumn(4));
  s.restart_count = q.getColumn(5).getInt64();
  s.last_failure = optional_text(q.getColumn(6));
  s.last_failure_at = optional_text(q.getColumn(7));
  s.settings_stale = optional_text(q.getColumn(8));
  s.updated_at = q.getColumn(9).getString();
  return s;
}

// Empty `created_at`: any life of the export.
bool export_exists(SQLite::Database& db, int64_t export_id, const std::string& created_at = {}) {
  SQLite::Statement q(db, "SELECT 1 FROM nbd_exports WHERE id = ?1 AND (?2 = '' OR created_at = ?2)");
  q.bind(1, export_id);
  q.bind(2, created_at);
  return q.executeStep();
}

std::optional<ManagerInstance> read_manager(SQLite::Database& db) {
  SQLite::Statement q(db,
                      "SELECT pid, start_time, boot_id, listen_address, port_low, port_high, run_dir, "
                      "allow_regular_files, byid_dir, max_connections, version, started_at, tls_default, "
                      "durability, transport_default, shared_listener FROM export_manager WHERE id = 1");
  if (!q.executeStep()) return std::nullopt;
  ManagerInstance m;
  m.process = ProcessIdentity{q.getColumn(0).getInt(), static_cast<uint64_t>(q.getColumn(1).getInt64()),
                              q.getColumn(2).getString()};
  m.listen_address = q.getColumn(3).getString();
  m.port_low = q.getColumn(4).getInt();
  m.port_high = q.getColumn(5).getInt();
  m.run_dir = q.getColumn(6).getString();
  m.allow_regular_files = q.getColumn(7).getInt() != 0;
  m.byid_dir = q.getColumn(8).getString();
  m.max_connections = q.getColumn(9).getInt();
  m.version = q.getColumn(10).getString();
  m.started_at = q.getColumn(11).getString();
  m.tls_default = q.getColumn(12).getInt() != 0;
  m.durability = q.getColumn(13).getString();
  m.transport_default = q.getColumn(14).getString();
  if (!q.getColumn(15).isNull()) m.shared_listener = q.getColumn(15).getString();
  return m;
}

}  // namespace

std::vector<ExportServer> ExportStore::list_export_servers() {
  SQLite::Statement q(db_.sql(), fmt::format("SELECT {} FROM export_servers ORDER BY export_id", kServerColumns));
  std::vector<ExportServer> result;
  while (q.executeStep()) result.push_back(read_server(q));
  return result;
}

std::optional<ExportServer> ExportStore::find_export_server(int64_t export_id) {
  SQLite::Statement q(db_.sql(), fmt::format("SELECT {} FROM export_servers WHERE export_id = ?", kServerColumns));
  q.bind(1, export_id);
  if (!q.executeStep()) return std::nullopt;
  return read_server(q);
}

bool ExportStore::record_server_serving(int64_t export_id, const std::string& supervisor, const std::string& unit,
                                        const std::string& listen_address, const std::string& created_at) {
  WriteTransaction tx(db_);
  if (!export_exists(db_.sql(), export_id, created_at)) return false;
  SQLite::Statement q(
      db_.sql(),
      "INSERT INTO export_servers (export_id, supervisor, unit, listen_address, started_at, "
      "served_created_at) VALUES (?1, ?2, NULLIF(?3, ''), ?4, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), ?5) "
      "ON CONFLICT (export_id) DO UPDATE SET pid = NULL, start_time = NULL, boot_id = NULL, "
      "supervisor = ?2, unit = NULLIF(?3, ''), listen_address = ?4, "
      "started_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), served_created_at = ?5, "
      "settings_stale = NULL");
  q.bind(1, export_id);
  q.bind(2, supervisor);
  q.bind(3, unit);
  q.bind(4, listen_address);
  q.bind(5, created_at);
  q.exec();
  SQLite::Statement activate(db_.sql(), "UPDATE nbd_exports SET status = 'active' WHERE id = ? AND status = 'pending'");
  activate.bind(1, export_id);
  activate.exec();
  tx.commit();
  return true;
}

bool ExportStore::record_server_restarted(int64_t export_id, const std::string& reason, const std::string& created_at) {
  WriteTransaction tx(db_);
  if (!export_exists(db_.sql(), export_id, created_at)) return false;
  SQLite::Statement q(db_.sql(),
                      "UPDATE export_servers SET restart_count = restart_count + 1, last_failure = ?1, "
                      "last_failure_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
                      "WHERE export_id = ?2 AND served_created_at IS ?3");
  q.bind(1, reason);
  q.bind(2, export_id);
  q.bind(3, created_at);
  q.exec();
  tx.commit();
  return true;
}

void ExportStore::record_server_stopped(int64_t export_id, const std::string& created_at,
                                        const std::optional<std::string>& failure) {
  WriteTransaction tx(db_);
  if (!export_exists(db_.sql(), export_id)) return;
  SQLite::Statement ensure(db_.sql(),
                           "INSERT OR IGNORE INTO export_servers (export_id, served_created_at) VALUES (?, ?)");
  ensure.bind(1, export_id);
  ensure.bind(2, created_at);
  ensure.exec();
  SQLite::Statement clear(db_.sql(),
                          "UPDATE export_servers SET supervisor = NULL, unit = NULL, settings_stale = NULL "
                          "WHERE export_id = ? AND served_created_at IS ?");
  clear.bind(1, export_id);
  clear.bind(2, created_at);
  clear.exec();
  if (failure) {
    SQLite::Statement fail(db_.sql(),
                           "UPDATE export_servers SET last_failure = ?, "
                           "last_failure_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
                           "WHERE export_id = ? AND served_created_at IS ?");
    fail.bind(1, *failure);
    fail.bind(2, export_id);
    fail.bind(3, created_at);
    fail.exec();
  }
  tx.commit();
}

bool ExportStore::record_server_settings_stale(int64_t export_id, const std::optional<std::string>& what,
                                               const std::string& created_at) {
  WriteTransaction tx(db_);
  if (!export_exists(db_.sql(), export_id, created_at)) return false;
  SQLite::Statement q(db_.sql(),
                      "UPDATE export_servers SET settings_stale = ? WHERE export_id = ? AND served_created_at IS ?");
  if (what) {
    q.bind(1, *what);
  } else {
    q.bind(1);
  }
  q.bind(2, export_id);
  q.bind(3, created_at);
  q.exec();
  tx.commit();
  return true;
}

void ExportStore::forget_servers(const std::set<int64_t>& keep) {
  WriteTransaction tx(db_);
  SQLite::Statement running(db_.sql(), "SELECT export_id FROM export_servers WHERE supervisor IS NOT NULL");
  std::vector<int64_t> gone;
  while (running.executeStep()) {
    const int64_t id = running.getColumn(0).getInt64();
    if (!keep.contains(id)) gone.push_back(id);
  }
  for (const int64_t id : gone) {
    SQLite::Statement clear(db_.sql(),
                            "UPDATE export_servers SET supervisor = NULL, unit = NULL, settings_stale = NULL "
                            "WHERE export_id = ?");
    clear.bind(1, id);
    clear.exec();
  }
  tx.commit();
}

void ExportStore::register_manager(const ManagerInstance& self, const StillRunning& still_running) {
  WriteTransaction tx(db_);
  if (auto other = read_manager(db_.sql()); other && other->process != self.process && still_running(other->process)) {
    throw Error(ExitCode::conflict,
                fmt::format("another manager (pid {}, started {}) is already serving store {}; stop it first "
                            "(`systemctl stop nbdxm`) or give this one another --db",
                            other->process.pid, other->started_at, db_.path()));
  }
  SQLite::Statement q(db_.sql(),
                      "INSERT OR REPLACE INTO export_manager (id, pid, start_time, boot_id, listen_address, port_low, "
                      "port_high, run_dir, allow_regular_files, byid_dir, max_connections, version, tls_default, "
                      "durability, transport_default, shared_listener) "
                      "VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  q.bind(1, self.process.pid);
  q.bind(2, static_cast<int64_t>(self.process.start_time));
  q.bind(3, self.process.boot_id);
  q.bind(4, self.listen_address);
  q.bind(5, self.port_low);
  q.bind(6, self.port_high);
  q.bind(7, self.run_dir);
  q.bind(8, self.allow_regular_files ? 1 : 0);
  q.bind(9, self.byid_dir);
  q.bind(10, self.max_connections);
  q.bind(11, self.version);
  q.bind(12, self.tls_default ? 1 : 0);
  q.bind(13, self.durability);
  q.bind(14, self.transport_default);
  if (self.shared_listener) q.bind(15, *self.shared_listener);
  q.exec();
  tx.commit();
}

void ExportStore::unregister_manager(const ProcessIdentity& self) {
  WriteTransaction tx(db_);
  SQLite::Statement q(db_.sql(), "DELETE FROM export_manager WHERE pid = ? AND start_time = ? AND boot_id = ?");
  q.bind(1, self.pid);
  q.bind(2, static_cast<int64_t>(self.start_time));
  q.bind(3, self.boot_id);
  q.exec();
  tx.commit();
}

std::optional<ManagerInstance> ExportStore::running_manager(const StillRunning& still_running) {
  auto manager = read_manager(db_.sql());
  if (!manager || !still_running(manager->process)) return std::nullopt;
  return manager;
}

}  // namespace nbdxm
