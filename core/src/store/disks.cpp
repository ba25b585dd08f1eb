// VM disks, by (job, disk id), and their link to the volume that receives them.
#include <fmt/format.h>

#include <SQLiteCpp/Statement.h>

#include "nbdxm/error.hpp"
#include "nbdxm/export_store.hpp"
#include "nbdxm/store_error.hpp"
#include "nbdxm/store_values.hpp"
#include "store_rows.hpp"

namespace nbdxm {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

std::optional<VmDisk> disk_backed_by(SQLite::Database& db, const std::string& volume_uuid) {
  SQLite::Statement q(db, fmt::format("SELECT {} FROM vm_disks WHERE cloudstack_volume_uuid = ?", rows::kDiskColumns));
  q.bind(1, volume_uuid);
  if (!q.executeStep()) return std::nullopt;
  return rows::read_disk(q);
}

}  // namespace

std::optional<VmDisk> ExportStore::find_disk(const std::string& job_id, const std::string& disk_id) {
  SQLite::Statement q(db_.sql(),
                      fmt::format("SELECT {} FROM vm_disks WHERE job_id = ? AND disk_id = ?", rows::kDiskColumns));
  q.bind(1, job_id);
  q.bind(2, disk_id);
  if (!q.executeStep()) return std::nullopt;
  return rows::read_disk(q);
}

VmDisk ExportStore::get_disk(const std::string& job_id, const std::string& disk_id) {
  auto disk = find_disk(job_id, disk_id);
  if (disk) return *disk;
  get_job(job_id);  // says so when the job itself is missing
  throw Error(ExitCode::not_found, fmt::format("disk {} of job {} does not exist; `nbdxm disk list --job {}` shows "
                                               "the job's disks",
                                               disk_id, job_id, job_id));
}

std::vector<VmDisk> ExportStore::list_disks(const std::optional<std::string>& job_id) {
  if (job_id) get_job(*job_id);
  SQLite::Statement q(db_.sql(), fmt::format("SELECT {} FROM vm_disks WHERE ?1 IS NULL OR job_id = ?1 "
                                             "ORDER BY job_id, id",
                                             rows::kDiskColumns));
  if (job_id) q.bind(1, *job_id);
  std::vector<VmDisk> disks;
  while (q.executeStep()) disks.push_back(rows::read_disk(q));
  return disks;
}

VmDisk ExportStore::add_disk(const NewDisk& disk) {
  values::require_job_id(disk.job_id);
  values::require_disk_id(disk.disk_id);
  values::require_not_empty("the disk's VMDK path", disk.vm_dk_path);
  values::require_disk_size_gb(disk.size_gb);
  if (disk.unit_number && *disk.unit_number < 0) {
    throw Error(ExitCode::usage, fmt::format("unit number {} must not be negative", *disk.unit_number));
  }
  return translate_store_errors(fmt::format("cannot add disk {} to job {}", disk.disk_id, disk.job_id), [&] {
    WriteTransaction tx(db_);
    get_job(disk.job_id);
    if (auto existing = find_disk(disk.job_id, disk.disk_id)) {
      throw Error(ExitCode::conflict, fmt::format("job {} already has disk {} (VMDK {}); disk ids are unique within "
                                                  "a job",
                                                  disk.job_id, disk.disk_id, existing->vm_dk_path));
    }
    SQLite::Statement q(db_.sql(),
                        "INSERT INTO vm_disks (job_id, disk_id, vm_dk_path, size_gb, unit_number) VALUES (?, ?, ?, ?, "
                        "?)");
    q.bind(1, disk.job_id);
    q.bind(2, disk.disk_id);
    q.bind(3, disk.vm_dk_path);
    q.bind(4, disk.size_gb);
    if (disk.unit_number) q.bind(5, *disk.unit_number);
    q.exec();
    VmDisk added = get_disk(disk.job_id, disk.disk_id);
    tx.commit();
    return added;
  });
}

DiskLink ExportStore::link_disk(const std::string& job_id, const std::string& disk_id, const std::string& volume_uuid) {
  values::require_volume_uuid(volume_uuid);
  const std::string context = fmt::format("cannot link disk {} of job {} to volume {}", disk_id, job_id, volume_uuid);
  return translate_store_errors(context, [&] {
    WriteTransaction tx(db_);
    DiskLink link{get_disk(job_id, disk_id), {}};
    const DeviceMapping mapping = get_mapping(volume_uuid);
    if (link.disk.cloudstack_volume_uuid == volume_uuid) return link;  // already linked
    if (auto other = disk_backed_by(db_.sql(), volume_uuid)) {
      throw Error(ExitCode::conflict, fmt::format("volume {} already backs disk {} of job {}; a volume backs one disk",
                                                  volume_uuid, other->disk_id, other->job_id));
    }
    if (mapping.size < link.disk.size_gb * kGiB) {
      throw Error(ExitCode::conflict,
                  fmt::format("volume {} ({} bytes) is smaller than disk {} of job {} ({} GiB = {} bytes); link a "
                              "volume at least as large as the disk",
                              volume_uuid, mapping.size, disk_id, job_id, link.disk.size_gb, link.disk.size_gb * kGiB));
    }
    std::vector<NbdExport> live;
    for (auto& e : rows::live_only(list_exports(rows::of_job(job_id)))) {
      if (e.vm_disk_id == link.disk.id) live.push_back(std::move(e));
    }
    SQLite::Statement q(db_.sql(),
                        "UPDATE vm_disks SET cloudstack_volume_uuid = ?, cloudstack_volume_id = ? WHERE id = ?");
    q.bind(1, volume_uuid);
    q.bind(2, mapping.volume_id);
    q.bind(3, link.disk.id);
    q.exec();
    link.disk = get_disk(job_id, disk_id);
    for (const auto& before : live) {
      NbdExport after = get_export(before.export_name);
      if (!after.live()) link.revoked_exports.push_back(std::move(after));
    }
    tx.commit();
    return link;
  });
}

}  // namespace nbdxm
