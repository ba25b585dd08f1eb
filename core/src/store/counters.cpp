// Progress measured on the servers: the counters of each export life (table export_counters), written by the
// manager, folded into the export's vm_disk, read by `nbdxm export list` and `nbdxm export watch`.
#include <fmt/format.h>

#include <SQLiteCpp/Statement.h>
#include <algorithm>
#include <tuple>

#include "nbdxm/export_store.hpp"

namespace nbdxm {
namespace {

constexpr const char* kKinds[ExportCounterRecord::kKinds] = {"read", "write", "zero", "trim", "flush"};

// The columns the manager writes, in the order bind_numbers binds them (from ?3 on).
std::vector<std::string> number_columns() {
  std::vector<std::string> columns{"bytes_written", "bytes_zeroed", "bytes_trimmed", "bytes_read"};
  for (const char* k : kKinds) columns.push_back(fmt::format("requests_{}", k));
  for (const char* k : kKinds) columns.push_back(fmt::format("failed_{}", k));
  for (const char* c : {"connections_open", "connections_total", "refused_not_active", "refused_device",
                        "last_write_at", "coverage_bytes", "volume_size", "write_rate_bytes_per_second"}) {
    columns.emplace_back(c);
  }
  return columns;
}

auto numbers_of(const ExportCounterRecord& c) {
  return std::tie(c.bytes_written, c.bytes_zeroed, c.bytes_trimmed, c.bytes_read, c.connections_open,
                  c.connections_total, c.refused_not_active, c.refused_device, c.last_write_at, c.coverage_bytes,
                  c.volume_size, c.write_rate_bytes_per_second);
}

void bind_numbers(SQLite::Statement& q, const ExportCounterRecord& c) {
  int i = 3;
  for (int64_t v : {c.bytes_written, c.bytes_zeroed, c.bytes_trimmed, c.bytes_read}) q.bind(i++, v);
  for (int64_t v : c.requests) q.bind(i++, v);
  for (int64_t v : c.failed) q.bind(i++, v);
  for (int64_t v : {c.connections_open, c.connections_total, c.refused_not_active, c.refused_device}) q.bind(i++, v);
  if (c.last_write_at) {
    q.bind(i++, *c.last_write_at);
  } else {
    q.bind(i++);
  }
  for (int64_t v : {c.coverage_bytes, c.volume_size, c.write_rate_bytes_per_second}) q.bind(i++, v);
}

// INSERT ... ON CONFLICT DO UPDATE that touches the row (and its updated_at) only when a number changed.
std::string upsert_sql() {
  const auto columns = number_columns();
  std::string names, values, sets, changed;
  for (size_t i = 0; i < columns.size(); ++i) {
    const std::string& c = columns[i];
    names += ", " + c;
    values += fmt::format(", ?{}", i + 3);
    sets += fmt::format("{}{} = excluded.{}", i == 0 ? "" : ", ", c, c);
    changed += fmt::format("{}{} IS NOT excluded.{}", i == 0 ? "" : " OR ", c, c);
  }
  // The life's disk (the last placeholder) is written with its first row only: an export row reused by a later job
  // or disk must not move its earlier lives' bytes there.
  return fmt::format(
      "INSERT INTO export_counters (export_id, served_created_at{}, vm_disk_id) VALUES (?1, ?2{}, ?{}) "
      "ON CONFLICT (export_id, served_created_at) DO UPDATE SET {}, "
      "updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE {}",
      names, values, columns.size() + 3, sets, changed);
}

// The disk's numbers from every life of its exports; the percent only from the export's current life. A disk row
// is written only when one of them changes.
constexpr const char* kFoldIntoDisk =
    "UPDATE vm_disks SET bytes_synced = n.total, sync_progress_percent = n.percent, sync_status = n.status "
    "FROM (SELECT d.id AS id, "
    "  (SELECT COALESCE(SUM(c.bytes_written + c.bytes_zeroed), 0) FROM export_counters c "
    "   WHERE c.vm_disk_id = d.id) AS total, "
    "  CASE WHEN ?2 THEN min(100.0, ?3 * 100.0 / (d.size_gb * 1073741824.0)) "
    "       ELSE d.sync_progress_percent END AS percent, "
    "  CASE WHEN d.sync_status = 'pending' AND ?4 > 0 THEN 'syncing' ELSE d.sync_status END AS status "
    "  FROM vm_disks d WHERE d.id = ?1) AS n "
    "WHERE vm_disks.id = n.id AND (vm_disks.bytes_synced IS NOT n.total "
    "  OR vm_disks.sync_progress_percent IS NOT n.percent OR vm_disks.sync_status IS NOT n.status)";

ExportCounterRecord read_counters(SQLite::Statement& q) {
  ExportCounterRecord c;
  int i = 0;
  c.export_id = q.getColumn(i++).getInt64();
  c.served_created_at = q.getColumn(i++).getString();
  for (int64_t* v : {&c.bytes_written, &c.bytes_zeroed, &c.bytes_trimmed, &c.bytes_read}) {
    *v = q.getColumn(i++).getInt64();
  }
  for (int64_t& v : c.requests) v = q.getColumn(i++).getInt64();
  for (int64_t& v : c.failed) v = q.getColumn(i++).getInt64();
  for (int64_t* v : {&c.connections_open, &c.connections_total, &c.refused_not_active, &c.refused_device}) {
    *v = q.getColumn(i++).getInt64();
  }
  if (!q.getColumn(i).isNull()) c.last_write_at = q.getColumn(i).getString();
  ++i;
  for (int64_t* v : {&c.coverage_bytes, &c.volume_size, &c.write_rate_bytes_per_second}) {
    *v = q.getColumn(i++).getInt64();
  }
  c.progress_percent = q.getColumn(i++).getDouble();
  c.updated_at = q.getColumn(i++).getString();
  return c;
}

}  // namespace

bool ExportCounterRecord::same_numbers(const ExportCounterRecord& other) const {
  return export_id == other.export_id && served_created_at == other.served_created_at &&
         std::equal(std::begin(requests), std::end(requests), std::begin(other.requests)) &&
         std::equal(std::begin(failed), std::end(failed), std::begin(other.failed)) &&
         numbers_of(*this) == numbers_of(other);
}

bool ExportStore::record_export_counters(const ExportCounterRecord& counters) {
  WriteTransaction tx(db_);
  SQLite::Statement find(db_.sql(), "SELECT vm_disk_id, created_at = ? FROM nbd_exports WHERE id = ?");
  find.bind(1, counters.served_created_at);
  find.bind(2, counters.export_id);
  if (!find.executeStep()) return false;  // deleted since: its counters went with it
  const int64_t disk = find.getColumn(0).getInt64();
  const bool current_life = find.getColumn(1).getInt() != 0;
  SQLite::Statement upsert(db_.sql(), upsert_sql());
  upsert.bind(1, counters.export_id);
  upsert.bind(2, counters.served_created_at);
  bind_numbers(upsert, counters);
  if (current_life) {
    upsert.bind(static_cast<int>(number_columns().size()) + 3, disk);
  } else {
    upsert.bind(static_cast<int>(number_columns().size()) + 3);
  }
  upsert.exec();
  SQLite::Statement life_disk(db_.sql(),
                              "SELECT vm_disk_id FROM export_counters WHERE export_id = ? AND served_created_at = ?");
  life_disk.bind(1, counters.export_id);
  life_disk.bind(2, counters.served_created_at);
  if (!life_disk.executeStep() || life_disk.getColumn(0).isNull()) {
    tx.commit();  // a life first seen after it ended: its disk is not known, so no disk's progress counts it
    return true;
  }
  SQLite::Statement fold(db_.sql(), kFoldIntoDisk);
  fold.bind(1, life_disk.getColumn(0).getInt64());
  fold.bind(2, current_life ? 1 : 0);
  fold.bind(3, counters.coverage_bytes);
  fold.bind(4, counters.bytes_written + counters.bytes_zeroed);
  fold.exec();
  tx.commit();
  return true;
}

std::vector<ExportCounterRecord> ExportStore::current_export_counters() {
  std::string columns = "c.export_id, c.served_created_at";
  for (const auto& c : number_columns()) columns += ", c." + c;
  SQLite::Statement q(db_.sql(),
                      fmt::format("SELECT {}, min(100.0, c.coverage_bytes * 100.0 / (d.size_gb * 1073741824.0)), "
                                  "c.updated_at FROM export_counters c "
                                  "JOIN nbd_exports e ON e.id = c.export_id AND e.created_at = c.served_created_at "
                                  "JOIN vm_disks d ON d.id = e.vm_disk_id ORDER BY c.export_id",
                                  columns));
  std::vector<ExportCounterRecord> records;
  while (q.executeStep()) records.push_back(read_counters(q));
  return records;
}

}  // namespace nbdxm
