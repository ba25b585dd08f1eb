#pragma once
// ExportStore: the single query layer over the state store. Every read and write of jobs, disks, device mappings
// and exports by nbdxm goes through here; the schema's constraints and triggers are the real guard, and this layer
// turns their refusals into one-line Errors in the user's terms (exit code 4) with the store unchanged.
#include <optional>
#include <string>
#include <vector>

#include "nbdxm/database.hpp"
#include "nbdxm/records.hpp"

namespace nbdxm {

struct NewMapping {
  std::string volume_uuid;
  int64_t volume_id = 0;
  std::string vm_id;
  std::string device_path;
  int64_t size = 0;
  std::string operation_mode = "oma";
  bool requires_device_correlation = true;
};

struct NewDisk {
  std::string job_id;
  std::string disk_id;
  std::string vm_dk_path;
  int64_t size_gb = 0;
  std::optional<int64_t> unit_number;
};

struct ExportFilter {
  std::optional<std::string> job_id;
  std::optional<std::string> status;
};

class ExportStore {
 public:
  explicit ExportStore(Database& db) : db_(db) {}
  Database& database() { return db_; }

  // Jobs.
  Job add_job(const std::string& id, const std::string& vm_id, const std::string& vm_name);
  std::vector<Job> list_jobs();
  Job get_job(const std::string& id);  // throws not_found
  Job set_job_status(const std::string& id, const std::string& status);
  void delete_job(const std::string& id);

  // Device mappings, by volume UUID.
  DeviceMapping add_mapping(const NewMapping& mapping);
  DeviceMapping set_mapping_path(const std::string& volume_uuid, const std::string& device_path);
  std::vector<DeviceMapping> list_mappings();
  DeviceMapping get_mapping(const std::string& volume_uuid);  // throws not_found
  void delete_mapping(const std::string& volume_uuid);

  // VM disks, by (job, disk id).
  VmDisk add_disk(const NewDisk& disk);
  std::vector<VmDisk> list_disks(const std::optional<std::string>& job_id = std::nullopt);
  VmDisk get_disk(const std::string& job_id, const std::string& disk_id);  // throws not_found
  VmDisk link_disk(const std::string& job_id, const std::string& disk_id, const std::string& volume_uuid);

  // Exports: the low-level row writes. Port allocation and naming (the manager) build on these.
  NbdExport add_export(const std::string& job_id, const std::string& disk_id, const std::string& export_name, int port,
                       const std::string& status = "pending");
  NbdExport set_export_status(const std::string& export_name, const std::string& status,
                              const std::optional<std::string>& reason = std::nullopt);

  // Exports, read through the export_devices view (device path resolved now).
  std::optional<NbdExport> find_export(const std::string& export_name);
  NbdExport get_export(const std::string& export_name);  // throws not_found
  std::vector<NbdExport> list_exports(const ExportFilter& filter = {});

 private:
  Database& db_;
};

}  // namespace nbdxm
