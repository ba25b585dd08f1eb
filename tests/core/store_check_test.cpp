// ExportStore::check (`nbdxm check`) finds problems planted past the schema: with foreign keys off, with a trigger
// or index dropped, with check constraints ignored, or on the file system. Each test plants one problem and
// expects exactly the lines that describe it.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "nbdxm/schema.hpp"
#include "store_test_support.hpp"

namespace nbdxm::test {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::StartsWith;
using ::testing::UnorderedElementsAre;

class CheckTest : public StoreTest {
 protected:
  CheckTest() { add_standard_rows(store_, dir_); }

  // "rule: message" for each problem found; checking must not change the store.
  std::vector<std::string> problems() {
    const std::string before = dump(db_.sql());
    std::vector<std::string> lines;
    for (const auto& problem : store_.check()) lines.push_back(problem.rule + ": " + problem.message);
    EXPECT_EQ(before, dump(db_.sql())) << "check changed the store";
    return lines;
  }

  void with_foreign_keys_off(const std::string& sql) { exec_as_older_writer(db_, sql); }

  std::string device_of(const std::string& volume) { return store_.get_mapping(volume).device_path; }
};

TEST_F(CheckTest, SoundStoreHasNoProblems) { EXPECT_THAT(problems(), IsEmpty()); }

TEST_F(CheckTest, FindsDiskWithoutItsJob) {
  with_foreign_keys_off("INSERT INTO vm_disks (job_id, disk_id, vm_dk_path, size_gb) VALUES ('gone', 'd9', 'x', 1)");
  EXPECT_THAT(problems(), UnorderedElementsAre("reference: disk d9 (vm_disks.id 4) belongs to job gone, which does "
                                               "not exist"));
}

TEST_F(CheckTest, FindsWhatAJobDeletedWithoutCascadeLeftBehind) {
  with_foreign_keys_off("DELETE FROM replication_jobs WHERE id = 'j2'");
  EXPECT_THAT(problems(),
              UnorderedElementsAre("reference: disk d3 (vm_disks.id 3) belongs to job j2, which does not exist",
                                   "reference: export e3 belongs to job j2, which does not exist"));
}

TEST_F(CheckTest, FindsWhatAMappingDeletedWithoutCascadeLeftBehind) {
  const std::string mapping_id = store_.get_mapping(kVolume1).id;
  with_foreign_keys_off(fmt::format("DELETE FROM device_mappings WHERE volume_uuid = '{}'", kVolume1));
  EXPECT_THAT(
      problems(),
      UnorderedElementsAre(
          fmt::format("reference: disk d1 of job j1 is linked to volume {}, which has no device mapping", kVolume1),
          fmt::format("reference: export e1 refers to device mapping {}, which does not exist", mapping_id),
          fmt::format("reference: export e1-old refers to device mapping {}, which does not exist", mapping_id)));
}

TEST_F(CheckTest, FindsExportsOfADeletedDisk) {
  with_foreign_keys_off("DELETE FROM vm_disks WHERE disk_id = 'd1'");
  EXPECT_THAT(problems(),
              UnorderedElementsAre("reference: export e1 refers to vm_disks.id 1, which does not exist",
                                   "reference: export e1-old refers to vm_disks.id 1, which does not exist"));
}

TEST_F(CheckTest, FindsExportOfAnotherJobsDisk) {
  exec_without_trigger(db_, "nbd_exports_job_matches_disk_insert",
                       "INSERT INTO nbd_exports (job_id, vm_disk_id, device_mapping_id, export_name, port, status) "
                       "SELECT 'j2', 1, device_mapping_id, 'x', 20000, 'failed' FROM nbd_exports WHERE export_name = "
                       "'e1'");
  EXPECT_THAT(problems(), UnorderedElementsAre("export_job: export x belongs to job j2, but its disk d1 belongs to "
                                               "job j1"));
}

TEST_F(CheckTest, FindsLiveExportOfUnlinkedDisk) {
  exec_without_trigger(db_, "nbd_exports_live_insert",
                       fmt::format("INSERT INTO nbd_exports (job_id, vm_disk_id, device_mapping_id, export_name, port) "
                                   "SELECT 'j1', 2, id, 'x', 20000 FROM device_mappings WHERE volume_uuid = '{}'",
                                   kVolume3));
  EXPECT_THAT(problems(), UnorderedElementsAre("live_export_device: live export x is of disk d2 of job j1, which has "
                                               "no linked volume"));
}

TEST_F(CheckTest, FindsLiveExportOfAnotherVolume) {
  db_.sql().exec("UPDATE nbd_exports SET status = 'revoked' WHERE export_name = 'e3'");
  store_.link_disk("j1", "d2", kVolume3);
  exec_without_trigger(db_, "nbd_exports_live_insert",
                       fmt::format("INSERT INTO nbd_exports (job_id, vm_disk_id, device_mapping_id, export_name, port) "
                                   "SELECT 'j1', 2, id, 'x', 20000 FROM device_mappings WHERE volume_uuid = '{}'",
                                   kVolume2));
  EXPECT_THAT(problems(), UnorderedElementsAre(fmt::format("live_export_device: live export x serves volume {}, but "
                                                           "its disk d2 of job j1 is linked to volume {}",
                                                           kVolume2, kVolume3)));
}

TEST_F(CheckTest, FindsLiveExportOfEndedJob) {
  exec_without_trigger(db_, "replication_jobs_end_revokes_exports",
                       "UPDATE replication_jobs SET status = 'completed' WHERE id = 'j1'");
  EXPECT_THAT(problems(), UnorderedElementsAre("live_export_job: live export e1 belongs to job j1, which has ended "
                                               "(completed)"));
}

TEST_F(CheckTest, FindsLiveExportOfRelinkedDisk) {
  exec_without_trigger(db_, "vm_disks_relink_revokes_exports",
                       fmt::format("UPDATE vm_disks SET cloudstack_volume_uuid = '{}' WHERE disk_id = 'd1'", kVolume3));
  EXPECT_THAT(problems(), UnorderedElementsAre(fmt::format("live_export_device: live export e1 serves volume {}, but "
                                                           "its disk d1 of job j1 is linked to volume {}",
                                                           kVolume1, kVolume3)));
}

TEST_F(CheckTest, FindsLiveExportOfFailoverVolume) {
  exec_without_trigger(
      db_, "device_mappings_failover_revokes_exports",
      fmt::format("UPDATE device_mappings SET operation_mode = 'failover' WHERE volume_uuid = '{}'", kVolume2));
  EXPECT_THAT(problems(), UnorderedElementsAre(fmt::format("live_export_device: live export e3 serves volume {}, "
                                                           "which is in failover mode (attached to another VM)",
                                                           kVolume2)));
}

TEST_F(CheckTest, FindsDiskLargerThanItsVolume) {
  exec_without_trigger(db_, "vm_disks_volume_fits_update", "UPDATE vm_disks SET size_gb = 50 WHERE disk_id = 'd1'");
  EXPECT_THAT(problems(), UnorderedElementsAre(fmt::format("volume_size: disk d1 of job j1 (50 GiB) is linked to "
                                                           "volume {} of only {} bytes",
                                                           kVolume1, 10 * kGiB)));
}

TEST_F(CheckTest, FindsTwoLiveExportsOnOnePortAndTheMissingIndex) {
  store_.link_disk("j1", "d2", kVolume3);
  db_.sql().exec("DROP INDEX idx_nbd_exports_live_port");
  store_.add_export("j1", "d2", "x", 10809);
  EXPECT_THROW(db_.sql().exec("CREATE UNIQUE INDEX idx_nbd_exports_live_port ON nbd_exports (port) "
                              "WHERE status IN ('pending', 'active')"),
               SQLite::Exception);
  EXPECT_THAT(problems(), UnorderedElementsAre(AllOf(StartsWith("schema: index idx_nbd_exports_live_port is missing"),
                                                     HasSubstr("not enforced")),
                                               "unique: port 10809 is used by 2 live exports: e1, x"));
}

TEST_F(CheckTest, FindsOneDeviceMappedTwice) {
  db_.sql().exec("DROP INDEX idx_device_mappings_oma_device_path");
  const std::string device = device_of(kVolume1);
  const std::string other = "11111111-2222-4333-8444-555555555555";
  db_.sql().exec(
      fmt::format("INSERT INTO device_mappings (volume_uuid, volume_id, vm_id, device_path, size) "
                  "VALUES ('{}', 7, 'a', '{}', 1)",
                  other, device));
  EXPECT_THAT(problems(),
              UnorderedElementsAre(
                  StartsWith("schema: index idx_device_mappings_oma_device_path is missing"),
                  fmt::format("unique: device path {} is mapped to 2 oma volumes: {}, {}", device, kVolume1, other),
                  fmt::format("device: volumes {} ({}) and {} ({}) are mapped to the same device", other, device,
                              kVolume1, device)));
}

TEST_F(CheckTest, FindsValuesWrittenWithCheckConstraintsIgnored) {
  db_.sql().exec("PRAGMA ignore_check_constraints = ON");
  db_.sql().exec("UPDATE nbd_exports SET port = 70000 WHERE export_name = 'e1-old'");
  db_.sql().exec(
      "INSERT INTO device_mappings (id, volume_uuid, volume_id, vm_id, device_path, size, operation_mode) "
      "VALUES ('m9', 'B3BB9310-1B59-4F62-97E8-CEFFFDFE3804', 7, 'a', 'remote', 1, 'failover')");
  db_.sql().exec("PRAGMA ignore_check_constraints = OFF");
  EXPECT_THAT(problems(),
              UnorderedElementsAre("value: export e1-old has port 70000; a port must be 1 to 65535",
                                   "value: device mapping m9 (volume B3BB9310-1B59-4F62-97E8-CEFFFDFE3804) has "
                                   "volume_uuid 'B3BB9310-1B59-4F62-97E8-CEFFFDFE3804'; a volume UUID must be a "
                                   "canonical lower-case UUID"));
}

TEST_F(CheckTest, FindsMissingAndAlteredTriggers) {
  db_.sql().exec("DROP TRIGGER vm_disks_touch");
  db_.sql().exec("DROP TRIGGER replication_jobs_end_revokes_exports");
  db_.sql().exec(
      "CREATE TRIGGER replication_jobs_end_revokes_exports AFTER UPDATE OF status ON replication_jobs "
      "BEGIN SELECT 1; END");
  EXPECT_THAT(problems(), UnorderedElementsAre(StartsWith("schema: trigger vm_disks_touch is missing"),
                                               "schema: trigger replication_jobs_end_revokes_exports differs from "
                                               "the schema of this nbdxm"));
}

TEST_F(CheckTest, FindsAnIndexThatDisagreesWithItsTable) {
  // writable_schema lets a tool redefine an index without rebuilding it: its entries no longer match the rows.
  db_.sql().exec("PRAGMA writable_schema = ON");
  db_.sql().exec(
      "UPDATE sqlite_schema SET sql = 'CREATE INDEX idx_replication_jobs_status ON replication_jobs "
      "(source_vm_name)' WHERE name = 'idx_replication_jobs_status'");
  db_.sql().exec("PRAGMA writable_schema = OFF");
  Database reopened = Database::open(path_, Database::Access::read_only);
  ExportStore store(reopened);
  std::vector<std::string> lines;
  for (const auto& problem : store.check()) lines.push_back(problem.rule + ": " + problem.message);
  EXPECT_THAT(lines, UnorderedElementsAre("integrity: SQLite integrity check: row 1 missing from index "
                                          "idx_replication_jobs_status",
                                          "integrity: SQLite integrity check: row 2 missing from index "
                                          "idx_replication_jobs_status",
                                          "schema: index idx_replication_jobs_status differs from the schema of this "
                                          "nbdxm"));
}

TEST_F(CheckTest, ReportsADamagedFileInsteadOfStopping) {
  // Garbage over the table of disks: SQLite cannot read it, and says so through check.
  const int64_t root_page =
      db_.sql().execAndGet("SELECT rootpage FROM sqlite_schema WHERE name = 'vm_disks'").getInt64();
  const int64_t page_size = db_.sql().execAndGet("PRAGMA page_size").getInt64();
  db_.sql().exec("PRAGMA wal_checkpoint(TRUNCATE)");
  {
    std::fstream file(path_, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp((root_page - 1) * page_size);
    const std::string garbage(static_cast<size_t>(page_size), '\xa5');
    file.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
  }
  Database reopened = Database::open(path_, Database::Access::read_only);
  ExportStore store(reopened);
  const auto found = store.check();
  ASSERT_THAT(found, Not(IsEmpty()));
  for (const auto& problem : found) EXPECT_EQ(problem.rule, "integrity") << problem.message;
}

TEST_F(CheckTest, FindsMissingDevice) {
  const std::string device = device_of(kVolume3);
  std::filesystem::remove(device);
  EXPECT_THAT(problems(), UnorderedElementsAre(fmt::format("device: device {} of volume {} does not exist (No such "
                                                           "file or directory)",
                                                           device, kVolume3)));
}

TEST_F(CheckTest, FindsDeviceThatIsNeitherBlockDeviceNorFile) {
  store_.set_mapping_path(kVolume3, dir_.path());
  EXPECT_THAT(problems(), UnorderedElementsAre(fmt::format("device: device {} of volume {} is neither a block "
                                                           "device nor a regular file",
                                                           dir_.path(), kVolume3)));
}

TEST_F(CheckTest, FindsOneDeviceUnderTwoNames) {
  // /dev/disk/by-id links and /dev/vdX name the same device; the store cannot see that, check can.
  const std::string link = dir_.file("by-id-link");
  std::filesystem::create_symlink(device_of(kVolume1), link);
  store_.set_mapping_path(kVolume3, link);
  EXPECT_THAT(problems(), UnorderedElementsAre(fmt::format("device: volumes {} ({}) and {} ({}) are mapped to the "
                                                           "same device",
                                                           kVolume3, link, kVolume1, device_of(kVolume1))));
}

TEST_F(CheckTest, FailoverPlaceholdersAreNotDevices) {
  // Volume 4 is 'failover' with the placeholder "remote": not a problem.
  EXPECT_EQ(store_.get_mapping(kVolume4).device_path, "remote");
  EXPECT_THAT(problems(), IsEmpty());
}

// A store of schema version 2 (no triggers for references), written by a service whose connection leaves foreign keys
// off: deleting a job or a mapping left rows behind. The upgrade to the current version keeps those rows (it must not
// fail on them), check names each, and no export of theirs reads as live.
TEST(CheckOfAnUpgradedStore, ReportsWhatAVersion2WriterWithForeignKeysOffLeftBroken) {
  TempDir dir;
  const std::string path = dir.file("state.db");
  create_store_at_version(path, 2);
  {
    SQLite::Database older(path, SQLite::OPEN_READWRITE);
    older.exec("PRAGMA foreign_keys = OFF");
    std::string rows =
        "INSERT INTO replication_jobs (id, source_vm_id, source_vm_name, status) VALUES "
        "('j1', 'vm-1', 'web01', 'replicating'), ('j2', 'vm-2', 'db01', 'replicating'), "
        "('j3', 'vm-3', 'app01', 'replicating');";
    const std::vector<std::string> volumes{kVolume1, kVolume2, kVolume3};
    for (int i = 1; i <= 3; ++i) {
      const std::string device = dir.file(fmt::format("vd{}", i));
      create_volume_file(device, kGiB);
      rows += fmt::format(
          "INSERT INTO device_mappings (id, volume_uuid, volume_id, vm_id, device_path, size) "
          "VALUES ('m{0}', '{1}', {0}, 'appliance', '{2}', {3});"
          "INSERT INTO vm_disks (id, job_id, disk_id, vm_dk_path, size_gb, cloudstack_volume_uuid) "
          "VALUES ({0}, 'j{0}', 'd{0}', 'x.vmdk', 1, '{1}');"
          "INSERT INTO nbd_exports (id, job_id, vm_disk_id, device_mapping_id, export_name, port, status) "
          "VALUES ({0}, 'j{0}', {0}, 'm{0}', 'e{0}', {4}, 'active');"
          "INSERT INTO export_servers (export_id) VALUES ({0});",
          i, volumes[i - 1], device, kGiB, 10808 + i);
    }
    older.exec(rows);
    older.exec("DELETE FROM replication_jobs WHERE id = 'j1'");
    // Deleted and added again, ended: the end of a job revokes its exports only when its status changes.
    older.exec("DELETE FROM replication_jobs WHERE id = 'j2'");
    older.exec(
        "INSERT INTO replication_jobs (id, source_vm_id, source_vm_name, status) "
        "VALUES ('j2', 'vm-2', 'db01', 'completed')");
    older.exec("DELETE FROM device_mappings WHERE id = 'm3'");
    older.exec("INSERT INTO vm_disks (id, job_id, disk_id, vm_dk_path, size_gb) VALUES (9, 'gone', 'd9', 'x', 1)");
    older.exec("INSERT INTO export_servers (export_id) VALUES (99)");
  }
  Database db = Database::open(path, Database::Access::read_write);
  const auto upgraded = db.init();
  EXPECT_EQ(upgraded.from_version, 2);
  EXPECT_EQ(upgraded.to_version, schema::latest_version());
  EXPECT_EQ(db.sql().execAndGet("SELECT count(*) FROM nbd_exports WHERE status = 'active'").getInt(), 3);
  EXPECT_EQ(db.sql().execAndGet("SELECT count(*) FROM export_devices WHERE status IN ('pending', 'active')").getInt(),
            0);

  ExportStore store(db);
  std::vector<std::string> lines;
  for (const auto& problem : store.check()) lines.push_back(problem.rule + ": " + problem.message);
  EXPECT_THAT(lines, UnorderedElementsAre(
                         "reference: disk d1 (vm_disks.id 1) belongs to job j1, which does not exist",
                         "reference: disk d9 (vm_disks.id 9) belongs to job gone, which does not exist",
                         "reference: export e1 belongs to job j1, which does not exist",
                         fmt::format("reference: disk d3 of job j3 is linked to volume {}, which has no device mapping",
                                     kVolume3),
                         "reference: export e3 refers to device mapping m3, which does not exist",
                         "live_export_job: live export e2 belongs to job j2, which has ended (completed)",
                         "reference: export_servers row 99 refers to a nbd_exports row that does not exist"));
}

}  // namespace
}  // namespace nbdxm::test
