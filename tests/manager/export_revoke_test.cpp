// `nbdxm export revoke|list|show` and `nbdxm gc` end to end.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <thread>

#include "manager_harness.hpp"

namespace nbdxm::test {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

class ExportRevokeTest : public ManagerTest {};

TEST_F(ExportRevokeTest, RevokingOneExportLeavesAnotherJobsWriterUndisturbedAndFreesThePort) {
  manager_.start();
  const auto volume_a = add_volume("job-a", "disk-1");
  const auto volume_b = add_volume("job-b", "disk-1");
  ASSERT_EQ(create(volume_a).code, 0);
  ASSERT_EQ(create(volume_b).code, 0);
  const NbdExport a = export_of(volume_a);
  const NbdExport b = export_of(volume_b);

  // Two connections on A, as the migration client holds them.
  TcpClient a1(a.port, a.export_name);
  TcpClient a2(a.port, a.export_name);
  a1.write(pattern(4096, 1), 0);

  // A writer on B that keeps writing 1 MiB blocks, pass after pass, until told to stop after a full pass.
  constexpr int kBlocks = 32;
  std::atomic<bool> finish{false};
  std::atomic<int> passes{0};
  std::atomic<int> errors{0};
  std::thread writer([&] {
    TcpClient client(b.port, b.export_name);
    while (!finish || passes == 0) {
      for (int i = 0; i < kBlocks; ++i) {
        if (client.try_write(pattern(kMiB, static_cast<uint32_t>(100 + i)), static_cast<uint64_t>(i) * kMiB) != 0) {
          ++errors;
        }
      }
      ++passes;
    }
    client.disconnect();
  });
  ASSERT_TRUE(wait_until([&] { return passes > 0; }, 30s));

  const CliResult revoked = nbdxm({"export", "revoke", a.export_name});
  EXPECT_EQ(revoked.code, 0) << revoked.err;
  EXPECT_NE(revoked.out.find("revoked export " + a.export_name), std::string::npos) << revoked.out;
  // It returned when A's server was gone: both of A's connections are closed and its port is free.
  EXPECT_FALSE(served(a.export_name));
  EXPECT_NE(a1.try_write(pattern(4096, 2), 4096), 0);
  EXPECT_NE(a2.try_write(pattern(4096, 2), 4096), 0);
  EXPECT_EQ(read_file(volume_a.path, 4096, 4096), std::string(4096, '\0'));
  EXPECT_TRUE(port_bindable(a.port));
  EXPECT_NE(TcpClient::connect_error(a.port, a.export_name), std::nullopt);

  const int passes_at_revoke = passes;
  ASSERT_TRUE(wait_until([&] { return passes >= passes_at_revoke + 1; }, 60s));
  finish = true;
  writer.join();
  EXPECT_EQ(errors, 0);
  for (int i = 0; i < kBlocks; ++i) {
    ASSERT_EQ(read_file(volume_b.path, static_cast<uint64_t>(i) * kMiB, kMiB),
              pattern(kMiB, static_cast<uint32_t>(100 + i)))
        << "block " << i;
  }
  EXPECT_EQ(TcpClient::connect_error(b.port, b.export_name), std::nullopt);

  // A's port is the lowest free one again: the next export gets it.
  const auto volume_c = add_volume("job-c", "disk-1");
  ASSERT_EQ(create(volume_c).code, 0);
  EXPECT_EQ(export_of(volume_c).port, a.port);
}

TEST_F(ExportRevokeTest, RevokeByJobAndByVolumeAndAgainIsIdempotent) {
  manager_.start();
  const auto v1 = add_volume("job-1", "disk-1");
  const auto v2 = add_volume("job-1", "disk-2");
  const auto v3 = add_volume("job-2", "disk-1");
  for (const auto* v : {&v1, &v2, &v3}) ASSERT_EQ(create(*v).code, 0);

  const CliResult by_job = nbdxm({"export", "revoke", "--job", "job-1"});
  EXPECT_EQ(by_job.code, 0) << by_job.err;
  EXPECT_EQ(export_of(v1).status, "revoked");
  EXPECT_EQ(export_of(v2).status, "revoked");
  EXPECT_EQ(export_of(v3).status, "active");
  EXPECT_FALSE(served(export_of(v1).export_name));
  EXPECT_FALSE(served(export_of(v2).export_name));
  EXPECT_TRUE(served(export_of(v3).export_name));

  const CliResult by_volume = nbdxm({"export", "revoke", "--volume", v3.uuid});
  EXPECT_EQ(by_volume.code, 0) << by_volume.err;
  EXPECT_EQ(export_of(v3).status, "revoked");
  EXPECT_FALSE(served(export_of(v3).export_name));

  const CliResult again = nbdxm({"export", "revoke", export_of(v3).export_name});
  EXPECT_EQ(again.code, 0) << again.err;
  EXPECT_NE(again.out.find("already revoked"), std::string::npos) << again.out;
  EXPECT_EQ(export_of(v3).status_reason, "revoked with `nbdxm export revoke`");
}

TEST_F(ExportRevokeTest, RevokeRefusesBadTargetsWithDistinctCodes) {
  manager_.start();
  const auto v = add_volume("job-1", "disk-1");
  ASSERT_EQ(create(v).code, 0);
  EXPECT_EQ(nbdxm({"export", "revoke", "no-such-export"}).code, 3);
  EXPECT_EQ(nbdxm({"export", "revoke", "--job", "no-such-job"}).code, 3);
  EXPECT_EQ(nbdxm({"export", "revoke", "--volume", "00000000-0000-4000-8000-00000000ffff"}).code, 3);
  EXPECT_EQ(nbdxm({"export", "revoke", "--volume", "not-a-uuid"}).code, 2);
  const CliResult none = nbdxm({"export", "revoke"});
  EXPECT_EQ(none.code, 2);
  EXPECT_NE(none.err.find("--job"), std::string::npos) << none.err;
  EXPECT_EQ(nbdxm({"export", "revoke", export_of(v).export_name, "--job", "job-1"}).code, 2);
  EXPECT_EQ(export_of(v).status, "active");
}

TEST_F(ExportRevokeTest, RevokeWithoutAManagerCutsClientsButSaysNoManagerRecordedTheStop) {
  manager_.start();
  const auto v = add_volume("job-1", "disk-1");
  ASSERT_EQ(create(v).code, 0);
  manager_.kill();  // its servers go with it (direct supervisor); the store still records the server running
  const NbdExport e = export_of(v);
  ASSERT_TRUE(store_.find_export_server(e.id)->running());
  const CliResult revoked = nbdxm({"export", "revoke", e.export_name});
  EXPECT_EQ(revoked.code, 6);
  EXPECT_NE(revoked.err.find("nbdxm serve"), std::string::npos) << revoked.err;
  EXPECT_EQ(export_of(v).status, "revoked");
  EXPECT_NE(TcpClient::connect_error(e.port, e.export_name), std::nullopt);  // the plugin refuses it already
  // The next manager stops the server of the revoked export.
  manager_.start();
  EXPECT_TRUE(wait_until([&] { return !served(e.export_name); }, 30s));
  const CliResult again = nbdxm({"export", "revoke", e.export_name});
  EXPECT_EQ(again.code, 0) << again.err;
}

TEST_F(ExportRevokeTest, ListAndShowReportServersConnectionsAndFailures) {
  manager_.start();
  const auto v1 = add_volume("job-1", "disk-1");
  const auto v2 = add_volume("job-2", "disk-1");
  ASSERT_EQ(create(v1).code, 0);
  ASSERT_EQ(create(v2).code, 0);
  const NbdExport e1 = export_of(v1);
  TcpClient c1(e1.port, e1.export_name);
  TcpClient c2(e1.port, e1.export_name);
  ASSERT_EQ(nbdxm({"export", "revoke", export_of(v2).export_name}).code, 0);

  const CliResult text = nbdxm({"export", "list"});
  ASSERT_EQ(text.code, 0) << text.err;
  for (const char* column : {"export_name", "port", "status", "job_id", "disk_id", "volume_uuid", "device_path",
                             "connections", "supervisor", "created_at"}) {
    EXPECT_NE(text.out.find(column), std::string::npos) << column;
  }
  const CliResult listed = nbdxm({"--json", "export", "list"});
  ASSERT_EQ(listed.code, 0) << listed.err;
  const Json rows = Json::parse(listed.out);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["export_name"], e1.export_name);
  EXPECT_EQ(rows[0]["device_path"], v1.path);
  EXPECT_EQ(rows[0]["supervisor"], "direct");
  EXPECT_TRUE(rows[0]["unit"].is_null());
  EXPECT_EQ(rows[0]["connections"], 2);
  EXPECT_EQ(rows[1]["status"], "revoked");
  EXPECT_TRUE(rows[1]["supervisor"].is_null());

  const Json active = Json::parse(nbdxm({"--json", "export", "list", "--status", "active"}).out);
  EXPECT_EQ(active.size(), 1u);
  const Json job2 = Json::parse(nbdxm({"--json", "export", "list", "--job", "job-2"}).out);
  EXPECT_EQ(job2.size(), 1u);
  EXPECT_EQ(nbdxm({"export", "list", "--job", "nope"}).code, 3);
  EXPECT_EQ(nbdxm({"export", "list", "--status", "dead"}).code, 2);

  // A server killed under the manager: show gives the failure reason and the restart.
  const pid_t first = server_of(e1)->pid;
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  // One look at the record per poll: the killed server stays recorded until the manager has reaped it.
  ASSERT_TRUE(wait_until(
      [&] {
        const auto restarted = server_of(e1);
        return restarted && restarted->pid != first;
      },
      10s));
  const CliResult shown = nbdxm({"--json", "export", "show", e1.export_name});
  ASSERT_EQ(shown.code, 0) << shown.err;
  const Json one = Json::parse(shown.out);
  EXPECT_EQ(one["status"], "active");
  EXPECT_EQ(one["restart_count"], 1) << manager_.log();
  EXPECT_NE(one["last_failure"].get<std::string>().find("killed by signal 9"), std::string::npos) << one.dump();
  EXPECT_EQ(one["uri"], fmt::format("nbd://127.0.0.1:{}/{}", e1.port, e1.export_name));
  EXPECT_EQ(one["supervisor"], "direct");
  EXPECT_TRUE(one.contains("unit") && one["unit"].is_null()) << one.dump();
  EXPECT_TRUE(one.contains("settings_stale") && one["settings_stale"].is_null()) << one.dump();
  const CliResult text_shown = nbdxm({"export", "show", e1.export_name});
  EXPECT_NE(text_shown.out.find("supervisor"), std::string::npos) << text_shown.out;
  EXPECT_NE(text_shown.out.find("unit"), std::string::npos) << text_shown.out;
  EXPECT_EQ(nbdxm({"export", "show", "nope"}).code, 3);
}

TEST_F(ExportRevokeTest, GcDeletesOnlyRevokedAndFailedRowsPastRetention) {
  manager_.start();
  const auto v1 = add_volume("job-1", "disk-1");
  const auto v2 = add_volume("job-1", "disk-2");
  ASSERT_EQ(create(v1).code, 0);
  ASSERT_EQ(create(v2).code, 0);
  ASSERT_EQ(nbdxm({"export", "revoke", export_of(v1).export_name}).code, 0);

  const CliResult young = nbdxm({"gc", "--older-than", "1h"});
  EXPECT_EQ(young.code, 0) << young.err;
  EXPECT_EQ(store_.list_exports().size(), 2u);
  const CliResult dry = nbdxm({"gc", "--older-than", "0s", "--dry-run"});
  EXPECT_EQ(dry.code, 0) << dry.err;
  EXPECT_NE(dry.out.find(export_of(v1).export_name), std::string::npos) << dry.out;
  EXPECT_EQ(store_.list_exports().size(), 2u);
  const CliResult gc = nbdxm({"--json", "gc", "--older-than", "0s"});
  EXPECT_EQ(gc.code, 0) << gc.err;
  EXPECT_EQ(Json::parse(gc.out).size(), 1u);
  ASSERT_EQ(store_.list_exports().size(), 1u);
  EXPECT_EQ(store_.list_exports()[0].disk_id, "disk-2");
  EXPECT_EQ(nbdxm({"gc", "--older-than", "soon"}).code, 2);
}

}  // namespace
}  // namespace nbdxm::test
