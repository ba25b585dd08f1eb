// Translation of SQLite refusals into one-line Errors in the user's terms. The store's methods check the common
// cases first with messages that name the conflicting row; this is what remains for anything they did not foresee
// (and for main(), which passes every escaped SQLite exception through here).
#include "nbdxm/store_error.hpp"

#include <fmt/format.h>
#include <sqlite3.h>

#include <array>
#include <optional>
#include <string>

#include "nbdxm/store_rules.hpp"

namespace nbdxm {
namespace {

struct Rule {
  std::string_view key;  // "table.column[, table.column]"
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
      if (const auto* rule = rules::find_value_rule(after_colon(message))) return rule->sentence;
      return "a value is outside its allowed range or set";
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
