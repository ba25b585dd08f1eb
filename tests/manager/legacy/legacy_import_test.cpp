// nbdxm import legacy, end to end: the real nbdxm binary reading a real MariaDB server (MariadbServer, started once
// for this binary) loaded with the previous generation's tables, writing a real store file.
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <map>

#include "cli_store_support.hpp"
#include "legacy_importer.hpp"
#include "legacy_source.hpp"
#include "mariadb_server.hpp"
#include "nbdxm/error.hpp"

namespace nbdxm::test {
namespace {

const auto* const kServer = ::testing::AddGlobalTestEnvironment(new MariadbServer);

using Outcomes = std::map<std::pair<std::string, std::string>, std::pair<std::string, std::string>>;

// Every repaired and rejected row of the defects fixture: (table, source id) -> (outcome, rule). Every other row
// of it is imported as is.
const Outcomes kDefectOutcomes{
    {{"replication_jobs", "job-running"}, {"repaired", "status_mapped"}},
    {{"replication_jobs", "job-null"}, {"repaired", "status_mapped"}},
    {{"replication_jobs", "job-paused"}, {"rejected", "job_status_unknown"}},
    {{"device_mappings", "map-u2"}, {"repaired", "uuid_lowercased"}},
    {{"device_mappings", "map-u3"}, {"rejected", "volume_uuid_malformed"}},
    {{"device_mappings", "map-u4"}, {"rejected", "duplicate_oma_device_path"}},
    {{"device_mappings", "map-u8"}, {"repaired", "volume_id_default"}},
    {{"device_mappings", "map-u9"}, {"rejected", "mapping_size_invalid"}},
    {{"vm_disks", "2"}, {"rejected", "disk_job_missing"}},
    {{"vm_disks", "3"}, {"rejected", "disk_job_missing"}},
    {{"vm_disks", "4"}, {"repaired", "uuid_lowercased"}},
    {{"vm_disks", "5"}, {"rejected", "volume_uuid_malformed"}},
    {{"vm_disks", "6"}, {"rejected", "disk_larger_than_volume"}},
    {{"vm_disks", "7"}, {"rejected", "disk_volume_missing"}},
    {{"vm_disks", "8"}, {"repaired", "disk_size_from_capacity"}},
    {{"vm_disks", "9"}, {"repaired", "volume_shared"}},
    {{"vm_disks", "11"}, {"repaired", "volume_not_mapped"}},
    {{"vm_disks", "12"}, {"rejected", "disk_job_rejected"}},
    {{"vm_disks", "13"}, {"repaired", "status_mapped"}},
    {{"nbd_exports", "2"}, {"repaired", "disk_found"}},
    {{"nbd_exports", "3"}, {"repaired", "volume_found"}},
    {{"nbd_exports", "5"}, {"repaired", "device_path_dropped"}},
    {{"nbd_exports", "6"}, {"rejected", "export_untied"}},
    {{"nbd_exports", "7"}, {"rejected", "export_disk_rejected"}},
    {{"nbd_exports", "8"}, {"rejected", "export_untied"}},
    {{"nbd_exports", "9"}, {"rejected", "export_job_mismatch"}},
    {{"nbd_exports", "10"}, {"rejected", "volume_uuid_malformed"}},
    {{"nbd_exports", "11"}, {"repaired", "uuid_lowercased,job_found"}},
    {{"volume_operations", "op-2"}, {"repaired", "uuid_lowercased"}},
};

// (source rows, imported, repaired, rejected) per table of the defects fixture.
const std::map<std::string, std::array<int, 4>> kDefectCounts{{"replication_jobs", {5, 2, 2, 1}},
                                                              {"device_mappings", {11, 6, 2, 3}},
                                                              {"vm_disks", {13, 2, 5, 6}},
                                                              {"nbd_exports", {11, 2, 4, 5}},
                                                              {"volume_operations", {3, 2, 1, 0}}};

class LegacyImportTest : public CliStoreTest {
 protected:
  void SetUp() override {
    server_ = MariadbServer::instance();
    if (server_ == nullptr) GTEST_SKIP() << MariadbServer::unavailable_reason();
    init_store();
    // Files for the fixtures' /dev/vd* paths, so that `nbdxm check` finds every 'oma' mapping's device.
    std::filesystem::create_directories(dir_.file("dev"));
    for (char c = 'b'; c <= 'z'; ++c) create_volume_file(dir_.file(fmt::format("dev/vd{}", c)), 4096);
  }

  // Loads a database named after the test with the schema and the fixtures.
  std::string load(const std::vector<std::string>& fixtures) {
    const std::string db = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    server_->load(db, fixtures, dir_.path());
    return db;
  }

  CliResult import(const std::string& database, std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"--json", "import", "legacy", "--source", server_->uri(database)};
    args.insert(args.end(), extra.begin(), extra.end());
    return run(args);
  }

  static Outcomes outcomes(const Json& report) {
    Outcomes result;
    for (const auto& row : report["rows"]) {
      result[{row["table"], row["source_id"]}] = {row["outcome"], row["rule"]};
    }
    return result;
  }

  void expect_check_passes() {
    const CliResult check = run({"check"});
    EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  }

  MariadbServer* server_ = nullptr;
};

TEST_F(LegacyImportTest, CleanApplianceImportsWithNoRepair) {
  const CliResult result = import(load({"clean_appliance.sql"}));
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const Json report = Json::parse(result.out);
  EXPECT_TRUE(report["rows"].empty()) << report.dump(2);
  const std::map<std::string, int> rows{
      {"replication_jobs", 2}, {"device_mappings", 3}, {"vm_disks", 3}, {"nbd_exports", 3}, {"volume_operations", 2}};
  for (const auto& [table, n] : rows) {
    const Json& counts = report["tables"][table];
    EXPECT_EQ(counts["source_rows"], n) << table;
    EXPECT_EQ(counts["imported"], n) << table;
    EXPECT_EQ(counts["repaired"], 0) << table;
    EXPECT_EQ(counts["rejected"], 0) << table;
  }
  EXPECT_EQ(report["written"], 13);
  expect_check_passes();

  // The rows as the store holds them: links resolved through ossea_volumes, exports as revoked history.
  const Json disk = run_json({"disk", "show", "--job", "job-clean-2", "--disk-id", "disk-2000"});
  EXPECT_EQ(disk["cloudstack_volume_uuid"], "33333333-3333-4333-8333-333333333333");
  EXPECT_EQ(disk["cloudstack_volume_id"], 503);
  EXPECT_EQ(disk["sync_status"], "completed");
  const Json exports = run_json({"export", "list"});
  ASSERT_EQ(exports.size(), 3u);
  for (const auto& e : exports) {
    EXPECT_EQ(e["status"], "revoked") << e.dump();
    EXPECT_EQ(e["export_name"], "migration-vol-" + e["volume_uuid"].get<std::string>());
  }
  EXPECT_EQ(run_json({"job", "show", "job-clean-1"})["created_at"], "2025-09-01T10:00:00.000Z");
}

TEST_F(LegacyImportTest, EveryDefectIsRepairedOrRejectedWithItsRule) {
  const CliResult result = import(load({"defects.sql"}));
  ASSERT_EQ(result.exit_code, 5) << result.err;
  EXPECT_THAT(result.err, ::testing::HasSubstr("15 source rows were rejected"));
  const Json report = Json::parse(result.out);
  EXPECT_EQ(outcomes(report), kDefectOutcomes);
  for (const auto& [table, counts] : kDefectCounts) {
    const Json& c = report["tables"][table];
    EXPECT_EQ(c["source_rows"], counts[0]) << table;
    EXPECT_EQ(c["imported"], counts[1]) << table;
    EXPECT_EQ(c["repaired"], counts[2]) << table;
    EXPECT_EQ(c["rejected"], counts[3]) << table;
    EXPECT_EQ(c["imported"].get<int>() + c["repaired"].get<int>() + c["rejected"].get<int>(), counts[0]) << table;
  }
  // A repair says which field changed from what to what.
  for (const auto& row : report["rows"]) {
    if (row["table"] == "vm_disks" && row["source_id"] == "4") {
      EXPECT_EQ(row["detail"],
                "cloudstack_volume_uuid: AAAAAAAA-0000-4000-8000-000000000002 -> "
                "aaaaaaaa-0000-4000-8000-000000000002 (the store keeps canonical lower-case UUIDs)");
    }
  }
  expect_check_passes();

  // What was imported is tied together as the repairs said.
  EXPECT_EQ(run_json({"export", "show", "migration-vm-vm-201-disk1"})["disk_id"], "disk-2001");
  EXPECT_EQ(run_json({"disk", "show", "--job", "job-old", "--disk-id", "disk-2000"})["cloudstack_volume_uuid"],
            nullptr);
  EXPECT_EQ(run_json({"disk", "show", "--job", "job-ok", "--disk-id", "disk-2002"})["cloudstack_volume_uuid"],
            "aaaaaaaa-0000-4000-8000-00000000000b");
  EXPECT_EQ(run_json({"disk", "show", "--job", "job-ok", "--disk-id", "disk-2001"})["size_gb"], 15);
  EXPECT_EQ(run({"job", "show", "job-paused"}).exit_code, 3);
  EXPECT_EQ(run({"mapping", "show", "aaaaaaaa-0000-4000-8000-000000000004"}).exit_code, 3);
}

TEST_F(LegacyImportTest, ReRunChangesNothingAndReportsTheSame) {
  const std::string db = load({"defects.sql"});
  const Json first = Json::parse(import(db).out);
  const std::string after_first = state();
  const CliResult again = import(db);
  EXPECT_EQ(again.exit_code, 5);
  const Json second = Json::parse(again.out);
  EXPECT_EQ(state(), after_first);
  EXPECT_EQ(second["rows"], first["rows"]);
  EXPECT_EQ(second["written"], 0);
  for (const auto& [table, counts] : kDefectCounts) {
    EXPECT_EQ(second["tables"][table]["already_in_store"], counts[1] + counts[2]) << table;
    for (const char* key : {"source_rows", "imported", "repaired", "rejected"}) {
      EXPECT_EQ(second["tables"][table][key], first["tables"][table][key]) << table << " " << key;
    }
  }
}

TEST_F(LegacyImportTest, DryRunReportsTheOutcomeAndWritesNothing) {
  const std::string db = load({"defects.sql"});
  const std::string before = state();
  const CliResult dry = import(db, {"--dry-run"});
  EXPECT_EQ(dry.exit_code, 5);
  EXPECT_EQ(state(), before);
  const Json dry_report = Json::parse(dry.out);
  EXPECT_TRUE(dry_report["dry_run"].get<bool>());
  const Json real = Json::parse(import(db).out);
  EXPECT_EQ(dry_report["rows"], real["rows"]);
  EXPECT_EQ(dry_report["tables"], real["tables"]);
  EXPECT_EQ(dry_report["written"], real["written"]);
}

TEST_F(LegacyImportTest, ConflictingStoreRowsRejectTheSourceRowsAndStayAsTheyWere) {
  const std::string db = load({"clean_appliance.sql"});
  ASSERT_EQ(run({"job", "add", "job-clean-1", "--vm-id", "vm-101", "--vm-name", "another-web01"}).exit_code, 0);
  ASSERT_EQ(run({"mapping", "add", "--volume-uuid", "44444444-4444-4444-8444-444444444444", "--volume-id", "9",
                 "--vm-id", "oma", "--device-path", dir_.file("dev/vdc"), "--size", "1073741824"})
                .exit_code,
            0)
      << state();
  const Json job_before = run_json({"job", "show", "job-clean-1"});
  const Json mapping_before = run_json({"mapping", "show", "44444444-4444-4444-8444-444444444444"});

  const CliResult result = import(db);
  EXPECT_EQ(result.exit_code, 5) << result.err;
  const Outcomes expected{
      {{"replication_jobs", "job-clean-1"}, {"rejected", "store_conflict"}},
      {{"device_mappings", "map-2"}, {"rejected", "store_conflict"}},
      {{"vm_disks", "1"}, {"rejected", "disk_job_rejected"}},
      {{"vm_disks", "2"}, {"rejected", "disk_job_rejected"}},
      {{"nbd_exports", "1"}, {"rejected", "export_disk_rejected"}},
      {{"nbd_exports", "2"}, {"rejected", "export_disk_rejected"}},
  };
  EXPECT_EQ(outcomes(Json::parse(result.out)), expected);
  EXPECT_EQ(run_json({"job", "show", "job-clean-1"}), job_before);
  EXPECT_EQ(run_json({"mapping", "show", "44444444-4444-4444-8444-444444444444"}), mapping_before);
  EXPECT_EQ(run_json({"disk", "show", "--job", "job-clean-2", "--disk-id", "disk-2000"})["cloudstack_volume_uuid"],
            "33333333-3333-4333-8333-333333333333");
  expect_check_passes();
}

// The whole import is one transaction: a failure at the third export leaves the store exactly as it was.
TEST_F(LegacyImportTest, FailureHalfwayLeavesTheStoreAsItWas) {
  const std::string db = load({"clean_appliance.sql"});
  const std::string before = state();
  Database store_db = Database::open(db_, Database::Access::read_write);
  store_db.sql().exec(
      "CREATE TEMP TRIGGER fail_third_export BEFORE INSERT ON main.nbd_exports "
      "WHEN (SELECT count(*) FROM main.nbd_exports) = 2 BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
  ExportStore store(store_db);
  const auto rows = legacy::LegacySource(legacy::LegacyUri::parse(server_->uri(db)), "").read_all();
  try {
    legacy::LegacyImporter::run(rows, store, false);
    ADD_FAILURE() << "the import did not fail";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("injected failure"));
  }
  EXPECT_EQ(state(), before);
  store_db.sql().exec("DROP TRIGGER temp.fail_third_export");
  EXPECT_EQ(legacy::LegacyImporter::run(rows, store, false).rejected(), 0u);
  EXPECT_NE(state(), before);
}

TEST_F(LegacyImportTest, BadUriIsAUsageError) {
  const std::string before = state();
  const CliResult result = run({"import", "legacy", "--source", "mysql://localhost/migratekit_oma"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
  EXPECT_THAT(result.err, ::testing::HasSubstr("mariadb://[USER@]HOST[:PORT]/DATABASE"));
  EXPECT_EQ(state(), before);
}

TEST_F(LegacyImportTest, UnreachableOrUnreadableSourceIsOneLineAndExit1) {
  const std::string before = state();
  const std::string missing_socket = "mariadb:///migratekit_oma?socket=" + dir_.file("no.sock");
  CliResult result = run({"import", "legacy", "--source", missing_socket});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, ::testing::StartsWith("nbdxm: cannot reach source " + missing_socket + ": "));
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;

  const std::string db = load({});
  server_->execute(db, "DROP TABLE volume_operations");
  result = run({"import", "legacy", "--source", server_->uri(db)});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, ::testing::HasSubstr("cannot read source " + server_->uri(db) +
                                               ": reading "
                                               "volume_operations: Table '" +
                                               db + ".volume_operations' doesn't exist"));
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
  EXPECT_EQ(state(), before);
}

TEST_F(LegacyImportTest, PasswordComesFromTheEnvironmentOnly) {
  const std::string db = load({"clean_appliance.sql"});
  server_->execute("", fmt::format("CREATE OR REPLACE USER 'importer'@'localhost' IDENTIFIED BY 's3cret'; "
                                   "GRANT SELECT ON `{}`.* TO 'importer'@'localhost'",
                                   db));
  const std::string uri = fmt::format("mariadb://importer@/{}?socket={}", db, server_->socket());
  CliResult result = run({"import", "legacy", "--source", uri, "--dry-run"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, ::testing::HasSubstr("Access denied"));
  result = run({"import", "legacy", "--source", uri, "--dry-run"}, {"NBDXM_IMPORT_PASSWORD=s3cret"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  server_->execute("", "DROP USER 'importer'@'localhost'");
}

}  // namespace
}  // namespace nbdxm::test
