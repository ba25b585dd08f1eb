// Low-level export row writes. The schema's triggers and unique indexes decide what is allowed.
#include <fmt/format.h>

#include <SQLiteCpp/Statement.h>

#include "nbdxm/error.hpp"
#include "nbdxm/export_store.hpp"
#include "nbdxm/store_error.hpp"

namespace nbdxm {

NbdExport ExportStore::add_export(const std::string& job_id, const std::string& disk_id, const std::string& export_name,
                                  int port, const std::string& status) {
  const std::string context = fmt::format("cannot add export {} on port {}", export_name, port);
  return translate_store_errors(context, [&] {
    WriteTransaction tx(db_);
    const VmDisk disk = get_disk(job_id, disk_id);
    if (!disk.cloudstack_volume_uuid) {
      throw Error(ExitCode::conflict,
                  fmt::format("disk {} of job {} has no linked volume; link one with `nbdxm disk link` first", disk_id,
                              job_id));
    }
    insert_export(disk, get_mapping(*disk.cloudstack_volume_uuid), export_name, port, status);
    NbdExport result = get_export(export_name);
    tx.commit();
    return result;
  });
}

void ExportStore::insert_export(const VmDisk& disk, const DeviceMapping& mapping, const std::string& export_name,
                                int port, const std::string& status, const ExportAccess& access,
                                const std::string& transport) {
  SQLite::Statement q(db_.sql(),
                      "INSERT INTO nbd_exports (job_id, vm_disk_id, device_mapping_id, export_name, port, status, tls, "
                      "allow_from, transport, allow_peers) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  q.bind(1, disk.job_id);
  q.bind(2, disk.id);
  q.bind(3, mapping.id);
  q.bind(4, export_name);
  q.bind(5, port);
  q.bind(6, status);
  q.bind(7, access.tls ? 1 : 0);
  if (access.allow_from && transport != "unix") q.bind(8, *access.allow_from);
  q.bind(9, transport);
  if (access.allow_from && transport == "unix") q.bind(10, *access.allow_from);
  q.exec();
}

NbdExport ExportStore::set_export_status(const std::string& export_name, const std::string& status,
                                         const std::optional<std::string>& reason) {
  const std::string context = fmt::format("cannot set the status of export {} to {}", export_name, status);
  return translate_store_errors(context, [&] {
    WriteTransaction tx(db_);
    get_export(export_name);
    SQLite::Statement q(db_.sql(), "UPDATE nbd_exports SET status = ?, status_reason = ? WHERE export_name = ?");
    q.bind(1, status);
    if (reason) q.bind(2, *reason);
    q.bind(3, export_name);
    q.exec();
    NbdExport result = get_export(export_name);
    tx.commit();
    return result;
  });
}

}  // namespace nbdxm
