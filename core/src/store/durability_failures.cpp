// Durability failures: what an export's server reported about a sync that failed, recorded by the manager, reported
// by `nbdxm check` until an operator acknowledges it.
#include <fmt/format.h>

#include <SQLiteCpp/Statement.h>

#include "nbdxm/error.hpp"
#include "nbdxm/export_store.hpp"
#include "store_rows.hpp"

namespace nbdxm {
namespace {

std::vector<DurabilityFailure> read_failures(SQLite::Statement& q) {
  std::vector<DurabilityFailure> failures;
  while (q.executeStep()) failures.push_back(rows::read_durability_failure(q));
  return failures;
}

}  // namespace

bool ExportStore::record_durability_failure(int64_t export_id, const std::string& created_at, uint64_t failures,
                                            const std::string& reason) {
  const std::string text = reason.empty() ? "durability: a sync of the export's writes failed" : reason.substr(0, 1000);
  WriteTransaction tx(db_);
  SQLite::Statement exists(db_.sql(), "SELECT 1 FROM nbd_exports WHERE id = ?");
  exists.bind(1, export_id);
  if (!exists.executeStep()) return false;  // deleted since: its failures went with it
  // A new failure after an acknowledgement opens the row again.
  SQLite::Statement q(db_.sql(),
                      "INSERT INTO export_durability_failures (export_id, served_created_at, failures, reason) "
                      "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (export_id, served_created_at) DO UPDATE SET "
                      "failures = excluded.failures, reason = excluded.reason, acknowledged_at = NULL, "
                      "last_failed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE excluded.failures > failures");
  q.bind(1, export_id);
  q.bind(2, created_at);
  q.bind(3, static_cast<int64_t>(failures));
  q.bind(4, text);
  const bool recorded = q.exec() > 0;
  if (recorded) fail_export(export_id, text, created_at);  // a savepoint of this transaction
  tx.commit();
  return recorded;
}

std::vector<DurabilityFailure> ExportStore::durability_failures(bool open_only) {
  SQLite::Statement q(db_.sql(), fmt::format("SELECT {} FROM export_durability_failures f JOIN nbd_exports e ON "
                                             "e.id = f.export_id WHERE (?1 = 0 OR f.acknowledged_at IS NULL) "
                                             "ORDER BY f.first_failed_at, f.export_id",
                                             rows::kDurabilityFailureColumns));
  q.bind(1, open_only ? 1 : 0);
  return read_failures(q);
}

std::vector<DurabilityFailure> ExportStore::durability_failures_of(int64_t export_id) {
  SQLite::Statement q(db_.sql(), fmt::format("SELECT {} FROM export_durability_failures f JOIN nbd_exports e ON "
                                             "e.id = f.export_id WHERE f.export_id = ? ORDER BY f.first_failed_at",
                                             rows::kDurabilityFailureColumns));
  q.bind(1, export_id);
  return read_failures(q);
}

int ExportStore::acknowledge_durability_failures(const std::string& export_name) {
  WriteTransaction tx(db_);
  SQLite::Statement find(db_.sql(), "SELECT id FROM nbd_exports WHERE export_name = ?");
  find.bind(1, export_name);
  if (!find.executeStep()) {
    throw Error(ExitCode::not_found,
                fmt::format("export {} does not exist; `nbdxm export list` lists the exports", export_name));
  }
  SQLite::Statement q(db_.sql(),
                      "UPDATE export_durability_failures SET acknowledged_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
                      "WHERE export_id = ? AND acknowledged_at IS NULL");
  q.bind(1, find.getColumn(0).getInt64());
  const int changed = q.exec();
  tx.commit();
  return changed;
}

}  // namespace nbdxm
