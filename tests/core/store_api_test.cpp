// ExportStore's jobs, mappings and disks: what each method writes and returns, and that every refusal is an Error
// with the right exit code and a one-line message naming the thing and the rule, with the store unchanged.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>

#include "nbdxm/error.hpp"
#include "nbdxm/port_allocator.hpp"
#include "nbdxm/store_error.hpp"
#include "store_test_support.hpp"

namespace nbdxm::test {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::Optional;

class StoreApiTest : public StoreTest {
 protected:
  StoreApiTest() { add_standard_rows(store_, dir_); }

  // Runs a store call expected to be refused; returns the message after checking code, shape and no change.
  std::string refusal(ExitCode code, const std::function<void()>& call) {
    const std::string before = dump(db_.sql());
    std::string message;
    try {
      call();
      ADD_FAILURE() << "the store accepted the call";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << e.what();
      message = e.what();
    }
    EXPECT_EQ(before, dump(db_.sql())) << "a refusal changed the store: " << message;
    EXPECT_THAT(message, Not(HasSubstr("\n")));
    EXPECT_THAT(message, Not(HasSubstr("constraint failed")));
    return message;
  }
};

TEST_F(StoreApiTest, AddsAndReadsJobs) {
  const Job job = store_.add_job("j3", "vm-3", "app01");
  EXPECT_EQ(job.id, "j3");
  EXPECT_EQ(job.source_vm_id, "vm-3");
  EXPECT_EQ(job.source_vm_name, "app01");
  EXPECT_EQ(job.status, "pending");
  EXPECT_THAT(job.created_at,
              ::testing::MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[.][0-9]{3}Z"));
  EXPECT_EQ(store_.get_job("j3").source_vm_name, "app01");
  EXPECT_THAT(store_.list_jobs(), ElementsAre(Field(&Job::id, "j1"), Field(&Job::id, "j2"), Field(&Job::id, "j3")));
  EXPECT_EQ(store_.find_job("nope"), std::nullopt);
}

TEST_F(StoreApiTest, RefusesBadJobs) {
  EXPECT_EQ(refusal(ExitCode::conflict, [&] { store_.add_job("j1", "vm-x", "x"); }),
            "job j1 already exists (VM web01, status replicating)");
  EXPECT_THAT(refusal(ExitCode::usage, [&] { store_.add_job("", "vm-x", "x"); }),
              HasSubstr("job id \"\" must be 1 to 191 characters"));
  EXPECT_THAT(refusal(ExitCode::usage, [&] { store_.add_job(std::string(192, 'j'), "vm-x", "x"); }),
              HasSubstr("must be 1 to 191 characters"));
  EXPECT_THAT(refusal(ExitCode::usage, [&] { store_.add_job("j9", "", "x"); }), HasSubstr("source VM id"));
  EXPECT_THAT(refusal(ExitCode::not_found, [&] { store_.get_job("nope"); }),
              HasSubstr("job nope does not exist; `nbdxm job list` shows the jobs"));
}

TEST_F(StoreApiTest, SetsJobStatusAndSaysWhichExportsItsEndRevoked) {
  const auto running = store_.set_job_status("j2", "replicating");
  EXPECT_EQ(running.job.status, "replicating");
  EXPECT_THAT(running.revoked_exports, IsEmpty());

  const auto ended = store_.set_job_status("j1", "failed");
  EXPECT_EQ(ended.job.status, "failed");
  ASSERT_THAT(ended.revoked_exports, ElementsAre(Field(&NbdExport::export_name, "e1")));
  EXPECT_EQ(ended.revoked_exports[0].status, "revoked");
  EXPECT_EQ(ended.revoked_exports[0].status_reason, "job j1 became failed");

  const std::string before = dump(db_.sql());
  EXPECT_EQ(store_.set_job_status("j1", "failed").job.updated_at, ended.job.updated_at);
  EXPECT_EQ(before, dump(db_.sql())) << "setting the same status again wrote";
}

TEST_F(StoreApiTest, RefusesBadJobStatus) {
  EXPECT_EQ(refusal(ExitCode::usage, [&] { store_.set_job_status("j1", "done"); }),
            "job status \"done\" is not one of pending, replicating, completed, failed, cancelled");
  EXPECT_THAT(refusal(ExitCode::not_found, [&] { store_.set_job_status("nope", "failed"); }),
              HasSubstr("job nope does not exist"));
}

TEST_F(StoreApiTest, DeletingAJobSaysWhatWentWithIt) {
  const auto deleted = store_.delete_job("j1");
  EXPECT_EQ(deleted.job.id, "j1");
  EXPECT_THAT(deleted.disks, ElementsAre(Field(&VmDisk::disk_id, "d1"), Field(&VmDisk::disk_id, "d2")));
  EXPECT_THAT(deleted.exports,
              ElementsAre(Field(&NbdExport::export_name, "e1-old"), Field(&NbdExport::export_name, "e1")));
  EXPECT_EQ(store_.find_job("j1"), std::nullopt);
  EXPECT_THAT(store_.list_disks(), ElementsAre(Field(&VmDisk::disk_id, "d3")));
  EXPECT_EQ(store_.list_mappings().size(), 4u);
  EXPECT_THAT(refusal(ExitCode::not_found, [&] { store_.delete_job("j1"); }), HasSubstr("job j1 does not exist"));
}

TEST_F(StoreApiTest, AddsMappings) {
  const std::string device = dir_.file("vde");
  NewMapping request = new_mapping("11111111-2222-4333-8444-555555555555", device, 7 * kGiB);
  request.volume_id = 77;
  const DeviceMapping added = store_.add_mapping(request);
  EXPECT_EQ(added.volume_uuid, "11111111-2222-4333-8444-555555555555");
  EXPECT_EQ(added.volume_id, 77);
  EXPECT_EQ(added.device_path, device);
  EXPECT_EQ(added.size, 7 * kGiB);
  EXPECT_EQ(added.operation_mode, "oma");
  EXPECT_TRUE(added.requires_device_correlation);
  EXPECT_THAT(added.id, ::testing::MatchesRegex("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"));
  EXPECT_EQ(store_.get_mapping(kVolume4).operation_mode, "failover");
  EXPECT_FALSE(store_.get_mapping(kVolume4).requires_device_correlation);
  // 'failover' placeholders need not be paths, and may repeat, even a path an 'oma' mapping holds.
  store_.add_mapping(new_mapping("22222222-2222-4333-8444-555555555555", "remote", 1, "failover"));
  store_.add_mapping(new_mapping("33333333-2222-4333-8444-555555555555", device, 1, "failover"));
  EXPECT_EQ(store_.list_mappings().size(), 7u);
}

TEST_F(StoreApiTest, RefusesBadMappings) {
  const std::string taken = store_.get_mapping(kVolume1).device_path;
  const std::string uuid = "11111111-2222-4333-8444-555555555555";
  EXPECT_EQ(refusal(ExitCode::usage,
                    [&] { store_.add_mapping(new_mapping("11111111-2222-4333-8444-55555555555A", "/dev/vdx", 1)); }),
            "volume UUID \"11111111-2222-4333-8444-55555555555A\" is not a canonical lower-case UUID (8-4-4-4-12 hex "
            "digits, like b3bb9310-1b59-4f62-97e8-cefffdfe3804)");
  EXPECT_THAT(refusal(ExitCode::usage, [&] { store_.add_mapping(new_mapping(uuid, "dev/vdx", 1)); }),
              HasSubstr("device path \"dev/vdx\" must be an absolute path"));
  EXPECT_THAT(refusal(ExitCode::usage, [&] { store_.add_mapping(new_mapping(uuid, "/dev//vdx", 1)); }),
              HasSubstr("device path \"/dev//vdx\" must be an absolute path"));
  EXPECT_THAT(refusal(ExitCode::usage, [&] { store_.add_mapping(new_mapping(uuid, "/dev/vdx", 0)); }),
              HasSubstr("volume size 0 bytes is out of range"));
  EXPECT_THAT(refusal(ExitCode::usage, [&] { store_.add_mapping(new_mapping(uuid, "/dev/vdx", 1, "OMA")); }),
              HasSubstr("operation mode \"OMA\" is not one of oma, failover"));
  EXPECT_EQ(refusal(ExitCode::conflict, [&] { store_.add_mapping(new_mapping(uuid, taken, 1)); }),
            fmt::format("device path {} is already mapped to volume {}; an 'oma' device path maps one volume", taken,
                        kVolume1));
  EXPECT_THAT(
      refusal(ExitCode::conflict, [&] { store_.add_mapping(new_mapping(kVolume1, "/dev/vdx", 1)); }),
      HasSubstr(fmt::format("volume {} already has a device mapping (device path {}, mode oma)", kVolume1, taken)));
  EXPECT_THAT(refusal(ExitCode::usage, [&] { store_.get_mapping("nope"); }), HasSubstr("not a canonical"));
  EXPECT_THAT(refusal(ExitCode::not_found, [&] { store_.get_mapping(uuid); }),
              HasSubstr(fmt::format("volume {} has no device mapping", uuid)));
}

TEST_F(StoreApiTest, ChangesAMappingsDevicePath) {
  const std::string moved = dir_.file("vdz");
  const DeviceMapping before = store_.get_mapping(kVolume1);
  const DeviceMapping after = store_.set_mapping_path(kVolume1, moved);
  EXPECT_EQ(after.device_path, moved);
  EXPECT_EQ(after.id, before.id);
  EXPECT_EQ(store_.get_export("e1").device_path, moved) << "exports resolve their device through the mapping";
  // The same path again writes nothing.
  const std::string dumped = dump(db_.sql());
  store_.set_mapping_path(kVolume1, moved);
  EXPECT_EQ(dumped, dump(db_.sql()));
}

TEST_F(StoreApiTest, RefusesBadDevicePathChanges) {
  const std::string taken = store_.get_mapping(kVolume2).device_path;
  EXPECT_EQ(refusal(ExitCode::conflict, [&] { store_.set_mapping_path(kVolume1, taken); }),
            fmt::format("device path {} is already mapped to volume {}; an 'oma' device path maps one volume", taken,
                        kVolume2));
  EXPECT_THAT(refusal(ExitCode::usage, [&] { store_.set_mapping_path(kVolume1, "vdx"); }),
              HasSubstr("must be an absolute path"));
  EXPECT_THAT(refusal(ExitCode::not_found,
                      [&] { store_.set_mapping_path("11111111-2222-4333-8444-555555555555", "/dev/vdx"); }),
              HasSubstr("has no device mapping"));
}

TEST_F(StoreApiTest, DeletingAMappingSaysWhatWentWithIt) {
  const auto deleted = store_.delete_mapping(kVolume1);
  EXPECT_EQ(deleted.mapping.volume_uuid, kVolume1);
  ASSERT_THAT(deleted.unlinked_disks, ElementsAre(Field(&VmDisk::disk_id, "d1")));
  EXPECT_EQ(deleted.unlinked_disks[0].cloudstack_volume_uuid, std::nullopt) << "reported as it is now";
  EXPECT_THAT(deleted.exports,
              ElementsAre(Field(&NbdExport::export_name, "e1-old"), Field(&NbdExport::export_name, "e1")));
  EXPECT_EQ(store_.find_mapping(kVolume1), std::nullopt);
  EXPECT_EQ(store_.find_export("e1"), std::nullopt);
  EXPECT_EQ(store_.get_disk("j1", "d1").cloudstack_volume_uuid, std::nullopt);
  EXPECT_THAT(refusal(ExitCode::not_found, [&] { store_.delete_mapping(kVolume1); }),
              HasSubstr("has no device mapping"));
}

TEST_F(StoreApiTest, AddsAndListsDisks) {
  NewDisk request = new_disk("j2", "d4", 7);
  request.unit_number = 3;
  const VmDisk disk = store_.add_disk(request);
  EXPECT_EQ(disk.job_id, "j2");
  EXPECT_EQ(disk.disk_id, "d4");
  EXPECT_EQ(disk.size_gb, 7);
  EXPECT_THAT(disk.unit_number, Optional(3));
  EXPECT_EQ(disk.cloudstack_volume_uuid, std::nullopt);
  EXPECT_EQ(disk.sync_status, "pending");
  EXPECT_THAT(store_.list_disks("j2"), ElementsAre(Field(&VmDisk::disk_id, "d3"), Field(&VmDisk::disk_id, "d4")));
  EXPECT_EQ(store_.list_disks().size(), 4u);
  EXPECT_THAT(refusal(ExitCode::not_found, [&] { store_.list_disks(std::string("nope")); }),
              HasSubstr("job nope does not exist"));
}

TEST_F(StoreApiTest, RefusesBadDisks) {
  EXPECT_THAT(refusal(ExitCode::not_found, [&] { store_.add_disk(new_disk("nope", "d1", 1)); }),
              HasSubstr("job nope does not exist"));
  EXPECT_THAT(refusal(ExitCode::conflict, [&] { store_.add_disk(new_disk("j1", "d1", 1)); }),
              HasSubstr("job j1 already has disk d1"));
  EXPECT_THAT(refusal(ExitCode::usage, [&] { store_.add_disk(new_disk("j1", "d9", 0)); }),
              HasSubstr("disk size 0 GiB is out of range"));
  NewDisk negative_unit = new_disk("j1", "d9", 1);
  negative_unit.unit_number = -1;
  EXPECT_THAT(refusal(ExitCode::usage, [&] { store_.add_disk(negative_unit); }),
              HasSubstr("unit number -1 must not be negative"));
  EXPECT_THAT(refusal(ExitCode::not_found, [&] { store_.get_disk("j1", "d9"); }),
              HasSubstr("disk d9 of job j1 does not exist"));
}

TEST_F(StoreApiTest, LinksADiskToAVolume) {
  const auto link = store_.link_disk("j1", "d2", kVolume3);
  EXPECT_THAT(link.disk.cloudstack_volume_uuid, Optional(kVolume3));
  EXPECT_THAT(link.disk.cloudstack_volume_id, Optional(102));  // the mapping's volume_id
  EXPECT_THAT(link.revoked_exports, IsEmpty());
  // Linking the same volume again writes nothing.
  const std::string before = dump(db_.sql());
  store_.link_disk("j1", "d2", kVolume3);
  EXPECT_EQ(before, dump(db_.sql()));
}

TEST_F(StoreApiTest, RelinkingADiskSaysWhichExportsWereRevoked) {
  const auto link = store_.link_disk("j1", "d1", kVolume3);
  ASSERT_THAT(link.revoked_exports, ElementsAre(Field(&NbdExport::export_name, "e1")));
  EXPECT_EQ(link.revoked_exports[0].status_reason, "disk d1 was linked to another volume");
}

TEST_F(StoreApiTest, RefusesBadLinks) {
  EXPECT_EQ(refusal(ExitCode::conflict, [&] { store_.link_disk("j1", "d2", kVolume2); }),
            fmt::format("volume {} already backs disk d3 of job j2; a volume backs one disk", kVolume2));
  store_.add_mapping(new_mapping("11111111-2222-4333-8444-555555555555", dir_.file("small"), 5 * kGiB));
  EXPECT_EQ(refusal(ExitCode::conflict, [&] { store_.link_disk("j1", "d2", "11111111-2222-4333-8444-555555555555"); }),
            fmt::format("volume 11111111-2222-4333-8444-555555555555 ({} bytes) is smaller than disk d2 of job j1 "
                        "(10 GiB = {} bytes); link a volume at least as large as the disk",
                        5 * kGiB, 10 * kGiB));
  EXPECT_THAT(
      refusal(ExitCode::not_found, [&] { store_.link_disk("j1", "d2", "99999999-2222-4333-8444-555555555555"); }),
      HasSubstr("volume 99999999-2222-4333-8444-555555555555 has no device mapping"));
  EXPECT_THAT(refusal(ExitCode::not_found, [&] { store_.link_disk("j1", "d9", kVolume3); }),
              HasSubstr("disk d9 of job j1 does not exist"));
  EXPECT_THAT(refusal(ExitCode::not_found, [&] { store_.link_disk("nope", "d1", kVolume3); }),
              HasSubstr("job nope does not exist"));
  EXPECT_THAT(refusal(ExitCode::usage, [&] { store_.link_disk("j1", "d2", "7D1C2E9A-0C4B-4D7E-9A51-3F2E1B0C9D8A"); }),
              HasSubstr("not a canonical lower-case UUID"));
}

// What the manager serves: the pending and active exports, by id, except those of a job that has ended. A job's end
// revokes its exports (a trigger); dropped here, the view still reads them revoked.
TEST_F(StoreApiTest, LiveExportsAreThePendingAndActiveOnesOfJobsStillRunning) {
  EXPECT_THAT(store_.live_exports(),
              ElementsAre(Field(&NbdExport::export_name, "e1"), Field(&NbdExport::export_name, "e3")));
  db_.sql().exec("DROP TRIGGER IF EXISTS replication_jobs_end_revokes_exports");
  db_.sql().exec("UPDATE replication_jobs SET status = 'completed' WHERE id = 'j1'");
  EXPECT_THAT(store_.live_exports(), ElementsAre(Field(&NbdExport::export_name, "e3")));
  db_.sql().exec("UPDATE nbd_exports SET status = 'failed' WHERE export_name = 'e3'");
  EXPECT_THAT(store_.live_exports(), IsEmpty());
}

// The manager queues its writes while another process holds the store; by the time one is made, `export create`
// may have re-used the row for a new life of the export. A write about the old life must leave the new one alone.
TEST_F(StoreApiTest, WritesAboutAnExportsEarlierLifeLeaveARowReusedSinceAlone) {
  db_.sql().exec("UPDATE nbd_exports SET created_at = '2026-01-01T00:00:00.000Z' WHERE export_name = 'e3'");
  const NbdExport old_life = store_.get_export("e3");
  RevokeTarget target;
  target.export_name = "e3";
  store_.revoke_exports(target, "revoked by a test");
  NewExport request;
  request.job_id = "j2";
  request.disk_id = "d3";
  request.name = "e3";
  const NbdExport new_life =
      store_.create_export(request, PortAllocator(PortRange{.low = 41000, .high = 41099}, "127.0.0.1"));
  ASSERT_EQ(new_life.id, old_life.id);
  ASSERT_NE(new_life.created_at, old_life.created_at);

  EXPECT_FALSE(store_.record_server_serving(old_life.id, "direct", "", "127.0.0.1", old_life.created_at));
  EXPECT_FALSE(store_.fail_export(old_life.id, "the old server failed", old_life.created_at));
  EXPECT_EQ(store_.get_export("e3").status, "pending");
  EXPECT_EQ(store_.find_export_server(old_life.id), std::nullopt);

  EXPECT_TRUE(store_.record_server_serving(new_life.id, "direct", "", "127.0.0.1", new_life.created_at));
  EXPECT_EQ(store_.get_export("e3").status, "active");
  // The stop of the old life's server leaves the new one's record alone; its own stop clears it.
  store_.record_server_stopped(old_life.id, old_life.created_at);
  EXPECT_TRUE(store_.find_export_server(new_life.id)->running());
  store_.record_server_stopped(new_life.id, new_life.created_at);
  EXPECT_FALSE(store_.find_export_server(new_life.id)->running());
  EXPECT_TRUE(store_.record_server_serving(new_life.id, "direct", "", "127.0.0.1", new_life.created_at));
  EXPECT_TRUE(store_.fail_export(new_life.id, "the new server failed", new_life.created_at));
  EXPECT_EQ(store_.get_export("e3").status, "failed");
}

// bytes_synced is the disk's own: an export row re-used for another job's disk does not carry the bytes of its
// earlier life there, and that life's last counters still go to the disk it served.
TEST_F(StoreApiTest, ProgressStaysWithTheDiskEachExportLifeServed) {
  db_.sql().exec("UPDATE nbd_exports SET created_at = '2026-01-01T00:00:00.000Z' WHERE export_name = 'e3'");
  const NbdExport old_life = store_.get_export("e3");
  ExportCounterRecord counters;
  counters.export_id = old_life.id;
  counters.served_created_at = old_life.created_at;
  counters.bytes_written = 3 * 1048576;
  ASSERT_TRUE(store_.record_export_counters(counters));
  const auto synced = [&](int64_t disk) {
    return db_.sql().execAndGet(fmt::format("SELECT bytes_synced FROM vm_disks WHERE id = {}", disk)).getInt64();
  };
  EXPECT_EQ(synced(old_life.vm_disk_id), 3 * 1048576);

  RevokeTarget target;
  target.export_name = "e3";
  store_.revoke_exports(target, "revoked by a test");
  store_.link_disk("j1", "d2", kVolume3);
  NewExport request;
  request.job_id = "j1";
  request.disk_id = "d2";
  request.name = "e3";
  const NbdExport new_life =
      store_.create_export(request, PortAllocator(PortRange{.low = 41000, .high = 41099}, "127.0.0.1"));
  ASSERT_EQ(new_life.id, old_life.id);
  ASSERT_NE(new_life.vm_disk_id, old_life.vm_disk_id);
  counters.bytes_written = 4 * 1048576;  // the old life's last fold, after the row was re-used
  ASSERT_TRUE(store_.record_export_counters(counters));
  counters.served_created_at = new_life.created_at;
  counters.bytes_written = 1048576;
  ASSERT_TRUE(store_.record_export_counters(counters));
  EXPECT_EQ(synced(old_life.vm_disk_id), 4 * 1048576);
  EXPECT_EQ(synced(new_life.vm_disk_id), 1048576);
}

TEST_F(StoreApiTest, ExportWritesAreRefusedInTheUsersTerms) {
  store_.link_disk("j1", "d2", kVolume3);
  EXPECT_EQ(refusal(ExitCode::conflict, [&] { store_.add_export("j1", "d2", "x", 10809); }),
            "cannot add export x on port 10809: the port is already used by a live export");
  EXPECT_EQ(refusal(ExitCode::conflict, [&] { store_.add_export("j1", "d2", "e1", 20000); }),
            "cannot add export e1 on port 20000: an export with that name already exists");
  EXPECT_EQ(refusal(ExitCode::conflict, [&] { store_.add_export("j1", "d2", "bad name", 20000); }),
            "cannot add export bad name on port 20000: an export name must be 1 to 191 characters of A-Z, a-z, 0-9, "
            "'.', '_' and '-', starting with a letter or digit");
  store_.set_job_status("j2", "completed");
  EXPECT_EQ(refusal(ExitCode::conflict, [&] { store_.set_export_status("e3", "active"); }),
            "cannot set the status of export e3 to active: the job has ended (completed, failed or cancelled); a live "
            "export needs a running job");
}

// Whatever SQLite refuses, the translation says it in words and with exit code 4; nothing raw gets through.
TEST_F(StoreApiTest, TranslatesEveryKindOfConstraintFailure) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"UPDATE nbd_exports SET port = 10810 WHERE export_name = 'e1'", "the port is already used by a live export"},
      {"UPDATE nbd_exports SET port = 0 WHERE export_name = 'e1'", "a port must be 1 to 65535"},
      {"UPDATE nbd_exports SET port = 'x' WHERE export_name = 'e1'", "a value has the wrong type for its column"},
      {"UPDATE nbd_exports SET export_name = NULL WHERE export_name = 'e1'",
       "nbd_exports.export_name must have a value"},
      {"UPDATE vm_disks SET job_id = 'nope' WHERE disk_id = 'd2'",
       "the vm_disk's job does not exist; add the job first"},
      {"UPDATE vm_disks SET job_id = 'j2' WHERE disk_id = 'd1'", "a vm_disk with exports cannot move to another job"},
      {"INSERT INTO replication_jobs (id, source_vm_id, source_vm_name) VALUES ('j1', 'a', 'b')",
       "a job with that id already exists"},
  };
  for (const auto& [sql, sentence] : cases) {
    try {
      db_.sql().exec(sql);
      ADD_FAILURE() << "accepted: " << sql;
    } catch (const SQLite::Exception& e) {
      const Error error = store_error(e, "doing it");
      EXPECT_EQ(error.code(), ExitCode::conflict) << sql;
      EXPECT_EQ(std::string(error.what()), "doing it: " + sentence) << sql;
    }
  }
}

}  // namespace
}  // namespace nbdxm::test
