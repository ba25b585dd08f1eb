// The store commands: init, job, mapping, disk and check. Each opens the store, calls ExportStore (the one query
// layer) and prints through output.hpp. Refusals are nbdxm::Errors, which main() prints as one line and turns into
// the exit code; ExportStore leaves the store unchanged when it refuses.
#include <fmt/format.h>

#include <memory>

#include "command_store.hpp"
#include "commands.hpp"
#include "nbdxm/database.hpp"
#include "nbdxm/error.hpp"
#include "nbdxm/export_store.hpp"
#include "nbdxm/printable.hpp"
#include "output.hpp"
#include "whole_number.hpp"

namespace nbdxm::cli {
namespace {

const std::vector<std::string> kJobColumns{"id",     "source_vm_id", "source_vm_name",
                                           "status", "created_at",   "updated_at"};
const std::vector<std::string> kMappingColumns{"volume_uuid",    "volume_id", "vm_id",     "device_path",
                                               "operation_mode", "size",      "updated_at"};
const std::vector<std::string> kDiskColumns{
    "job_id", "disk_id", "size_gb", "unit_number", "cloudstack_volume_uuid", "sync_status", "vm_dk_path"};

constexpr auto kRead = Database::Access::read_only;
constexpr auto kWrite = Database::Access::read_write;

std::string count_of(size_t n, std::string_view noun) { return fmt::format("{} {}{}", n, noun, n == 1 ? "" : "s"); }

template <class Record, class Name>
std::string names(const std::vector<Record>& records, Name name) {
  std::vector<std::string> result;
  for (const auto& record : records) result.push_back(printable(name(record)));
  return fmt::format("{}", fmt::join(result, ", "));
}

std::string export_name(const NbdExport& e) { return e.export_name; }
std::string disk_name(const VmDisk& d) { return fmt::format("{} of job {}", d.disk_id, d.job_id); }

std::string revoked_lines(const std::vector<NbdExport>& revoked) {
  std::string text;
  for (const auto& e : revoked) {
    text += fmt::format("revoked live export {} on port {}: {}\n", printable(e.export_name), e.port,
                        printable(e.status_reason.value_or("")));
  }
  return text;
}

void add_init_command(CLI::App& app, GlobalOptions& options) {
  auto* cmd = app.add_subcommand("init",
                                 "Create the state store, or upgrade it to this nbdxm's schema, in one transaction. "
                                 "Does nothing on a current store; refuses a store written by a newer nbdxm "
                                 "(exit 1). The store's directory must exist.");
  cmd->callback([&options] {
    Database db = Database::create(options.db);
    const auto result = db.init();
    std::string text;
    if (result.from_version == 0) {
      text = fmt::format("created state store {} at schema version {}\n", printable(options.db), result.to_version);
    } else if (result.from_version == result.to_version) {
      text = fmt::format("state store {} is already at schema version {}; nothing to do\n", printable(options.db),
                         result.to_version);
    } else {
      text = fmt::format("upgraded state store {} from schema version {} to {}\n", printable(options.db),
                         result.from_version, result.to_version);
    }
    print_result(options,
                 Json{{"path", options.db}, {"from_version", result.from_version}, {"to_version", result.to_version}},
                 text);
  });
}

void add_job_commands(CLI::App& app, GlobalOptions& options) {
  auto* group = app.add_subcommand("job", "Replication jobs: add, list, show, set-status, delete");
  group->require_subcommand(1);

  struct AddArgs {
    std::string id, vm_id, vm_name;
  };
  auto add = std::make_shared<AddArgs>();
  auto* cmd = group->add_subcommand("add", "Record a replication job (status pending) and print it");
  cmd->add_option("ID", add->id, "Job id, 1 to 191 characters")->required();
  cmd->add_option("--vm-id", add->vm_id, "Id of the source VM")->required();
  cmd->add_option("--vm-name", add->vm_name, "Name of the source VM")->required();
  cmd->callback([&options, add] {
    CommandStore store(options, kWrite);
    print_record(options, to_json(store.exports.add_job(add->id, add->vm_id, add->vm_name)));
  });

  group->add_subcommand("list", "List the jobs (--json: an array of job objects)")->callback([&options] {
    CommandStore store(options, kRead);
    print_list(options, to_json(store.exports.list_jobs()), kJobColumns);
  });

  auto show_id = std::make_shared<std::string>();
  cmd = group->add_subcommand("show", "Print one job");
  cmd->add_option("ID", *show_id, "Job id")->required();
  cmd->callback([&options, show_id] {
    CommandStore store(options, kRead);
    print_record(options, to_json(store.exports.get_job(*show_id)));
  });

  struct StatusArgs {
    std::string id, status;
  };
  auto status = std::make_shared<StatusArgs>();
  cmd = group->add_subcommand("set-status",
                              "Set a job's status. Entering completed, failed or cancelled revokes the job's live "
                              "exports; each is listed (--json: {\"job\": ..., \"revoked_exports\": [...]})");
  cmd->add_option("ID", status->id, "Job id")->required();
  cmd->add_option("STATUS", status->status, "pending, replicating, completed, failed or cancelled")->required();
  cmd->callback([&options, status] {
    CommandStore store(options, kWrite);
    const auto change = store.exports.set_job_status(status->id, status->status);
    print_result(options, Json{{"job", to_json(change.job)}, {"revoked_exports", to_json(change.revoked_exports)}},
                 format_record(to_json(change.job)) + revoked_lines(change.revoked_exports));
  });

  auto delete_id = std::make_shared<std::string>();
  cmd = group->add_subcommand("delete",
                              "Delete a job with its disks and exports (device mappings are kept); says what was "
                              "deleted (--json: {\"job\": ..., \"deleted_disks\": [...], \"deleted_exports\": [...]})");
  cmd->add_option("ID", *delete_id, "Job id")->required();
  cmd->callback([&options, delete_id] {
    CommandStore store(options, kWrite);
    const auto deleted = store.exports.delete_job(*delete_id);
    std::string text = fmt::format("deleted job {}", printable(deleted.job.id));
    if (!deleted.disks.empty()) {
      text += fmt::format(" with {} ({})", count_of(deleted.disks.size(), "disk"),
                          names(deleted.disks, [](const VmDisk& d) { return d.disk_id; }));
    }
    if (!deleted.exports.empty()) {
      text +=
          fmt::format(" and {} ({})", count_of(deleted.exports.size(), "export"), names(deleted.exports, export_name));
    }
    print_result(options,
                 Json{{"job", to_json(deleted.job)},
                      {"deleted_disks", to_json(deleted.disks)},
                      {"deleted_exports", to_json(deleted.exports)}},
                 text + "; device mappings are kept\n");
  });
}

void add_mapping_commands(CLI::App& app, GlobalOptions& options) {
  auto* group = app.add_subcommand(
      "mapping", "Device mappings (which device a volume is attached as): add, set-path, list, show, delete");
  group->require_subcommand(1);

  struct AddArgs {
    NewMapping mapping;
    bool no_correlation = false;
  };
  auto add = std::make_shared<AddArgs>();
  auto* cmd = group->add_subcommand("add",
                                    "Record the device a volume is attached as and print the mapping. An 'oma' "
                                    "device path maps at most one volume");
  cmd->add_option("--volume-uuid", add->mapping.volume_uuid, "Volume UUID, canonical lower case")->required();
  cmd->add_option("--volume-id", add->mapping.volume_id, "Numeric volume id of the cloud")
      ->required()
      ->transform(whole_number());
  cmd->add_option("--vm-id", add->mapping.vm_id, "VM the volume is attached to")->required();
  cmd->add_option("--device-path", add->mapping.device_path, "Device path, like /dev/vdc")->required();
  cmd->add_option("--size", add->mapping.size, "Volume size in bytes")->required()->transform(whole_number());
  cmd->add_option("--mode", add->mapping.operation_mode,
                  "oma (attached to this appliance, the default) or failover (attached to another VM; the path is "
                  "a placeholder)");
  cmd->add_flag("--no-correlation", add->no_correlation,
                "The device need not be matched to the volume by its /dev/disk/by-id serial. Such a mapping is "
                "served only by a manager started with `nbdxm serve --allow-uncorrelated` (tests and demos)");
  cmd->callback([&options, add] {
    NewMapping mapping = add->mapping;
    mapping.requires_device_correlation = !add->no_correlation;
    CommandStore store(options, kWrite);
    print_record(options, to_json(store.exports.add_mapping(mapping)));
  });

  struct PathArgs {
    std::string volume_uuid, device_path;
  };
  auto path = std::make_shared<PathArgs>();
  cmd = group->add_subcommand("set-path",
                              "Record the device path a volume is attached as now (after a re-attach or reboot) and "
                              "print the mapping");
  cmd->add_option("VOLUME_UUID", path->volume_uuid, "Volume UUID")->required();
  cmd->add_option("PATH", path->device_path, "Device path, like /dev/vdc")->required();
  cmd->callback([&options, path] {
    CommandStore store(options, kWrite);
    print_record(options, to_json(store.exports.set_mapping_path(path->volume_uuid, path->device_path)));
  });

  group->add_subcommand("list", "List the device mappings (--json: an array of mapping objects)")->callback([&options] {
    CommandStore store(options, kRead);
    print_list(options, to_json(store.exports.list_mappings()), kMappingColumns);
  });

  auto show_uuid = std::make_shared<std::string>();
  cmd = group->add_subcommand("show", "Print one device mapping");
  cmd->add_option("VOLUME_UUID", *show_uuid, "Volume UUID")->required();
  cmd->callback([&options, show_uuid] {
    CommandStore store(options, kRead);
    print_record(options, to_json(store.exports.get_mapping(*show_uuid)));
  });

  auto delete_uuid = std::make_shared<std::string>();
  cmd = group->add_subcommand("delete",
                              "Delete a device mapping: its exports are deleted and its disk is unlinked; says what "
                              "(--json: {\"mapping\": ..., \"unlinked_disks\": [...], \"deleted_exports\": [...]})");
  cmd->add_option("VOLUME_UUID", *delete_uuid, "Volume UUID")->required();
  cmd->callback([&options, delete_uuid] {
    CommandStore store(options, kWrite);
    const auto deleted = store.exports.delete_mapping(*delete_uuid);
    std::string text = fmt::format("deleted the device mapping of volume {} (device path {})",
                                   printable(deleted.mapping.volume_uuid), printable(deleted.mapping.device_path));
    if (!deleted.unlinked_disks.empty()) text += "; unlinked disk " + names(deleted.unlinked_disks, disk_name);
    if (!deleted.exports.empty()) {
      text += fmt::format("; deleted {} ({})", count_of(deleted.exports.size(), "export"),
                          names(deleted.exports, export_name));
    }
    print_result(options,
                 Json{{"mapping", to_json(deleted.mapping)},
                      {"unlinked_disks", to_json(deleted.unlinked_disks)},
                      {"deleted_exports", to_json(deleted.exports)}},
                 text + "\n");
  });
}

void add_disk_commands(CLI::App& app, GlobalOptions& options) {
  auto* group =
      app.add_subcommand("disk", "VM disks of a job and the volumes they are linked to: add, list, show, link");
  group->require_subcommand(1);

  struct AddArgs {
    NewDisk disk;
    int64_t unit = 0;
  };
  auto add = std::make_shared<AddArgs>();
  auto* cmd = group->add_subcommand("add", "Record a VM disk of a job and print it");
  cmd->add_option("--job", add->disk.job_id, "Job id")->required();
  cmd->add_option("--disk-id", add->disk.disk_id, "Disk id, unique within the job")->required();
  cmd->add_option("--vmdk-path", add->disk.vm_dk_path, "Path of the VMDK on the source")->required();
  cmd->add_option("--size-gb", add->disk.size_gb, "Disk size in GiB")->required()->transform(whole_number());
  auto* unit =
      cmd->add_option("--unit", add->unit, "Unit number on the source VM's controller")->transform(whole_number());
  cmd->callback([&options, add, unit] {
    NewDisk disk = add->disk;
    if (unit->count() > 0) disk.unit_number = add->unit;
    CommandStore store(options, kWrite);
    print_record(options, to_json(store.exports.add_disk(disk)));
  });

  auto list_job = std::make_shared<std::string>();
  cmd = group->add_subcommand("list", "List the disks, of every job or of one (--json: an array of disk objects)");
  auto* job_option = cmd->add_option("--job", *list_job, "Only the disks of this job");
  cmd->callback([&options, list_job, job_option] {
    CommandStore store(options, kRead);
    const auto disks = job_option->count() > 0 ? store.exports.list_disks(*list_job) : store.exports.list_disks();
    print_list(options, to_json(disks), kDiskColumns);
  });

  struct DiskArgs {
    std::string job_id, disk_id, volume_uuid;
  };
  auto show = std::make_shared<DiskArgs>();
  cmd = group->add_subcommand("show", "Print one disk");
  cmd->add_option("--job", show->job_id, "Job id")->required();
  cmd->add_option("--disk-id", show->disk_id, "Disk id")->required();
  cmd->callback([&options, show] {
    CommandStore store(options, kRead);
    print_record(options, to_json(store.exports.get_disk(show->job_id, show->disk_id)));
  });

  auto link = std::make_shared<DiskArgs>();
  cmd = group->add_subcommand("link",
                              "Record the volume attached for a disk (it must have a device mapping, be at least as "
                              "large as the disk and back no other disk). Linking another volume revokes the disk's "
                              "live exports; each is listed (--json: {\"disk\": ..., \"revoked_exports\": [...]})");
  cmd->add_option("--job", link->job_id, "Job id")->required();
  cmd->add_option("--disk-id", link->disk_id, "Disk id")->required();
  cmd->add_option("--volume-uuid", link->volume_uuid, "UUID of the volume")->required();
  cmd->callback([&options, link] {
    CommandStore store(options, kWrite);
    const auto result = store.exports.link_disk(link->job_id, link->disk_id, link->volume_uuid);
    print_result(options, Json{{"disk", to_json(result.disk)}, {"revoked_exports", to_json(result.revoked_exports)}},
                 format_record(to_json(result.disk)) + revoked_lines(result.revoked_exports));
  });
}

void add_check_command(CLI::App& app, GlobalOptions& options) {
  auto* cmd = app.add_subcommand(
      "check",
      "Check the state store: SQLite integrity and foreign keys, every invariant re-checked row by row, the schema's "
      "tables, indexes and triggers, and that each 'oma' mapping's device exists. Prints one line per problem "
      "(--json: {\"path\": ..., \"problems\": [{\"rule\": ..., \"message\": ...}]}); exit 5 when there is any");
  cmd->callback([&options] {
    CommandStore store(options, kRead);
    const auto problems = store.exports.check();
    Json json_problems = Json::array();
    std::string text;
    for (const auto& problem : problems) {
      json_problems.push_back(Json{{"rule", problem.rule}, {"message", problem.message}});
      text += fmt::format("{}: {}\n", printable(problem.rule), printable(problem.message));
    }
    if (problems.empty()) text = fmt::format("state store {}: no problems found\n", printable(options.db));
    print_result(options, Json{{"path", options.db}, {"problems", json_problems}}, text);
    if (!problems.empty()) {
      throw Error(ExitCode::check_failed,
                  fmt::format("check found {} in state store {}", count_of(problems.size(), "problem"), options.db));
    }
  });
}

}  // namespace

void register_store_commands(CLI::App& app, GlobalOptions& options) {
  add_init_command(app, options);
  add_job_commands(app, options);
  add_mapping_commands(app, options);
  add_disk_commands(app, options);
  add_check_command(app, options);
}

}  // namespace nbdxm::cli
