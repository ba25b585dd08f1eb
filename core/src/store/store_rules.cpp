// The table of value rules (see store_rules.hpp). The sentences take their bounds from the constants the pre-write
// checks use, so that the test that holds those checks to the schema holds the sentences to it as well.
#include "nbdxm/store_rules.hpp"

#include <fmt/format.h>

#include <SQLiteCpp/Statement.h>
#include <algorithm>
#include <regex>

#include "nbdxm/store_values.hpp"

namespace nbdxm::rules {
namespace {

// "a, b or c"
template <size_t N>
std::string alternatives(const std::array<std::string_view, N>& set) {
  std::string text;
  for (size_t i = 0; i < N; ++i) text += fmt::format("{}{}", i == 0 ? "" : i + 1 == N ? " or " : ", ", set[i]);
  return text;
}

static_assert(values::kMaxMappingSize == int64_t{1} << 50, "the volume size sentence says 1 PiB");

std::vector<ValueRule> make_value_rules() {
  using namespace values;
  return {
      {"job_id_format", "replication_jobs", "id", fmt::format("a job id must be 1 to {} characters", kMaxNameLength),
       is_job_id},
      {"job_status_valid", "replication_jobs", "status",
       fmt::format("a job status must be {}", alternatives(kJobStatuses)), is_job_status},
      {"mapping_id_format", "device_mappings", "id",
       fmt::format("a device mapping id must be 1 to {} characters", kMaxMappingFieldLength)},
      {"volume_uuid_canonical", "device_mappings", "volume_uuid", "a volume UUID must be a canonical lower-case UUID",
       is_canonical_uuid},
      {"volume_id_range", "device_mappings", "volume_id", "a volume id must not be negative"},
      {"mapping_vm_id_format", "device_mappings", "vm_id",
       fmt::format("a device mapping's vm id must be 1 to {} characters", kMaxMappingFieldLength), is_mapping_vm_id},
      {"device_path_length", "device_mappings", "device_path",
       fmt::format("a device path must be 1 to {} characters", kMaxDevicePathLength), is_device_path_length},
      {"oma_device_path_normalized", "device_mappings", "device_path",
       "an 'oma' device path must be absolute, without empty, '.' or '..' components or a trailing '/'",
       is_normalized_absolute_path},
      {"operation_mode_valid", "device_mappings", "operation_mode",
       fmt::format("an operation mode must be {}", alternatives(kOperationModes)), is_operation_mode},
      {"requires_device_correlation_bool", "device_mappings", "requires_device_correlation",
       "requires_device_correlation must be 0 or 1"},
      {"mapping_size_range", "device_mappings", "size", "a volume size must be 1 byte to 1 PiB", nullptr,
       is_mapping_size},
      {"disk_id_format", "vm_disks", "disk_id", fmt::format("a disk id must be 1 to {} characters", kMaxNameLength),
       is_disk_id},
      {"disk_size_range", "vm_disks", "size_gb", fmt::format("a disk size must be 1 to {} GiB", kMaxDiskSizeGb),
       nullptr, is_disk_size_gb},
      {"unit_number_range", "vm_disks", "unit_number", "a unit number must not be negative"},
      {"sync_status_valid", "vm_disks", "sync_status",
       "a sync status must be pending, syncing, completed, failed or cancelled"},
      {"sync_progress_range", "vm_disks", "sync_progress_percent", "sync progress must be 0 to 100 percent"},
      {"bytes_synced_range", "vm_disks", "bytes_synced", "bytes synced must not be negative"},
      {"export_name_format", "nbd_exports", "export_name",
       fmt::format("an export name must be 1 to {} characters of A-Z, a-z, 0-9, '.', '_' and '-', starting with a "
                   "letter or digit",
                   kMaxNameLength),
       is_valid_export_name},
      {"port_range", "nbd_exports", "port", "a port must be 1 to 65535", nullptr, is_port},
      {"export_status_valid", "nbd_exports", "status",
       fmt::format("an export status must be {}", alternatives(kExportStatuses)), is_export_status},
      {"export_tls_bool", "nbd_exports", "tls", "an export's tls must be 0 or 1"},
      // The CLI checks each address fully (values::canonical_allow_from); the schema keeps out what nbdkit's ip
      // filter would read as something else.
      {"export_allow_from_format", "nbd_exports", "allow_from",
       "an export's allow_from must be NULL or IPv4 or IPv6 addresses, each with an optional /prefix length, "
       "separated by commas"},
      {"operation_id_format", "volume_operations", "id", "a volume operation id must be 1 to 64 characters"},
      {"operation_type_valid", "volume_operations", "type",
       "a volume operation type must be create, attach, detach, delete or cleanup"},
      {"operation_status_valid", "volume_operations", "status",
       "a volume operation status must be pending, executing, completed, failed or cancelled"},
      {"operation_request_json", "volume_operations", "request", "a volume operation request must be valid JSON"},
      {"operation_response_json", "volume_operations", "response", "a volume operation response must be valid JSON"},
      {"single_manager", "export_manager", "id", "the store records at most one manager, with id 1"},
      {"manager_pid_range", "export_manager", "pid", "a manager's pid must be positive"},
      {"manager_allow_regular_files_bool", "export_manager", "allow_regular_files",
       "a manager's allow_regular_files must be 0 or 1"},
      {"manager_tls_default_bool", "export_manager", "tls_default", "a manager's tls_default must be 0 or 1"},
      {"manager_max_connections_range", "export_manager", "max_connections",
       "a manager's max_connections must be at least 1"},
      {"manager_port_range", "export_manager", "port_low",
       "a manager's port range must be within 1 to 65535, its low port not above its high port"},
      {"server_pid_range", "export_servers", "pid", "a server's pid must be positive"},
      {"restart_count_range", "export_servers", "restart_count", "a server's restart count must not be negative"},
      {"server_identity_complete", "export_servers", "pid",
       "a server's pid, start time and boot id must be all set or all unset"},
      {"server_supervisor_kind", "export_servers", "supervisor", "a server's supervisor must be 'systemd' or 'direct'"},
      {"export_durability_valid", "nbd_exports", "durability",
       "an export's durability must be 'on-close' or 'write-through'"},
      {"manager_durability_valid", "export_manager", "durability",
       "a manager's durability must be 'on-close' or 'write-through'"},
      {"export_transport_valid", "nbd_exports", "transport", "an export's transport must be 'tcp', 'unix' or 'shared'"},
      // The CLI checks each rule fully (ClientAllowlist); the schema keeps the shape.
      {"export_allow_peers_format", "nbd_exports", "allow_peers",
       "an export's allow_peers must be NULL or uid:N and gid:N items separated by commas"},
      {"manager_transport_default_valid", "export_manager", "transport_default",
       "a manager's transport_default must be 'tcp' or 'unix'"},
      {"manager_shared_listener_length", "export_manager", "shared_listener",
       "a manager's shared_listener must be NULL or 1 to 255 characters"},
      {"durability_failures_range", "export_durability_failures", "failures",
       "a durability failure's count must be at least 1"},
      {"durability_reason_length", "export_durability_failures", "reason",
       "a durability failure's reason must be 1 to 1000 characters"},
      {"export_counters_range", "export_counters", "bytes_written",
       "an export's byte counts, open connections, coverage and write rate must not be negative"},
  };
}

// The SQL of a CREATE TABLE with comments blanked out (string literals kept), so that the constraints can be found.
std::string without_comments(std::string_view sql) {
  std::string code(sql);
  bool in_string = false;
  for (size_t i = 0; i < code.size(); ++i) {
    if (in_string) {
      in_string = code[i] != '\'';  // a doubled '' leaves and re-enters the literal
    } else if (code[i] == '\'') {
      in_string = true;
    } else if (code.compare(i, 2, "--") == 0) {
      for (; i < code.size() && code[i] != '\n'; ++i) code[i] = ' ';
    }
  }
  return code;
}

// The expression of the parenthesis opened just before `start`, up to its matching ')'.
std::string parenthesised(const std::string& code, size_t start) {
  int depth = 1;
  bool in_string = false;
  for (size_t i = start; i < code.size(); ++i) {
    const char c = code[i];
    if (in_string) {
      in_string = c != '\'';
    } else if (c == '\'') {
      in_string = true;
    } else if (c == '(') {
      ++depth;
    } else if (c == ')' && --depth == 0) {
      return code.substr(start, i - start);
    }
  }
  return code.substr(start);
}

}  // namespace

const std::vector<ValueRule>& value_rules() {
  static const std::vector<ValueRule> rules = make_value_rules();
  return rules;
}

const ValueRule* find_value_rule(std::string_view constraint) {
  const auto& rules = value_rules();
  const auto it =
      std::find_if(rules.begin(), rules.end(), [&](const ValueRule& r) { return r.constraint == constraint; });
  return it == rules.end() ? nullptr : &*it;
}

std::vector<CheckConstraint> check_constraints(SQLite::Database& db) {
  static const std::regex named_check(R"(CONSTRAINT\s+(\w+)\s+CHECK\s*\()", std::regex::icase);
  std::vector<CheckConstraint> found;
  SQLite::Statement q(db,
                      "SELECT name, sql FROM sqlite_schema WHERE type = 'table' AND sql IS NOT NULL ORDER BY rowid");
  while (q.executeStep()) {
    const std::string table = q.getColumn(0).getString();
    const std::string code = without_comments(q.getColumn(1).getString());
    for (std::sregex_iterator it(code.begin(), code.end(), named_check), end; it != end; ++it) {
      const size_t start = static_cast<size_t>(it->position(0) + it->length(0));
      found.push_back({table, (*it)[1].str(), parenthesised(code, start)});
    }
  }
  return found;
}

}  // namespace nbdxm::rules
