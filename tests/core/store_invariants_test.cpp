// The invariants of issue 2, each tried against raw SQL as any appliance service may write it: the write must be
// refused by the rule meant, and the store must be unchanged (full dump). Every test runs twice, on a connection with
// foreign keys on and on one with them off (SQLite's default, which many services' drivers keep): the rules must hold
// for both, so a reference is refused, and a cleanup done, by the schema's triggers in either case.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <SQLiteCpp/Statement.h>

#include "store_test_support.hpp"

namespace nbdxm::test {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;

std::string mapping_id(const std::string& volume_uuid) {
  return fmt::format("(SELECT id FROM device_mappings WHERE volume_uuid = '{}')", volume_uuid);
}
std::string disk_row(const std::string& disk_id) {
  return fmt::format("(SELECT id FROM vm_disks WHERE disk_id = '{}')", disk_id);
}
// An export row for the given job, disk and volume.
std::string insert_export(const std::string& job, const std::string& disk, const std::string& volume,
                          const std::string& name, int port, const std::string& status) {
  return fmt::format(
      "INSERT INTO nbd_exports (job_id, vm_disk_id, device_mapping_id, export_name, port, status) "
      "VALUES ('{}', {}, {}, '{}', {}, '{}')",
      job, disk_row(disk), mapping_id(volume), name, port, status);
}

// The standard store, written through a connection whose foreign keys are on or off as the test's parameter says.
class RulesTest : public StoreTest {
 protected:
  RulesTest() { add_standard_rows(store_, dir_); }
  void set_foreign_keys(bool on) {
    db_.sql().exec(fmt::format("PRAGMA foreign_keys = {}", on ? "ON" : "OFF"));
    ASSERT_EQ(count("PRAGMA foreign_keys"), on ? 1 : 0);
  }
  int64_t count(const std::string& sql) { return db_.sql().execAndGet(sql).getInt64(); }
  std::string text(const std::string& sql) { return db_.sql().execAndGet(sql).getString(); }
};

std::string foreign_keys_name(bool on) { return on ? "ForeignKeysOn" : "ForeignKeysOff"; }

class InvariantTest : public RulesTest, public ::testing::WithParamInterface<bool> {
 protected:
  void SetUp() override { set_foreign_keys(GetParam()); }
};

INSTANTIATE_TEST_SUITE_P(Writers, InvariantTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& param_info) {
                           return foreign_keys_name(param_info.param);
                         });

// --- Invariant 1: every vm_disk has its job; every export has its job, its vm_disk and its device mapping.

TEST_P(InvariantTest, DiskNeedsItsJob) {
  EXPECT_EQ(expect_refused(db_,
                           "INSERT INTO vm_disks (job_id, disk_id, vm_dk_path, size_gb) "
                           "VALUES ('nope', 'd9', 'x.vmdk', 1)"),
            "the vm_disk's job does not exist; add the job first");
  EXPECT_EQ(expect_refused(db_, "UPDATE vm_disks SET job_id = 'nope' WHERE disk_id = 'd2'"),
            "the vm_disk's job does not exist; add the job first");
}

TEST_P(InvariantTest, ExportNeedsItsJobDiskAndMapping) {
  // Not live, so that the rules of live exports do not speak first.
  EXPECT_EQ(expect_refused(db_,
                           "INSERT INTO nbd_exports (job_id, vm_disk_id, device_mapping_id, export_name, port, "
                           "status) VALUES ('j1', 999, " +
                               mapping_id(kVolume1) + ", 'x', 1, 'failed')"),
            "the export's vm_disk does not exist");
  EXPECT_EQ(expect_refused(db_, "UPDATE nbd_exports SET vm_disk_id = 999 WHERE export_name = 'e1-old'"),
            "the export's vm_disk does not exist");
  EXPECT_EQ(expect_refused(db_,
                           "INSERT INTO nbd_exports (job_id, vm_disk_id, device_mapping_id, export_name, port, "
                           "status) VALUES ('j1', " +
                               disk_row("d1") + ", 'no-such-mapping', 'x', 1, 'failed')"),
            "the export's device mapping does not exist");
  EXPECT_EQ(expect_refused(db_,
                           "UPDATE nbd_exports SET device_mapping_id = 'no-such-mapping' "
                           "WHERE export_name = 'e1-old'"),
            "the export's device mapping does not exist");
  // A job that does not exist cannot own the export: refused (by the job check or the disk's-job rule).
  EXPECT_THAT(expect_refused(db_, insert_export("nope", "d2", kVolume3, "x", 1, "failed")),
              AnyOf(HasSubstr("the export's job does not exist"), HasSubstr("same job")));
  EXPECT_THAT(expect_refused(db_, "UPDATE nbd_exports SET job_id = 'nope' WHERE export_name = 'e1-old'"),
              AnyOf(HasSubstr("the export's job does not exist"), HasSubstr("same job")));
}

TEST_P(InvariantTest, ServerRecordNeedsItsExport) {
  EXPECT_EQ(expect_refused(db_, "INSERT INTO export_servers (export_id) VALUES (999)"),
            "the export of the server record does not exist");
  db_.sql().exec("INSERT INTO export_servers (export_id) SELECT id FROM nbd_exports WHERE export_name = 'e1'");
  EXPECT_EQ(expect_refused(db_, "UPDATE export_servers SET export_id = 999"),
            "the export of the server record does not exist");
}

// A row that others refer to keeps its key (with foreign keys on, as with them off).
TEST_P(InvariantTest, KeysThatOthersReferToStay) {
  EXPECT_EQ(expect_refused(db_, "UPDATE replication_jobs SET id = 'j9' WHERE id = 'j1'"),
            "a job that has disks or exports cannot change its id");
  EXPECT_EQ(expect_refused(db_, "UPDATE device_mappings SET id = 'renamed' WHERE volume_uuid = '" + kVolume1 + "'"),
            "a device mapping that has exports cannot change its id");
  EXPECT_EQ(expect_refused(db_, "UPDATE vm_disks SET id = 99 WHERE disk_id = 'd1'"),
            "a vm_disk that has exports cannot change its id");
  db_.sql().exec("INSERT INTO export_servers (export_id) SELECT id FROM nbd_exports WHERE export_name = 'e1'");
  EXPECT_EQ(expect_refused(db_, "UPDATE nbd_exports SET id = 99 WHERE export_name = 'e1'"),
            "an export that has a server record cannot change its id");
  // Rows nothing refers to may change their keys.
  db_.sql().exec("INSERT INTO replication_jobs (id, source_vm_id, source_vm_name) VALUES ('j3', 'v', 'n')");
  db_.sql().exec("UPDATE replication_jobs SET id = 'j4' WHERE id = 'j3'");
  db_.sql().exec("UPDATE device_mappings SET id = 'renamed' WHERE volume_uuid = '" + kVolume3 + "'");
  EXPECT_EQ(count("SELECT count(*) FROM replication_jobs WHERE id = 'j4'"), 1);
}

TEST_P(InvariantTest, LinkedVolumeMustHaveAMapping) {
  const std::string no_mapping =
      "the volume has no device mapping; add the mapping before linking a disk to the volume";
  EXPECT_EQ(expect_refused(db_,
                           "UPDATE vm_disks SET cloudstack_volume_uuid = '11111111-2222-4333-8444-555555555555'"
                           " WHERE disk_id = 'd2'"),
            no_mapping);
  EXPECT_EQ(expect_refused(db_,
                           "INSERT INTO vm_disks (job_id, disk_id, vm_dk_path, size_gb, cloudstack_volume_uuid) "
                           "VALUES ('j2', 'd9', 'x.vmdk', 1, '11111111-2222-4333-8444-555555555555')"),
            no_mapping);
  // The UUID of a volume that backs a disk cannot change under it.
  EXPECT_EQ(expect_refused(db_, fmt::format("UPDATE device_mappings SET volume_uuid = "
                                            "'11111111-2222-4333-8444-555555555555' WHERE volume_uuid = '{}'",
                                            kVolume1)),
            "the UUID of a volume that a disk is linked to cannot change; unlink the disk first");
}

// --- Invariant 2: an export's job is its vm_disk's job.

TEST_P(InvariantTest, ExportJobIsItsDisksJob) {
  EXPECT_THAT(expect_refused(db_, insert_export("j2", "d1", kVolume1, "x", 20000, "failed")),
              HasSubstr("same job as its vm_disk"));
  EXPECT_THAT(expect_refused(db_, "UPDATE nbd_exports SET job_id = 'j2' WHERE export_name = 'e1'"),
              HasSubstr("same job as its vm_disk"));
  EXPECT_THAT(
      expect_refused(db_, "UPDATE nbd_exports SET vm_disk_id = " + disk_row("d3") + " WHERE export_name = 'e1-old'"),
      HasSubstr("same job as its vm_disk"));
  EXPECT_THAT(expect_refused(db_, "UPDATE vm_disks SET job_id = 'j2' WHERE disk_id = 'd1'"),
              HasSubstr("cannot move to another job"));
}

// --- Invariant 3: a live export serves the mapping its vm_disk is linked to; an unlinked disk cannot be exported.

TEST_P(InvariantTest, UnlinkedDiskCannotBeExported) {
  EXPECT_THAT(expect_refused(db_, insert_export("j1", "d2", kVolume3, "x", 20000, "pending")),
              HasSubstr("no linked volume"));
  EXPECT_THAT(expect_refused(db_, insert_export("j1", "d2", kVolume3, "x", 20000, "active")),
              HasSubstr("no linked volume"));
  // A record of a failed attempt is not an export being served: allowed.
  db_.sql().exec(insert_export("j1", "d2", kVolume3, "x", 20000, "failed"));
  EXPECT_THAT(expect_refused(db_, "UPDATE nbd_exports SET status = 'pending' WHERE export_name = 'x'"),
              HasSubstr("no linked volume"));
}

TEST_P(InvariantTest, LiveExportServesItsDisksVolume) {
  EXPECT_THAT(expect_refused(db_, "UPDATE nbd_exports SET device_mapping_id = " + mapping_id(kVolume3) +
                                      " WHERE export_name = 'e1'"),
              HasSubstr("not the volume its vm_disk is linked to"));
  // Revoked with another volume is history; bringing it back to life is refused.
  db_.sql().exec("UPDATE nbd_exports SET device_mapping_id = " + mapping_id(kVolume3) +
                 " WHERE export_name = 'e1-old'");
  EXPECT_THAT(expect_refused(db_,
                             "UPDATE nbd_exports SET status = 'active', port = 20000 "
                             "WHERE export_name = 'e1-old'"),
              AnyOf(HasSubstr("not the volume its vm_disk is linked to"), HasSubstr("UNIQUE")));
  db_.sql().exec("UPDATE nbd_exports SET status = 'revoked' WHERE export_name = 'e1'");
  EXPECT_THAT(expect_refused(db_,
                             "UPDATE nbd_exports SET status = 'active', port = 20000 "
                             "WHERE export_name = 'e1-old'"),
              HasSubstr("not the volume its vm_disk is linked to"));
}

TEST_P(InvariantTest, FailoverVolumeCannotBeExported) {
  db_.sql().exec(fmt::format("UPDATE vm_disks SET cloudstack_volume_uuid = '{}' WHERE disk_id = 'd2'", kVolume4));
  EXPECT_THAT(expect_refused(db_, insert_export("j1", "d2", kVolume4, "x", 20000, "pending")),
              HasSubstr("failover mode"));
}

TEST_P(InvariantTest, EndedJobCannotHaveLiveExports) {
  db_.sql().exec("UPDATE replication_jobs SET status = 'completed' WHERE id = 'j2'");
  db_.sql().exec("DELETE FROM nbd_exports WHERE export_name = 'e3'");
  EXPECT_THAT(expect_refused(db_, insert_export("j2", "d3", kVolume2, "x", 20000, "pending")),
              HasSubstr("the job has ended"));
  db_.sql().exec(insert_export("j2", "d3", kVolume2, "x", 20000, "failed"));
  EXPECT_THAT(expect_refused(db_, "UPDATE nbd_exports SET status = 'active' WHERE export_name = 'x'"),
              HasSubstr("the job has ended"));
}

TEST_P(InvariantTest, VolumeMustHoldItsDisk) {
  // d2 is 10 GiB; a 5 GiB volume cannot receive it.
  db_.sql().exec(
      fmt::format("INSERT INTO device_mappings (volume_uuid, volume_id, vm_id, device_path, size) "
                  "VALUES ('11111111-2222-4333-8444-555555555555', 7, 'a', '/dev/vdz', {})",
                  5 * kGiB));
  EXPECT_THAT(expect_refused(db_,
                             "UPDATE vm_disks SET cloudstack_volume_uuid = "
                             "'11111111-2222-4333-8444-555555555555' WHERE disk_id = 'd2'"),
              HasSubstr("smaller than the disk"));
  EXPECT_THAT(expect_refused(db_,
                             "INSERT INTO vm_disks (job_id, disk_id, vm_dk_path, size_gb, cloudstack_volume_uuid)"
                             " VALUES ('j2', 'big', 'b.vmdk', 6, '11111111-2222-4333-8444-555555555555')"),
              HasSubstr("smaller than the disk"));
  EXPECT_THAT(expect_refused(db_, "UPDATE vm_disks SET size_gb = 11 WHERE disk_id = 'd1'"),
              HasSubstr("smaller than the disk"));
  EXPECT_THAT(expect_refused(db_, fmt::format("UPDATE device_mappings SET size = {} WHERE volume_uuid = '{}'", 4 * kGiB,
                                              kVolume1)),
              HasSubstr("smaller than the disk"));
}

// --- Invariant 4: one live export per port, per vm_disk and per mapping; a volume backs one disk; (job, disk) unique.

TEST_P(InvariantTest, OneLiveExportPerPort) {
  db_.sql().exec(fmt::format("UPDATE vm_disks SET cloudstack_volume_uuid = '{}' WHERE disk_id = 'd2'", kVolume3));
  EXPECT_THAT(expect_refused(db_, insert_export("j1", "d2", kVolume3, "x", 10809, "pending")),
              HasSubstr("UNIQUE constraint failed: nbd_exports.port"));
  // Revoked and failed exports keep their port as history; a live one may take it.
  db_.sql().exec(insert_export("j1", "d2", kVolume3, "x", 10810, "failed"));
  EXPECT_THAT(expect_refused(db_, "UPDATE nbd_exports SET status = 'pending' WHERE export_name = 'x'"),
              HasSubstr("UNIQUE constraint failed: nbd_exports.port"));
}

// Port uniqueness holds among tcp exports only: a unix or shared export has no port of its own (schema version 6).
TEST_P(InvariantTest, PortUniquenessIsForTcpExportsOnly) {
  db_.sql().exec(fmt::format("UPDATE vm_disks SET cloudstack_volume_uuid = '{}' WHERE disk_id = 'd2'", kVolume3));
  db_.sql().exec(fmt::format(
      "INSERT INTO nbd_exports (job_id, vm_disk_id, device_mapping_id, export_name, port, status, transport) "
      "VALUES ('j1', {}, {}, 'x', 10809, 'pending', 'unix')",
      disk_row("d2"), mapping_id(kVolume3)));
  EXPECT_EQ(count("SELECT count(*) FROM export_devices WHERE export_name = 'x' AND port IS NULL"), 1);
  EXPECT_THAT(expect_refused(db_, "UPDATE nbd_exports SET transport = 'tcp' WHERE export_name = 'x'"),
              HasSubstr("UNIQUE constraint failed: nbd_exports.port"));
}

// Who may reach an export fits its transport, for every writer: addresses for tcp, uid/gid rules for unix, no TLS
// on the shared listener.
TEST_P(InvariantTest, AccessRulesFitTheTransport) {
  EXPECT_EQ(expect_refused(db_,
                           "UPDATE nbd_exports SET transport = 'unix', allow_from = '127.0.0.1/32' "
                           "WHERE export_name = 'e1-old'"),
            "allow_from (client addresses) is for tcp exports; a unix export takes allow_peers (uid:N, gid:N)");
  EXPECT_EQ(expect_refused(db_, "UPDATE nbd_exports SET allow_peers = 'uid:0' WHERE export_name = 'e1-old'"),
            "allow_peers (uid:N, gid:N) is for unix exports; a tcp export takes allow_from (addresses)");
  EXPECT_EQ(expect_refused(db_, "UPDATE nbd_exports SET transport = 'shared', tls = 1 WHERE export_name = 'e1-old'"),
            "a shared export cannot require TLS: the shared server cannot tell which key a client used");
  EXPECT_THAT(expect_refused(db_,
                             "UPDATE nbd_exports SET transport = 'unix', allow_peers = 'uid:x' "
                             "WHERE export_name = 'e1-old'"),
              HasSubstr("export_allow_peers_format"));
  EXPECT_THAT(expect_refused(db_, "UPDATE nbd_exports SET transport = 'udp' WHERE export_name = 'e1-old'"),
              HasSubstr("export_transport_valid"));
}

// allow_peers holds exactly what the CLI records (ClientAllowlist::str): uid:N and gid:N items, N a number from 0 to
// 4294967295 without a leading zero, comma-separated; anything else a writer puts there is refused.
TEST_P(InvariantTest, AllowPeersHoldsOnlyWhatTheCliRecords) {
  db_.sql().exec("UPDATE nbd_exports SET transport = 'unix' WHERE export_name = 'e1-old'");
  const auto set_peers = [](const std::string& value) {
    return fmt::format("UPDATE nbd_exports SET allow_peers = '{}' WHERE export_name = 'e1-old'", value);
  };
  for (const char* accepted : {"uid:0", "gid:0", "uid:4294967295", "gid:3999999999", "uid:1,gid:20,uid:65534"}) {
    db_.sql().exec(set_peers(accepted));
    EXPECT_EQ(count(fmt::format("SELECT count(*) FROM nbd_exports WHERE allow_peers = '{}'", accepted)), 1) << accepted;
  }
  for (const char* refused :
       {"uid:1x",         "uid:1d",          "uid:1i",       "uid:",   "uid::1", "uid:01",    "uid:4294967296",
        "uid:5000000000", "uid:99999999999", "uid:1,,gid:2", "uid:1,", ",uid:1", "uid:1,x:1", "uid:1gid:2",
        "uid:uid:1",      "uid:1:2",         "gid:-1",       " uid:1", "#1234",  "uid:1,#2",  "uid:1,gid:",
        "guid:1",         "uid:i1",          "uid:1,uid:di", "UID:1"}) {
    EXPECT_THAT(expect_refused(db_, set_peers(refused)), HasSubstr("export_allow_peers_format")) << refused;
  }
}

TEST_P(InvariantTest, OneLiveExportPerDisk) {
  EXPECT_THAT(expect_refused(db_, insert_export("j1", "d1", kVolume1, "x", 20000, "pending")),
              AnyOf(HasSubstr("UNIQUE constraint failed: nbd_exports.vm_disk_id"),
                    HasSubstr("UNIQUE constraint failed: nbd_exports.device_mapping_id")));
}

TEST_P(InvariantTest, OneLiveExportPerMappingEvenWithoutTheTriggers) {
  // The triggers already tie a live export to its disk's only volume; the partial index holds on its own too.
  db_.sql().exec("DROP TRIGGER nbd_exports_live_insert");
  EXPECT_THAT(expect_refused(db_, insert_export("j1", "d2", kVolume1, "x", 20000, "pending")),
              HasSubstr("UNIQUE constraint failed: nbd_exports.device_mapping_id"));
}

TEST_P(InvariantTest, VolumeBacksOneDisk) {
  EXPECT_THAT(expect_refused(
                  db_, fmt::format("UPDATE vm_disks SET cloudstack_volume_uuid = '{}' WHERE disk_id = 'd2'", kVolume2)),
              HasSubstr("UNIQUE constraint failed: vm_disks.cloudstack_volume_uuid"));
}

TEST_P(InvariantTest, DiskIdUniqueWithinJob) {
  EXPECT_THAT(expect_refused(db_,
                             "INSERT INTO vm_disks (job_id, disk_id, vm_dk_path, size_gb) "
                             "VALUES ('j1', 'd1', 'other.vmdk', 1)"),
              HasSubstr("UNIQUE constraint failed: vm_disks.job_id, vm_disks.disk_id"));
  db_.sql().exec("INSERT INTO vm_disks (job_id, disk_id, vm_dk_path, size_gb) VALUES ('j2', 'd1', 'other.vmdk', 1)");
}

TEST_P(InvariantTest, OmaDevicePathMapsOneVolume) {
  const std::string taken =
      text(fmt::format("SELECT device_path FROM device_mappings WHERE volume_uuid = '{}'", kVolume1));
  EXPECT_THAT(expect_refused(db_, fmt::format("INSERT INTO device_mappings (volume_uuid, volume_id, vm_id, "
                                              "device_path, size) VALUES ('11111111-2222-4333-8444-555555555555', 7, "
                                              "'a', '{}', 1)",
                                              taken)),
              HasSubstr("UNIQUE constraint failed: device_mappings.device_path"));
  EXPECT_THAT(expect_refused(db_, fmt::format("UPDATE device_mappings SET device_path = '{}' WHERE volume_uuid = '{}'",
                                              taken, kVolume3)),
              HasSubstr("UNIQUE constraint failed: device_mappings.device_path"));
  // 'failover' rows hold placeholders and may share them, or a path an 'oma' row holds...
  db_.sql().exec(
      fmt::format("INSERT INTO device_mappings (volume_uuid, volume_id, vm_id, device_path, size, "
                  "operation_mode) VALUES ('11111111-2222-4333-8444-555555555555', 7, 'a', 'remote', 1, "
                  "'failover'), ('22222222-2222-4333-8444-555555555555', 8, 'a', '{}', 1, 'failover')",
                  taken));
  // ...but cannot come back to 'oma' on a path an 'oma' row holds.
  EXPECT_THAT(expect_refused(db_,
                             "UPDATE device_mappings SET operation_mode = 'oma' "
                             "WHERE volume_uuid = '22222222-2222-4333-8444-555555555555'"),
              HasSubstr("UNIQUE constraint failed: device_mappings.device_path"));
}

TEST_P(InvariantTest, VolumeHasOneMappingAndExportNamesAreUnique) {
  EXPECT_THAT(expect_refused(db_, fmt::format("INSERT INTO device_mappings (volume_uuid, volume_id, vm_id, "
                                              "device_path, size) VALUES ('{}', 7, 'a', '/dev/vdz', 1)",
                                              kVolume1)),
              HasSubstr("UNIQUE constraint failed: device_mappings.volume_uuid"));
  EXPECT_THAT(expect_refused(db_, insert_export("j1", "d1", kVolume1, "e1-old", 20000, "failed")),
              HasSubstr("UNIQUE constraint failed: nbd_exports.export_name"));
}

// --- Invariant 5: formats, ranges and sets.

struct RefusedValue {
  const char* sql;
  const char* constraint;
  friend void PrintTo(const RefusedValue& value, std::ostream* out) { *out << value.sql; }
};

class ValueTest : public RulesTest, public ::testing::WithParamInterface<std::tuple<RefusedValue, bool>> {
 protected:
  void SetUp() override { set_foreign_keys(std::get<1>(GetParam())); }
};

TEST_P(ValueTest, IsRefused) {
  const RefusedValue& value = std::get<0>(GetParam());
  EXPECT_THAT(expect_refused(db_, value.sql), HasSubstr(value.constraint));
}

constexpr const char* kAddMapping =
    "INSERT INTO device_mappings (volume_uuid, volume_id, vm_id, device_path, size, operation_mode) VALUES ";

INSTANTIATE_TEST_SUITE_P(
    Invariant5, ValueTest,
    ::testing::Combine(
        ::testing::Values(
            RefusedValue{"INSERT INTO device_mappings (volume_uuid, volume_id, vm_id, device_path, size) VALUES "
                         "('B3BB9310-1B59-4F62-97E8-CEFFFDFE3805', 1, 'a', '/dev/vdx', 1)",
                         "volume_uuid_canonical"},
            RefusedValue{"INSERT INTO device_mappings (volume_uuid, volume_id, vm_id, device_path, size) VALUES "
                         "('{b3bb9310-1b59-4f62-97e8-cefffdfe3805}', 1, 'a', '/dev/vdx', 1)",
                         "volume_uuid_canonical"},
            RefusedValue{"INSERT INTO device_mappings (volume_uuid, volume_id, vm_id, device_path, size) VALUES "
                         "('b3bb93101b594f6297e8cefffdfe3805', 1, 'a', '/dev/vdx', 1)",
                         "volume_uuid_canonical"},
            RefusedValue{"INSERT INTO device_mappings (volume_uuid, volume_id, vm_id, device_path, size) VALUES "
                         "('b3bb9310-1b59-4f62-97e8-cefffdfe380g', 1, 'a', '/dev/vdx', 1)",
                         "volume_uuid_canonical"},
            RefusedValue{
                "UPDATE device_mappings SET size = 0 WHERE volume_uuid = '0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f'",
                "mapping_size_range"},
            RefusedValue{"UPDATE device_mappings SET size = 1125899906842625 "
                         "WHERE volume_uuid = '0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f'",
                         "mapping_size_range"},
            RefusedValue{"UPDATE device_mappings SET volume_id = -1", "volume_id_range"},
            RefusedValue{"UPDATE device_mappings SET operation_mode = 'OMA'", "operation_mode_valid"},
            RefusedValue{"UPDATE device_mappings SET requires_device_correlation = 2",
                         "requires_device_correlation_bool"},
            RefusedValue{"UPDATE device_mappings SET vm_id = ''", "mapping_vm_id_format"},
            RefusedValue{"UPDATE device_mappings SET device_path = 'vdx' WHERE operation_mode = 'oma'",
                         "oma_device_path_normalized"},
            RefusedValue{"UPDATE device_mappings SET device_path = '/dev//vdx' WHERE operation_mode = 'oma'",
                         "oma_device_path_normalized"},
            RefusedValue{"UPDATE device_mappings SET device_path = '/dev/./vdx' WHERE operation_mode = 'oma'",
                         "oma_device_path_normalized"},
            RefusedValue{"UPDATE device_mappings SET device_path = '/dev/../dev/vdx' WHERE operation_mode = 'oma'",
                         "oma_device_path_normalized"},
            RefusedValue{"UPDATE device_mappings SET device_path = '/dev/vdx/' WHERE operation_mode = 'oma'",
                         "oma_device_path_normalized"},
            RefusedValue{"UPDATE device_mappings SET device_path = '' WHERE operation_mode = 'failover'",
                         "device_path_length"},
            RefusedValue{"UPDATE device_mappings SET operation_mode = 'oma' WHERE operation_mode = 'failover'",
                         "oma_device_path_normalized"},
            RefusedValue{"UPDATE nbd_exports SET export_name = '' WHERE export_name = 'e1'", "export_name_format"},
            RefusedValue{"UPDATE nbd_exports SET export_name = '-e1' WHERE export_name = 'e1'", "export_name_format"},
            RefusedValue{"UPDATE nbd_exports SET export_name = '.e1' WHERE export_name = 'e1'", "export_name_format"},
            RefusedValue{"UPDATE nbd_exports SET export_name = 'e 1' WHERE export_name = 'e1'", "export_name_format"},
            RefusedValue{"UPDATE nbd_exports SET export_name = 'e/1' WHERE export_name = 'e1'", "export_name_format"},
            RefusedValue{"UPDATE nbd_exports SET export_name = 'e1' || char(10) WHERE export_name = 'e1'",
                         "export_name_format"},
            RefusedValue{"UPDATE nbd_exports SET export_name = 'e' || char(233) WHERE export_name = 'e1'",
                         "export_name_format"},
            RefusedValue{"UPDATE nbd_exports SET export_name = printf('%.192c', 'a') WHERE export_name = 'e1'",
                         "export_name_format"},
            RefusedValue{"UPDATE nbd_exports SET port = 0 WHERE export_name = 'e1'", "port_range"},
            RefusedValue{"UPDATE nbd_exports SET port = 65536 WHERE export_name = 'e1'", "port_range"},
            RefusedValue{"UPDATE nbd_exports SET port = 'x' WHERE export_name = 'e1'", "cannot store TEXT value"},
            RefusedValue{"UPDATE nbd_exports SET status = 'deleted' WHERE export_name = 'e1'", "export_status_valid"},
            RefusedValue{"UPDATE replication_jobs SET status = 'running'", "job_status_valid"},
            RefusedValue{"INSERT INTO replication_jobs (id, source_vm_id, source_vm_name) VALUES ('', 'v', 'n')",
                         "job_id_format"},
            RefusedValue{"UPDATE vm_disks SET size_gb = 0 WHERE disk_id = 'd2'", "disk_size_range"},
            RefusedValue{"UPDATE vm_disks SET size_gb = 1048577 WHERE disk_id = 'd2'", "disk_size_range"},
            RefusedValue{"UPDATE vm_disks SET unit_number = -1", "unit_number_range"},
            RefusedValue{"UPDATE vm_disks SET disk_id = '' WHERE disk_id = 'd2'", "disk_id_format"},
            RefusedValue{"UPDATE vm_disks SET sync_status = 'done'", "sync_status_valid"},
            RefusedValue{"UPDATE vm_disks SET sync_progress_percent = 100.5", "sync_progress_range"},
            RefusedValue{"UPDATE vm_disks SET bytes_synced = -1", "bytes_synced_range"},
            RefusedValue{"INSERT INTO volume_operations (id, type, volume_id) VALUES ('op1', 'resize', 'v')",
                         "operation_type_valid"},
            RefusedValue{
                "INSERT INTO volume_operations (id, type, status, volume_id) VALUES ('op1', 'attach', 'ok', 'v')",
                "operation_status_valid"},
            RefusedValue{
                "INSERT INTO volume_operations (id, type, volume_id, request) VALUES ('op1', 'attach', 'v', '{')",
                "operation_request_json"}),
        ::testing::Bool()),
    [](const ::testing::TestParamInfo<std::tuple<RefusedValue, bool>>& param_info) {
      std::string name = std::to_string(param_info.index) + "_";
      for (const char* c = std::get<0>(param_info.param).constraint; *c != '\0'; ++c) {
        name += std::isalnum(static_cast<unsigned char>(*c)) ? *c : '_';
      }
      return name + "_" + foreign_keys_name(std::get<1>(param_info.param));
    });

TEST_P(InvariantTest, ValuesAtTheEdgesOfTheirRangesAreAccepted) {
  db_.sql().exec("UPDATE nbd_exports SET export_name = printf('%.191c', 'a') WHERE export_name = 'e1-old'");
  db_.sql().exec("UPDATE nbd_exports SET export_name = '9A.b_c-d' WHERE export_name = 'e3'");
  db_.sql().exec("UPDATE nbd_exports SET port = 65535 WHERE export_name = 'e1'");
  db_.sql().exec("UPDATE nbd_exports SET port = 1 WHERE export_name = 'e3'");
  db_.sql().exec(std::string(kAddMapping) +
                 "('ffffffff-ffff-4fff-bfff-ffffffffffff', 0, 'a', '/x', 1125899906842624, 'oma')");
  EXPECT_EQ(count("SELECT count(*) FROM device_mappings"), 5);
}

// --- Invariant 6: updated_at is maintained on every update, whoever writes.

// Parameters: recursive triggers, foreign keys.
class UpdatedAtTest : public RulesTest, public ::testing::WithParamInterface<std::tuple<bool, bool>> {
 protected:
  void SetUp() override { set_foreign_keys(std::get<1>(GetParam())); }
};

TEST_P(UpdatedAtTest, EveryTableTouchesUpdatedAt) {
  db_.sql().exec(fmt::format("PRAGMA recursive_triggers = {}", std::get<0>(GetParam()) ? "ON" : "OFF"));
  db_.sql().exec("INSERT INTO volume_operations (id, type, volume_id) VALUES ('op1', 'attach', 'v')");
  const std::string old = "2000-01-01T00:00:00.000Z";
  const std::vector<std::pair<std::string, std::string>> updates{{"replication_jobs", "source_vm_name = 'renamed'"},
                                                                 {"device_mappings", "linux_state = 'ready'"},
                                                                 {"vm_disks", "bytes_synced = 42"},
                                                                 {"nbd_exports", "status_reason = 'noted'"},
                                                                 {"volume_operations", "status = 'executing'"}};
  for (const auto& [table, change] : updates) {
    // Another service writes an old updated_at on purpose (or a stale one by mistake): the store's clock wins.
    db_.sql().exec(fmt::format("UPDATE {} SET {}, updated_at = '{}'", table, change, old));
    SQLite::Statement q(db_.sql(), fmt::format("SELECT updated_at FROM {}", table));
    while (q.executeStep()) {
      const std::string updated_at = q.getColumn(0).getString();
      EXPECT_NE(updated_at, old) << table;
      EXPECT_THAT(updated_at,
                  ::testing::MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[.][0-9]{3}Z"))
          << table;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(RecursiveTriggers, UpdatedAtTest, ::testing::Combine(::testing::Bool(), ::testing::Bool()),
                         [](const ::testing::TestParamInfo<std::tuple<bool, bool>>& param_info) {
                           return std::string(std::get<0>(param_info.param) ? "On" : "Off") + "_" +
                                  foreign_keys_name(std::get<1>(param_info.param));
                         });

// --- Invariant 7: cleanup.

// Each of e1 (active) and e3 (pending) has a server record, as the manager keeps them.
constexpr const char* kRecordServers =
    "INSERT INTO export_servers (export_id) SELECT id FROM nbd_exports WHERE status IN ('pending', 'active')";

TEST_P(InvariantTest, DeletingAJobDeletesItsDisksAndExportsAndKeepsMappings) {
  db_.sql().exec(kRecordServers);
  db_.sql().exec("DELETE FROM replication_jobs WHERE id = 'j1'");
  EXPECT_EQ(count("SELECT count(*) FROM vm_disks WHERE job_id = 'j1'"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM nbd_exports WHERE job_id = 'j1'"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM vm_disks"), 1);        // d3 of j2
  EXPECT_EQ(count("SELECT count(*) FROM nbd_exports"), 1);     // e3 of j2
  EXPECT_EQ(count("SELECT count(*) FROM export_servers"), 1);  // e3's
  EXPECT_EQ(count("SELECT count(*) FROM export_devices WHERE status = 'active'"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM device_mappings"), 4);
  EXPECT_EQ(count("SELECT count(*) FROM pragma_foreign_key_check"), 0);
}

TEST_P(InvariantTest, DeletingAMappingDeletesItsExportsAndUnlinksItsDisk) {
  db_.sql().exec(kRecordServers);
  db_.sql().exec(fmt::format("DELETE FROM device_mappings WHERE volume_uuid = '{}'", kVolume1));
  EXPECT_EQ(count("SELECT count(*) FROM nbd_exports WHERE export_name IN ('e1', 'e1-old')"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM vm_disks WHERE disk_id = 'd1' AND cloudstack_volume_uuid IS NULL"), 1);
  EXPECT_EQ(count("SELECT count(*) FROM nbd_exports"), 1);     // e3 of volume 2 stays
  EXPECT_EQ(count("SELECT count(*) FROM export_servers"), 1);  // e3's
  EXPECT_EQ(count("SELECT count(*) FROM export_devices WHERE status = 'active'"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM pragma_foreign_key_check"), 0);
}

TEST_P(InvariantTest, DeletingADiskDeletesItsExports) {
  db_.sql().exec(kRecordServers);
  db_.sql().exec("DELETE FROM vm_disks WHERE disk_id = 'd1'");
  EXPECT_EQ(count("SELECT count(*) FROM nbd_exports WHERE export_name IN ('e1', 'e1-old')"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM nbd_exports"), 1);     // e3 of d3 stays
  EXPECT_EQ(count("SELECT count(*) FROM export_servers"), 1);  // e3's
  EXPECT_EQ(count("SELECT count(*) FROM pragma_foreign_key_check"), 0);
}

TEST_P(InvariantTest, DeletingAnExportDeletesItsServerRecord) {
  db_.sql().exec(kRecordServers);
  db_.sql().exec("DELETE FROM nbd_exports WHERE export_name = 'e1'");
  EXPECT_EQ(count("SELECT count(*) FROM export_servers"), 1);  // e3's
  EXPECT_EQ(count("SELECT count(*) FROM pragma_foreign_key_check"), 0);
}

// Parameters: the status the job ends with, foreign keys.
class JobEndTest : public RulesTest, public ::testing::WithParamInterface<std::tuple<const char*, bool>> {
 protected:
  void SetUp() override { set_foreign_keys(std::get<1>(GetParam())); }
};

TEST_P(JobEndTest, RevokesTheJobsLiveExports) {
  const char* status = std::get<0>(GetParam());
  db_.sql().exec(fmt::format("UPDATE replication_jobs SET status = '{}' WHERE id = 'j1'", status));
  EXPECT_EQ(text("SELECT status FROM nbd_exports WHERE export_name = 'e1'"), "revoked");
  EXPECT_EQ(text("SELECT status_reason FROM nbd_exports WHERE export_name = 'e1'"),
            fmt::format("job j1 became {}", status));
  EXPECT_EQ(text("SELECT status FROM nbd_exports WHERE export_name = 'e3'"), "pending");  // other job
  EXPECT_EQ(text("SELECT status_reason FROM nbd_exports WHERE export_name = 'e1-old'"), "replaced");
}

INSTANTIATE_TEST_SUITE_P(EndStatuses, JobEndTest,
                         ::testing::Combine(::testing::Values("completed", "failed", "cancelled"), ::testing::Bool()),
                         [](const ::testing::TestParamInfo<std::tuple<const char*, bool>>& param_info) {
                           return std::string(std::get<0>(param_info.param)) + "_" +
                                  foreign_keys_name(std::get<1>(param_info.param));
                         });

TEST_P(InvariantTest, RunningStatusesKeepLiveExports) {
  db_.sql().exec("UPDATE replication_jobs SET status = 'pending' WHERE id = 'j1'");
  EXPECT_EQ(text("SELECT status FROM nbd_exports WHERE export_name = 'e1'"), "active");
}

TEST_P(InvariantTest, RelinkingOrUnlinkingADiskRevokesItsLiveExports) {
  db_.sql().exec(fmt::format("UPDATE vm_disks SET cloudstack_volume_uuid = '{}' WHERE disk_id = 'd1'", kVolume3));
  EXPECT_EQ(text("SELECT status FROM nbd_exports WHERE export_name = 'e1'"), "revoked");
  EXPECT_EQ(text("SELECT status_reason FROM nbd_exports WHERE export_name = 'e1'"),
            "disk d1 was linked to another volume");
  db_.sql().exec("UPDATE vm_disks SET cloudstack_volume_uuid = NULL WHERE disk_id = 'd3'");
  EXPECT_EQ(text("SELECT status FROM nbd_exports WHERE export_name = 'e3'"), "revoked");
  EXPECT_EQ(text("SELECT status_reason FROM nbd_exports WHERE export_name = 'e3'"),
            "disk d3 was unlinked from its volume");
}

TEST_P(InvariantTest, MappingLeavingOmaRevokesItsLiveExports) {
  db_.sql().exec(
      fmt::format("UPDATE device_mappings SET operation_mode = 'failover' WHERE volume_uuid = '{}'", kVolume2));
  EXPECT_EQ(text("SELECT status FROM nbd_exports WHERE export_name = 'e3'"), "revoked");
  EXPECT_THAT(text("SELECT status_reason FROM nbd_exports WHERE export_name = 'e3'"), HasSubstr("failover mode"));
}

}  // namespace
}  // namespace nbdxm::test
