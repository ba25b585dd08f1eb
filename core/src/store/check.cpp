// `nbdxm check`: finds what the schema should have made impossible. The store may have been written with foreign
// keys off, with a trigger dropped, or with check constraints ignored, so nothing here trusts the schema: every
// invariant is re-checked by query, and the schema objects themselves are compared with this binary's schema.
#include <fmt/format.h>
#include <sys/stat.h>

#include <SQLiteCpp/Statement.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <utility>

#include "nbdxm/export_store.hpp"
#include "nbdxm/store_rules.hpp"

namespace nbdxm {
namespace {

// A query whose every row is one problem, given as its single text column.
struct InvariantQuery {
  const char* rule;
  const char* sql;
};

constexpr const char* kLive = "('pending', 'active')";

// Invariants 1 to 4 and 7 (references, job agreement, live exports' devices, uniqueness, cleanup of ended jobs).
// `{live}` is replaced by the live export statuses.
constexpr InvariantQuery kInvariantQueries[] = {
    {"reference",
     "SELECT printf('disk %s (vm_disks.id %d) belongs to job %s, which does not exist', d.disk_id, d.id, d.job_id) "
     "FROM vm_disks d WHERE NOT EXISTS (SELECT 1 FROM replication_jobs j WHERE j.id = d.job_id)"},
    {"reference",
     "SELECT printf('disk %s of job %s is linked to volume %s, which has no device mapping', d.disk_id, d.job_id, "
     "d.cloudstack_volume_uuid) FROM vm_disks d WHERE d.cloudstack_volume_uuid IS NOT NULL "
     "AND NOT EXISTS (SELECT 1 FROM device_mappings m WHERE m.volume_uuid = d.cloudstack_volume_uuid)"},
    {"reference",
     "SELECT printf('export %s belongs to job %s, which does not exist', e.export_name, e.job_id) "
     "FROM nbd_exports e WHERE NOT EXISTS (SELECT 1 FROM replication_jobs j WHERE j.id = e.job_id)"},
    {"reference",
     "SELECT printf('export %s refers to vm_disks.id %d, which does not exist', e.export_name, e.vm_disk_id) "
     "FROM nbd_exports e WHERE NOT EXISTS (SELECT 1 FROM vm_disks d WHERE d.id = e.vm_disk_id)"},
    {"reference",
     "SELECT printf('export %s refers to device mapping %s, which does not exist', e.export_name, "
     "e.device_mapping_id) FROM nbd_exports e "
     "WHERE NOT EXISTS (SELECT 1 FROM device_mappings m WHERE m.id = e.device_mapping_id)"},
    {"export_job",
     "SELECT printf('export %s belongs to job %s, but its disk %s belongs to job %s', e.export_name, e.job_id, "
     "d.disk_id, d.job_id) FROM nbd_exports e JOIN vm_disks d ON d.id = e.vm_disk_id WHERE e.job_id IS NOT d.job_id"},
    {"live_export_device",
     "SELECT printf('live export %s is of disk %s of job %s, which has no linked volume', e.export_name, d.disk_id, "
     "d.job_id) FROM nbd_exports e JOIN vm_disks d ON d.id = e.vm_disk_id "
     "WHERE e.status IN {live} AND d.cloudstack_volume_uuid IS NULL"},
    {"live_export_device",
     "SELECT printf('live export %s serves volume %s, but its disk %s of job %s is linked to volume %s', "
     "e.export_name, m.volume_uuid, d.disk_id, d.job_id, d.cloudstack_volume_uuid) FROM nbd_exports e "
     "JOIN vm_disks d ON d.id = e.vm_disk_id JOIN device_mappings m ON m.id = e.device_mapping_id "
     "WHERE e.status IN {live} AND d.cloudstack_volume_uuid IS NOT NULL AND d.cloudstack_volume_uuid <> m.volume_uuid"},
    {"live_export_device",
     "SELECT printf('live export %s serves volume %s, which is in %s mode (attached to another VM)', e.export_name, "
     "m.volume_uuid, m.operation_mode) FROM nbd_exports e JOIN device_mappings m ON m.id = e.device_mapping_id "
     "WHERE e.status IN {live} AND m.operation_mode <> 'oma'"},
    {"server_settings",
     "SELECT printf('export %s (port %d): its server runs with settings other than the manager''s (%s); the manager "
     "replaces it once it has no client', e.export_name, e.port, s.settings_stale) FROM export_servers s "
     "JOIN nbd_exports e ON e.id = s.export_id WHERE s.supervisor IS NOT NULL AND s.settings_stale IS NOT NULL"},
    {"live_export_job",
     "SELECT printf('live export %s belongs to job %s, which has ended (%s)', e.export_name, j.id, j.status) "
     "FROM nbd_exports e JOIN replication_jobs j ON j.id = e.job_id "
     "WHERE e.status IN {live} AND j.status IN ('completed', 'failed', 'cancelled')"},
    {"volume_size",
     "SELECT printf('disk %s of job %s (%d GiB) is linked to volume %s of only %d bytes', d.disk_id, d.job_id, "
     "d.size_gb, m.volume_uuid, m.size) FROM vm_disks d JOIN device_mappings m ON m.volume_uuid = "
     "d.cloudstack_volume_uuid WHERE m.size < d.size_gb * 1073741824"},
    {"unique",
     "SELECT printf('port %d is used by %d live exports: %s', port, count(*), group_concat(export_name, ', ')) "
     "FROM nbd_exports WHERE status IN {live} GROUP BY port HAVING count(*) > 1"},
    {"unique",
     "SELECT printf('vm_disks.id %d has %d live exports: %s', vm_disk_id, count(*), group_concat(export_name, ', ')) "
     "FROM nbd_exports WHERE status IN {live} GROUP BY vm_disk_id HAVING count(*) > 1"},
    {"unique",
     "SELECT printf('device mapping %s has %d live exports: %s', device_mapping_id, count(*), "
     "group_concat(export_name, ', ')) FROM nbd_exports WHERE status IN {live} "
     "GROUP BY device_mapping_id HAVING count(*) > 1"},
    {"unique",
     "SELECT printf('volume %s backs %d disks: %s', cloudstack_volume_uuid, count(*), "
     "group_concat(disk_id || ' of job ' || job_id, ', ')) FROM vm_disks WHERE cloudstack_volume_uuid IS NOT NULL "
     "GROUP BY cloudstack_volume_uuid HAVING count(*) > 1"},
    {"unique",
     "SELECT printf('job %s has %d disks with disk id %s', job_id, count(*), disk_id) FROM vm_disks "
     "GROUP BY job_id, disk_id HAVING count(*) > 1"},
    {"unique",
     "SELECT printf('device path %s is mapped to %d oma volumes: %s', device_path, count(*), "
     "group_concat(volume_uuid, ', ')) FROM device_mappings WHERE operation_mode = 'oma' "
     "GROUP BY device_path HAVING count(*) > 1"},
    {"unique",
     "SELECT printf('volume %s has %d device mappings', volume_uuid, count(*)) FROM device_mappings "
     "GROUP BY volume_uuid HAVING count(*) > 1"},
    {"unique",
     "SELECT printf('export name %s is used by %d exports', export_name, count(*)) FROM nbd_exports "
     "GROUP BY export_name HAVING count(*) > 1"},
    {"unique",
     "SELECT printf('job id %s is used by %d jobs', id, count(*)) FROM replication_jobs GROUP BY id "
     "HAVING count(*) > 1"},
    {"unique",
     "SELECT printf('device mapping id %s is used by %d mappings', id, count(*)) FROM device_mappings GROUP BY id "
     "HAVING count(*) > 1"},
    {"unique",
     "SELECT printf('volume operation id %s is used by %d operations', id, count(*)) FROM volume_operations "
     "GROUP BY id HAVING count(*) > 1"},
    // Not a broken invariant but a loss to be dealt with: reported until an operator acknowledges it.
    {"durability",
     "SELECT printf('export %s: %d sync%s of its writes failed, the last at %s: %s; acknowledged writes may be lost: "
     "check the volume, then acknowledge with `nbdxm export acknowledge %s`', e.export_name, f.failures, "
     "CASE WHEN f.failures = 1 THEN '' ELSE 's' END, f.last_failed_at, f.reason, e.export_name) "
     "FROM export_durability_failures f JOIN nbd_exports e ON e.id = f.export_id WHERE f.acknowledged_at IS NULL"},
};

// The foreign keys the reference queries above already report, by (child table, parent table).
const std::set<std::pair<std::string, std::string>> kReportedForeignKeys{
    {"vm_disks", "replication_jobs"}, {"vm_disks", "device_mappings"},    {"nbd_exports", "replication_jobs"},
    {"nbd_exports", "vm_disks"},      {"nbd_exports", "device_mappings"},
};

// How a row of each table is named in a problem.
std::string row_name_sql(std::string_view table) {
  if (table == "replication_jobs") return "printf('job %s', id)";
  if (table == "device_mappings") return "printf('device mapping %s (volume %s)', id, volume_uuid)";
  if (table == "vm_disks") return "printf('disk %s of job %s', disk_id, job_id)";
  if (table == "nbd_exports") return "printf('export %s', export_name)";
  if (table == "export_manager") return "'the manager record'";
  if (table == "export_servers") return "printf('the server record of nbd_exports.id %d', export_id)";
  if (table == "export_durability_failures") {
    return "printf('the durability failure of nbd_exports.id %d (created %s)', export_id, served_created_at)";
  }
  if (table == "export_counters") {
    return "printf('the counters of nbd_exports.id %d (created %s)', export_id, served_created_at)";
  }
  return "printf('volume operation %s', id)";
}

// One line per problem, whatever the stored text holds.
std::string one_line(std::string text) {
  std::replace_if(
      text.begin(), text.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
  return text;
}

class Checker {
 public:
  explicit Checker(Database& db) : db_(db.sql()), reference_(Database::create(":memory:")) { reference_.init(); }

  std::vector<StoreProblem> run() {
    check_value_rules();  // first: the integrity check defers to its row-by-row findings
    std::vector<StoreProblem> value_problems = std::move(problems_);
    problems_.clear();
    guarded("the file's integrity", [&] { check_sqlite_integrity(); });
    guarded("the schema", [&] { check_schema_objects(); });
    guarded("the foreign keys", [&] { check_foreign_keys(); });
    check_invariants();
    problems_.insert(problems_.end(), value_problems.begin(), value_problems.end());
    guarded("the devices", [&] { check_devices(); });
    return std::move(problems_);
  }

 private:
  void add(std::string rule, std::string message) {
    StoreProblem problem{std::move(rule), one_line(std::move(message))};
    const bool seen = std::any_of(problems_.begin(), problems_.end(), [&](const StoreProblem& p) {
      return p.rule == problem.rule && p.message == problem.message;
    });
    if (!seen) problems_.push_back(std::move(problem));  // a damaged table fails several checks the same way
  }

  // A damaged store can make a check itself fail: that is one more problem to report, not a reason to stop.
  template <class Step>
  void guarded(std::string_view what, Step&& step) {
    try {
      step();
    } catch (const SQLite::Exception& e) {
      add("integrity", fmt::format("could not check {}: {}", what, e.what()));
    }
  }

  void add_rows(const std::string& rule, const std::string& sql) {
    guarded(fmt::format("rule {}", rule), [&] {
      SQLite::Statement q(db_, sql);
      while (q.executeStep()) add(rule, q.getColumn(0).getString());
    });
  }

  void check_sqlite_integrity() {
    SQLite::Statement q(db_, "PRAGMA integrity_check");
    while (q.executeStep()) {
      const std::string line = q.getColumn(0).getString();
      if (line == "ok") continue;
      // Row-by-row value rules already said which row breaks which constraint of this table.
      const std::string_view check_prefix = "CHECK constraint failed in ";
      if (line.starts_with(check_prefix) && tables_with_value_problems_.count(line.substr(check_prefix.size()))) {
        continue;
      }
      add("integrity", fmt::format("SQLite integrity check: {}", line));
    }
  }

  // Every table, index, trigger and view of this binary's schema must be in the store exactly as written there.
  void check_schema_objects() {
    const auto expected = schema_objects(reference_.sql());
    const auto actual = schema_objects(db_);
    for (const auto& [key, sql] : expected) {
      const auto found = actual.find(key);
      if (found == actual.end()) {
        add("schema", fmt::format("{} {} is missing from the store's schema; the rules it enforces are not enforced",
                                  key.first, key.second));
      } else if (found->second != sql) {
        add("schema", fmt::format("{} {} differs from the schema of this nbdxm", key.first, key.second));
      }
    }
  }

  static std::map<std::pair<std::string, std::string>, std::string> schema_objects(SQLite::Database& db) {
    std::map<std::pair<std::string, std::string>, std::string> objects;
    SQLite::Statement q(db, "SELECT type, name, coalesce(sql, '') FROM sqlite_schema");
    while (q.executeStep()) {
      objects[{q.getColumn(0).getString(), q.getColumn(1).getString()}] = q.getColumn(2).getString();
    }
    return objects;
  }

  void check_foreign_keys() {
    SQLite::Statement q(db_, "PRAGMA foreign_key_check");
    while (q.executeStep()) {
      const std::string table = q.getColumn(0).getString();
      const std::string parent = q.getColumn(2).getString();
      if (kReportedForeignKeys.count({table, parent})) continue;
      add("reference",
          fmt::format("{} row {} refers to a {} row that does not exist", table, q.getColumn(1).getInt64(), parent));
    }
  }

  void check_invariants() {
    for (const auto& query : kInvariantQueries) {
      std::string sql = query.sql;
      for (size_t at = sql.find("{live}"); at != std::string::npos; at = sql.find("{live}")) {
        sql.replace(at, 6, kLive);
      }
      add_rows(query.rule, sql);
    }
  }

  // Invariant 5, re-checked row by row: each named CHECK constraint with its condition as this binary's schema
  // writes it. A row breaks it when the condition is false (NULL passes, as in a CHECK constraint).
  void check_value_rules() {
    for (const auto& check : rules::check_constraints(reference_.sql())) {
      const auto* rule = rules::find_value_rule(check.name);
      const std::string column(rule ? rule->column : "a value");
      const std::string shown = rule ? fmt::format("quote({})", column) : "''";
      const std::string sentence = rule ? rule->sentence : fmt::format("it breaks {}", check.name);
      const size_t before = problems_.size();
      add_rows("value",
               fmt::format("SELECT {} || ' has {} ' || {} || '; ' || {} FROM {} WHERE NOT ({})",
                           row_name_sql(check.table), column, shown, quoted(sentence), check.table, check.condition));
      if (problems_.size() > before) tables_with_value_problems_.insert(check.table);
    }
  }

  static std::string quoted(const std::string& text) {
    std::string result = "'";
    for (char c : text) {
      result += c;
      if (c == '\'') result += '\'';
    }
    return result + "'";
  }

  // Each 'oma' mapping names a device of this machine: it must exist, and no two may be the same device.
  void check_devices() {
    SQLite::Statement q(db_,
                        "SELECT volume_uuid, device_path FROM device_mappings WHERE operation_mode = 'oma' "
                        "ORDER BY volume_uuid");
    std::map<std::pair<dev_t, ino_t>, std::pair<std::string, std::string>> seen;  // identity -> (volume, path)
    while (q.executeStep()) {
      const std::string volume = q.getColumn(0).getString();
      const std::string path = q.getColumn(1).getString();
      struct stat st {};
      if (::stat(path.c_str(), &st) != 0) {
        add("device", fmt::format("device {} of volume {} does not exist ({})", path, volume, std::strerror(errno)));
        continue;
      }
      if (!S_ISBLK(st.st_mode) && !S_ISREG(st.st_mode)) {
        add("device", fmt::format("device {} of volume {} is neither a block device nor a regular file", path, volume));
        continue;
      }
      // A block device is identified by its device number, a file (a file-backed test volume) by its inode.
      const auto identity =
          S_ISBLK(st.st_mode) ? std::pair<dev_t, ino_t>{st.st_rdev, 0} : std::pair<dev_t, ino_t>{st.st_dev, st.st_ino};
      const auto [it, inserted] = seen.emplace(identity, std::pair{volume, path});
      if (!inserted) {
        add("device", fmt::format("volumes {} ({}) and {} ({}) are mapped to the same device", it->second.first,
                                  it->second.second, volume, path));
      }
    }
  }

  SQLite::Database& db_;
  Database reference_;  // this binary's schema, in memory: what the store's is compared with
  std::vector<StoreProblem> problems_;
  std::set<std::string, std::less<>> tables_with_value_problems_;
};

}  // namespace

std::vector<StoreProblem> ExportStore::check() { return Checker(db_).run(); }

}  // namespace nbdxm
