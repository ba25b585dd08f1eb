#include "legacy_source.hpp"

#include <fmt/format.h>
#include <mysql.h>

#include <charconv>
#include <string_view>

#include "nbdxm/error.hpp"

namespace nbdxm::legacy {
namespace {

constexpr unsigned kConnectTimeoutSeconds = 10;

// One fetched row: columns as text (the text protocol), NULL as nullopt.
class Row {
 public:
  Row(MYSQL_ROW row, const unsigned long* lengths) : row_(row), lengths_(lengths) {}
  std::optional<std::string> text(unsigned i) const {
    if (row_[i] == nullptr) return std::nullopt;
    return std::string(row_[i], lengths_[i]);
  }
  std::string str(unsigned i) const { return text(i).value_or(""); }
  std::optional<int64_t> integer(unsigned i) const {
    if (row_[i] == nullptr) return std::nullopt;
    int64_t value = 0;
    const char* end = row_[i] + lengths_[i];
    const auto [stop, error] = std::from_chars(row_[i], end, value);
    // Numeric columns arrive as digits; only a BIGINT UNSIGNED beyond int64 can fail here, and reading it as some
    // other number would import a wrong value.
    if (error != std::errc{} || stop != end) {
      throw Error(ExitCode::failure,
                  fmt::format("the source holds {:?} where a whole number of at most {} was expected",
                              std::string_view(row_[i], lengths_[i]), INT64_MAX));
    }
    return value;
  }
  std::optional<double> real(unsigned i) const {
    if (row_[i] == nullptr) return std::nullopt;
    return std::stod(std::string(row_[i], lengths_[i]));
  }
  // DATE_FORMAT(x, '%Y-%m-%dT%H:%i:%s.%f') in microseconds -> the store's milliseconds and Z.
  std::optional<std::string> timestamp(unsigned i) const {
    auto value = text(i);
    if (value && value->size() >= 23) return value->substr(0, 23) + "Z";
    return std::nullopt;
  }

 private:
  MYSQL_ROW row_;
  const unsigned long* lengths_;
};

std::string ts(std::string_view column) { return fmt::format("DATE_FORMAT(`{}`, '%Y-%m-%dT%H:%i:%s.%f')", column); }

LegacyJob read_job(const Row& r) { return {r.str(0), r.str(1), r.str(2), r.text(3), r.timestamp(4), r.timestamp(5)}; }

LegacyVolume read_volume(const Row& r) { return {r.integer(0).value_or(0), r.str(1), r.integer(2).value_or(0)}; }

LegacyDisk read_disk(const Row& r) {
  LegacyDisk d;
  d.id = r.integer(0).value_or(0);
  d.job_id = r.text(1);
  d.disk_id = r.str(2);
  d.vm_dk_path = r.str(3);
  d.size_gb = r.integer(4).value_or(0);
  d.capacity_bytes = r.integer(5);
  d.unit_number = r.integer(6);
  d.ossea_volume_id = r.integer(7);
  d.sync_status = r.text(8);
  d.sync_progress_percent = r.real(9);
  d.bytes_synced = r.integer(10);
  d.created_at = r.timestamp(11);
  d.updated_at = r.timestamp(12);
  return d;
}

LegacyMapping read_mapping(const Row& r) {
  LegacyMapping m;
  m.id = r.str(0);
  m.volume_uuid = r.str(1);
  m.volume_id_numeric = r.integer(2);
  m.vm_id = r.str(3);
  m.operation_mode = r.text(4);
  m.cloudstack_device_id = r.integer(5);
  if (auto v = r.integer(6)) m.requires_device_correlation = *v != 0;
  m.device_path = r.str(7);
  m.cloudstack_state = r.str(8);
  m.linux_state = r.str(9);
  m.size = r.integer(10).value_or(0);
  m.last_sync = r.timestamp(11);
  m.created_at = r.timestamp(12);
  m.updated_at = r.timestamp(13);
  return m;
}

LegacyExport read_export(const Row& r) {
  LegacyExport e;
  e.id = r.integer(0).value_or(0);
  e.job_id = r.text(1);
  e.volume_id = r.text(2);
  e.vm_disk_id = r.integer(3);
  e.device_mapping_uuid = r.text(4);
  e.export_name = r.str(5);
  e.port = r.integer(6).value_or(0);
  e.device_path = r.str(7);
  e.status = r.str(8);
  e.created_at = r.timestamp(9);
  return e;
}

LegacyOperation read_operation(const Row& r) {
  return {r.str(0),  r.str(1),  r.str(2),       r.str(3),       r.text(4),      r.str(5),
          r.text(6), r.text(7), r.timestamp(8), r.timestamp(9), r.timestamp(10)};
}

}  // namespace

LegacySource::LegacySource(const LegacyUri& uri, const std::string& password)
    : display_(uri.display()), mysql_(mysql_init(nullptr)) {
  if (mysql_ == nullptr) throw Error(ExitCode::failure, fmt::format("cannot read source {}: out of memory", display_));
  const unsigned timeout = kConnectTimeoutSeconds;
  mysql_optionsv(mysql_, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
  mysql_optionsv(mysql_, MYSQL_OPT_READ_TIMEOUT, &timeout);
  mysql_optionsv(mysql_, MYSQL_SET_CHARSET_NAME, "utf8mb4");
  const char* user = uri.user ? uri.user->c_str() : nullptr;
  const char* host = uri.socket.empty() ? uri.host.c_str() : "localhost";
  const char* socket = uri.socket.empty() ? nullptr : uri.socket.c_str();
  if (mysql_real_connect(mysql_, host, user, password.empty() ? nullptr : password.c_str(), uri.database.c_str(),
                         uri.port, socket, 0) == nullptr) {
    const std::string reason = mysql_error(mysql_);
    mysql_close(mysql_);
    throw Error(ExitCode::failure, fmt::format("cannot reach source {}: {}", display_, reason));
  }
}

LegacySource::~LegacySource() { mysql_close(mysql_); }

void LegacySource::fail(const std::string& what) const {
  throw Error(ExitCode::failure, fmt::format("cannot read source {}: {}: {}", display_, what, mysql_error(mysql_)));
}

void LegacySource::execute(const std::string& sql) {
  if (mysql_real_query(mysql_, sql.data(), sql.size()) != 0) fail(sql);
}

template <class RowType, class Read>
std::vector<RowType> LegacySource::select(const std::string& table, const std::string& sql, Read read) {
  if (mysql_real_query(mysql_, sql.data(), sql.size()) != 0) fail(fmt::format("reading {}", table));
  // Streamed row by row: the source's tables are never held twice in memory.
  MYSQL_RES* result = mysql_use_result(mysql_);
  if (result == nullptr) fail(fmt::format("reading {}", table));
  std::vector<RowType> rows;
  while (MYSQL_ROW row = mysql_fetch_row(result)) rows.push_back(read(Row(row, mysql_fetch_lengths(result))));
  const bool failed = mysql_errno(mysql_) != 0;
  mysql_free_result(result);
  if (failed) fail(fmt::format("reading {}", table));
  return rows;
}

LegacyRows LegacySource::read_all() {
  // Read-only: the server refuses any write in this transaction, whatever the user may do.
  execute("SET SESSION TRANSACTION READ ONLY");
  execute("SET time_zone = '+00:00'");
  execute("START TRANSACTION WITH CONSISTENT SNAPSHOT");
  LegacyRows rows;
  rows.jobs = select<LegacyJob>(
      "replication_jobs",
      fmt::format("SELECT id, source_vm_id, source_vm_name, status, {}, {} FROM replication_jobs ORDER BY id",
                  ts("created_at"), ts("updated_at")),
      read_job);
  rows.volumes = select<LegacyVolume>("ossea_volumes", "SELECT id, volume_id, size_gb FROM ossea_volumes ORDER BY id",
                                      read_volume);
  rows.disks = select<LegacyDisk>(
      "vm_disks",
      fmt::format("SELECT id, job_id, disk_id, vm_dk_path, size_gb, capacity_bytes, unit_number, ossea_volume_id, "
                  "sync_status, sync_progress_percent, bytes_synced, {}, {} FROM vm_disks ORDER BY id",
                  ts("created_at"), ts("updated_at")),
      read_disk);
  rows.mappings = select<LegacyMapping>(
      "device_mappings",
      fmt::format("SELECT id, volume_uuid, volume_id_numeric, vm_id, operation_mode, cloudstack_device_id, "
                  "requires_device_correlation, device_path, cloudstack_state, linux_state, size, {}, {}, {} "
                  "FROM device_mappings ORDER BY id",
                  ts("last_sync"), ts("created_at"), ts("updated_at")),
      read_mapping);
  rows.exports = select<LegacyExport>(
      "nbd_exports",
      fmt::format("SELECT id, job_id, volume_id, vm_disk_id, device_mapping_uuid, export_name, port, device_path, "
                  "status, {} FROM nbd_exports ORDER BY id",
                  ts("created_at")),
      read_export);
  rows.operations = select<LegacyOperation>(
      "volume_operations",
      fmt::format("SELECT id, type, status, volume_id, vm_id, request, response, error, {}, {}, {} "
                  "FROM volume_operations ORDER BY id",
                  ts("created_at"), ts("updated_at"), ts("completed_at")),
      read_operation);
  execute("COMMIT");
  return rows;
}

}  // namespace nbdxm::legacy
