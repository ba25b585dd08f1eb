// Replication jobs: add, read, change status, delete (with what the schema's cascades and triggers did).
#include <fmt/format.h>

#include <SQLiteCpp/Statement.h>

#include "nbdxm/error.hpp"
#include "nbdxm/export_store.hpp"
#include "nbdxm/store_error.hpp"
#include "nbdxm/store_values.hpp"
#include "store_rows.hpp"

namespace nbdxm {

std::optional<Job> ExportStore::find_job(const std::string& id) {
  SQLite::Statement q(db_.sql(), fmt::format("SELECT {} FROM replication_jobs WHERE id = ?", rows::kJobColumns));
  q.bind(1, id);
  if (!q.executeStep()) return std::nullopt;
  return rows::read_job(q);
}

Job ExportStore::get_job(const std::string& id) {
  auto job = find_job(id);
  if (!job) throw Error(ExitCode::not_found, fmt::format("job {} does not exist; `nbdxm job list` shows the jobs", id));
  return *job;
}

std::vector<Job> ExportStore::list_jobs() {
  SQLite::Statement q(db_.sql(),
                      fmt::format("SELECT {} FROM replication_jobs ORDER BY created_at, rowid", rows::kJobColumns));
  std::vector<Job> jobs;
  while (q.executeStep()) jobs.push_back(rows::read_job(q));
  return jobs;
}

Job ExportStore::add_job(const std::string& id, const std::string& vm_id, const std::string& vm_name) {
  values::require_job_id(id);
  values::require_not_empty("the job's source VM id", vm_id);
  values::require_not_empty("the job's source VM name", vm_name);
  return translate_store_errors(fmt::format("cannot add job {}", id), [&] {
    WriteTransaction tx(db_);
    if (auto existing = find_job(id)) {
      throw Error(ExitCode::conflict, fmt::format("job {} already exists (VM {}, status {})", id,
                                                  existing->source_vm_name, existing->status));
    }
    SQLite::Statement q(db_.sql(), "INSERT INTO replication_jobs (id, source_vm_id, source_vm_name) VALUES (?, ?, ?)");
    q.bind(1, id);
    q.bind(2, vm_id);
    q.bind(3, vm_name);
    q.exec();
    Job job = get_job(id);
    tx.commit();
    return job;
  });
}

JobStatusChange ExportStore::set_job_status(const std::string& id, const std::string& status) {
  values::require_job_status(status);
  return translate_store_errors(fmt::format("cannot set the status of job {}", id), [&] {
    WriteTransaction tx(db_);
    JobStatusChange change{get_job(id), {}};
    if (change.job.status == status) return change;  // nothing to do; updated_at keeps saying when it last changed
    const std::vector<NbdExport> live = rows::live_only(list_exports(rows::of_job(id)));
    SQLite::Statement q(db_.sql(), "UPDATE replication_jobs SET status = ? WHERE id = ?");
    q.bind(1, status);
    q.bind(2, id);
    q.exec();
    change.job = get_job(id);
    for (const auto& before : live) {
      NbdExport after = get_export(before.export_name);
      if (!after.live()) change.revoked_exports.push_back(std::move(after));
    }
    tx.commit();
    return change;
  });
}

DeletedJob ExportStore::delete_job(const std::string& id) {
  return translate_store_errors(fmt::format("cannot delete job {}", id), [&] {
    WriteTransaction tx(db_);
    DeletedJob deleted{get_job(id), list_disks(id), list_exports(rows::of_job(id))};
    SQLite::Statement q(db_.sql(), "DELETE FROM replication_jobs WHERE id = ?");
    q.bind(1, id);
    q.exec();
    tx.commit();
    return deleted;
  });
}

}  // namespace nbdxm
