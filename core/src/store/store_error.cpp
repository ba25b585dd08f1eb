// Translation of SQLite refusals into one-line Errors in the user's terms. The store's methods check the common
// cases first with messages that name the conflicting row; this is what remains for anything they did not foresee
// (and for main(), which passes every escaped SQLite exception through here).
#include "nbdxm/store_error.hpp"

#include <fmt/format.h>
#include <sqlite3.h>

#include <array>
#include <optional>
#include <string>

#include "store_rules.hpp"

namespace nbdxm {
namespace {

struct Rule {
  std::string_view key;  // "table.column[, table.column]" for UNIQUE, the constraint name for CHECK
  std::string_view sentence;
};

constexpr std::array kUniqueRules{
    Rule{"replication_jobs.id", "a job with that id already exists"},
    Rule{"device_mappings.id", "a device mapping with that id already exists"},
    Rule{"device_mappings.volume_uuid", "the volume already has a device mapping"},
    Rule{"device_mappings.device_path", "the device path is already mapped to another 'oma' volume"},
    Rule{"vm_disks.id", "a vm_disk with that id already exists"},
    Rule{"vm_disks.cloudstack_volume_uuid", "the volume already backs another disk"},
    Rule{"vm_disks.job_id, vm_disks.disk_id", "the job already has a disk with that disk id"},
    Rule{"nbd_exports.id", "an export with that id already exists"},
    Rule{"nbd_exports.export_name", "an export with that name already exists"},
    Rule{"nbd_exports.port", "the port is already used by a live export"},
    Rule{"nbd_exports.vm_disk_id", "the disk already has a live export"},
    Rule{"nbd_exports.device_mapping_id", "the volume already has a live export"},
    Rule{"volume_operations.id", "a volume operation with that id already exists"},
};

constexpr std::array kCheckRules{
    Rule{"job_id_format", "a job id must be 1 to 191 characters"},
    Rule{"job_status_valid", "a job status must be pending, replicating, completed, failed or cancelled"},
    Rule{"mapping_id_format", "a device mapping id must be 1 to 64 characters"},
    Rule{"volume_uuid_canonical", "a volume UUID must be a canonical lower-case UUID"},
    Rule{"volume_id_range", "a volume id must not be negative"},
    Rule{"mapping_vm_id_format", "a device mapping's vm id must be 1 to 64 characters"},
    Rule{"device_path_length", "a device path must be 1 to 255 characters"},
    Rule{"oma_device_path_normalized",
         "an 'oma' device path must be absolute, without empty, '.' or '..' components or a trailing '/'"},
    Rule{"operation_mode_valid", "an operation mode must be oma or failover"},
    Rule{"requires_device_correlation_bool", "requires_device_correlation must be 0 or 1"},
    Rule{"mapping_size_range", "a volume size must be 1 byte to 1 PiB"},
    Rule{"disk_id_format", "a disk id must be 1 to 191 characters"},
    Rule{"disk_size_range", "a disk size must be 1 to 1048576 GiB"},
    Rule{"unit_number_range", "a unit number must not be negative"},
    Rule{"sync_status_valid", "a sync status must be pending, syncing, completed, failed or cancelled"},
    Rule{"sync_progress_range", "sync progress must be 0 to 100 percent"},
    Rule{"bytes_synced_range", "bytes synced must not be negative"},
    Rule{"export_name_format",
         "an export name must be 1 to 191 characters of A-Z, a-z, 0-9, '.', '_' and '-', starting with a letter or "
         "digit"},
    Rule{"port_range", "a port must be 1 to 65535"},
    Rule{"export_status_valid", "an export status must be pending, active, revoked or failed"},
    Rule{"operation_id_format", "a volume operation id must be 1 to 64 characters"},
    Rule{"operation_type_valid", "a volume operation type must be create, attach, detach, delete or cleanup"},
    Rule{"operation_status_valid",
         "a volume operation status must be pending, executing, completed, failed or cancelled"},
    Rule{"operation_request_json", "a volume operation request must be valid JSON"},
    Rule{"operation_response_json", "a volume operation response must be valid JSON"},
};

std::string_view after_colon(std::string_view message) {
  const size_t colon = message.find(": ");
  return colon == std::string_view::npos ? std::string_view{} : message.substr(colon + 2);
}

template <size_t N>
std::optional<std::string_view> lookup(const std::array<Rule, N>& rules, std::string_view key) {
  for (const auto& rule : rules) {
    if (rule.key == key) return rule.sentence;
  }
  return std::nullopt;
}

std::string constraint_sentence(const SQLite::Exception& e) {
  const std::string_view message = e.what();
  switch (e.getExtendedErrorCode()) {
    case SQLITE_CONSTRAINT_TRIGGER:
      return std::string(message);  // the schema's triggers raise sentences in the user's terms
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
    case SQLITE_CONSTRAINT_ROWID:
      return std::string(
          lookup(kUniqueRules, after_colon(message)).value_or("a row with the same unique value already exists"));
    case SQLITE_CONSTRAINT_CHECK:
      return std::string(rules::check_constraint_sentence(after_colon(message))
                             .value_or("a value is outside its allowed range or set"));
    case SQLITE_CONSTRAINT_FOREIGNKEY:
      return "the job, disk or device mapping it refers to does not exist, or rows that others refer to cannot be "
             "renamed or removed this way";
    case SQLITE_CONSTRAINT_NOTNULL:
      return fmt::format("{} must have a value", after_colon(message));
    case SQLITE_CONSTRAINT_DATATYPE:
      return "a value has the wrong type for its column";
    default:
      return "the change breaks a rule of the state store";
  }
}

std::string with_context(std::string_view context, const std::string& sentence) {
  return context.empty() ? sentence : fmt::format("{}: {}", context, sentence);
}

}  // namespace

namespace rules {
std::optional<std::string_view> check_constraint_sentence(std::string_view constraint_name) {
  return lookup(kCheckRules, constraint_name);
}
}  // namespace rules

Error store_error(const SQLite::Exception& e, std::string_view context) {
  switch (e.getErrorCode() & 0xff) {  // the primary result code, whether or not it came extended
    case SQLITE_CONSTRAINT:
      return Error(ExitCode::conflict, with_context(context, constraint_sentence(e)));
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Error(ExitCode::failure,
                   with_context(context,
                                "the state store stayed locked by another process for longer than the busy "
                                "timeout; try again"));
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_CANTOPEN:
      return Error(ExitCode::failure,
                   with_context(context,
                                "the state store cannot be written by this user; check the owner and mode "
                                "of the store file, its -wal and -shm files and its directory"));
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Error(ExitCode::failure,
                   with_context(context, "the state store file is damaged or not an nbdxm store; run `nbdxm check`"));
    case SQLITE_FULL:
      return Error(ExitCode::failure, with_context(context, "the file system holding the state store is full"));
    default:
      return Error(ExitCode::failure, with_context(context, fmt::format("state store error: {} (SQLite code {})",
                                                                        e.what(), e.getExtendedErrorCode())));
  }
}

}  // namespace nbdxm
