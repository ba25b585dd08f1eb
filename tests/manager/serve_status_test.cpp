// `nbdxm serve` acting on each export's status as another writer sets it with raw SQL: pending becomes active once
// its server answers, active set back to pending becomes active again, failed or revoked stops the server, and a
// revoked row re-used (as `export create` does) gets a new server before it becomes active.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include "manager_harness.hpp"

namespace nbdxm::test {
namespace {

using namespace std::chrono_literals;

class ServeStatusTest : public ManagerTest {
 protected:
  void sql(const std::string& statement) { db_.sql().exec(statement); }
  std::string status_of(const std::string& export_name) { return store_.get_export(export_name).status; }
  NbdExport created(const Volume& volume) {
    const CliResult result = create(volume);
    if (result.code != 0) throw std::runtime_error("export create failed: " + result.err);
    return export_of(volume);
  }
};

TEST_F(ServeStatusTest, APendingExportWrittenByRawSqlBecomesActiveOnceItsServerAnswers) {
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  const int port = ports_.low() + 10;
  sql(
      fmt::format("INSERT INTO nbd_exports (job_id, vm_disk_id, device_mapping_id, export_name, port) "
                  "SELECT d.job_id, d.id, m.id, 'raw-pending', {} FROM vm_disks d JOIN device_mappings m "
                  "ON m.volume_uuid = d.cloudstack_volume_uuid WHERE d.job_id = 'job-1' AND d.disk_id = 'disk-1'",
                  port));
  ASSERT_EQ(status_of("raw-pending"), "pending");
  ASSERT_TRUE(wait_until([&] { return status_of("raw-pending") == "active"; }, 30s)) << manager_.log();
  const auto running = servers_for("raw-pending");
  ASSERT_EQ(running.size(), 1u) << manager_.log();
  EXPECT_TRUE(owns_listener(running[0].process.pid, port));
  TcpClient client(port, "raw-pending");
  client.write(pattern(4096, 1), 0);
  EXPECT_EQ(read_file(volume.path, 0, 4096), pattern(4096, 1));
}

TEST_F(ServeStatusTest, AnActiveExportSetBackToPendingIsActiveAgainWithItsServer) {
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  const NbdExport e = created(volume);
  sql(fmt::format("UPDATE nbd_exports SET status = 'pending' WHERE id = {}", e.id));

  ASSERT_TRUE(wait_until([&] { return status_of(e.export_name) == "active"; }, 30s)) << manager_.log();
  const auto running = servers_for(e.export_name);
  ASSERT_EQ(running.size(), 1u) << manager_.log();
  EXPECT_EQ(server_of(export_of(volume)), running[0].process);
  EXPECT_TRUE(owns_listener(running[0].process.pid, e.port));
  TcpClient client(e.port, e.export_name);  // the plugin admits it again
  client.write(pattern(4096, 2), 0);
}

TEST_F(ServeStatusTest, AnActiveExportSetToFailedOrRevokedHasItsServerStopped) {
  manager_.start();
  const auto failed_volume = add_volume("job-1", "disk-1");
  const auto revoked_volume = add_volume("job-1", "disk-2");
  const auto kept_volume = add_volume("job-1", "disk-3");
  const NbdExport failed = created(failed_volume);
  const NbdExport revoked = created(revoked_volume);
  const NbdExport kept = created(kept_volume);
  const auto kept_server = server_of(kept);

  sql(fmt::format("UPDATE nbd_exports SET status = 'failed', status_reason = 'raw failure' WHERE id = {}", failed.id));
  sql(fmt::format("UPDATE nbd_exports SET status = 'revoked', status_reason = 'raw revocation' WHERE id = {}",
                  revoked.id));
  for (const NbdExport& gone : {failed, revoked}) {
    EXPECT_TRUE(wait_until([&] { return servers_for(gone.export_name).empty() && port_bindable(gone.port); }, 30s))
        << gone.export_name << "\n"
        << manager_.log();
    EXPECT_TRUE(wait_until([&] { return !store_.find_export_server(gone.id)->running(); }, 30s)) << manager_.log();
  }
  EXPECT_EQ(status_of(failed.export_name), "failed");
  EXPECT_EQ(status_of(revoked.export_name), "revoked");
  EXPECT_EQ(server_of(kept), kept_server);  // untouched
  EXPECT_EQ(TcpClient::connect_error(kept.port, kept.export_name), std::nullopt);
}

TEST_F(ServeStatusTest, ARevokedRowReusedInOneTransactionGetsANewServerThenBecomesActive) {
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  const NbdExport e = created(volume);
  const ProcessIdentity old_server = *server_of(e);

  // Revoked and re-used as `export create` re-uses a row, in one transaction: the manager never sees it revoked.
  sql(
      fmt::format("BEGIN IMMEDIATE; UPDATE nbd_exports SET status = 'revoked' WHERE id = {0}; "
                  "UPDATE nbd_exports SET status = 'pending', status_reason = NULL, "
                  "created_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+1 second') WHERE id = {0}; "
                  "DELETE FROM export_servers WHERE export_id = {0}; COMMIT",
                  e.id));

  std::optional<ProcessIdentity> new_server;
  ASSERT_TRUE(wait_until(
      [&] {
        new_server = server_of(e);
        return status_of(e.export_name) == "active" && new_server && *new_server != old_server;
      },
      30s))
      << manager_.log();
  EXPECT_FALSE(still_running(old_server)) << "the re-used export's old server still runs";
  const auto running = servers_for(e.export_name);
  ASSERT_EQ(running.size(), 1u) << manager_.log();
  EXPECT_EQ(running[0].process, *new_server);
  EXPECT_EQ(export_of(volume).id, e.id);
  TcpClient client(e.port, e.export_name);
  client.write(pattern(4096, 3), 0);
}

}  // namespace
}  // namespace nbdxm::test
