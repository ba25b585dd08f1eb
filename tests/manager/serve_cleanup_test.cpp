// Automatic cleanup with no command from anyone: jobs that end or are deleted, mappings that move, exports written
// to the store directly by other services.
#include <gtest/gtest.h>

#include <SQLiteCpp/Statement.h>

#include <chrono>
#include <functional>
#include <iostream>
#include <string>

#include "manager_harness.hpp"

namespace nbdxm::test {
namespace {

using namespace std::chrono_literals;

class ServeCleanupTest : public ManagerTest {};

// The target for cleanup is 1 s; tests never assert on timing: they wait up to this bound for the servers to
// go and print the time it took as a figure line.
constexpr auto kCleanupBound = 30s;

// A raw writer's wait for the store's lock, in milliseconds as SQLite takes it.
constexpr int kRawWriterBusyTimeoutMs = 30'000;

// Waits up to kCleanupBound for `done`; prints how long it took (or that it never happened) as a figure line.
bool wait_for_cleanup(const std::string& what, const std::function<bool()>& done) {
  const auto start = std::chrono::steady_clock::now();
  const bool happened = wait_until(done, kCleanupBound);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  if (happened) {
    std::cout << "figure: " << what << ": " << took.count() << " ms\n";
  } else {
    std::cout << "figure: " << what << ": not within " << kCleanupBound.count() << " s\n";
  }
  return happened;
}

TEST_F(ServeCleanupTest, AJobThatCompletesHasItsServersStoppedAndOtherJobsAreUntouched) {
  manager_.start();
  const auto ending1 = add_volume("job-ending", "disk-1");
  const auto ending2 = add_volume("job-ending", "disk-2");
  const auto other = add_volume("job-other", "disk-1");
  for (const auto* v : {&ending1, &ending2, &other}) ASSERT_EQ(create(*v).code, 0);
  const NbdExport o = export_of(other);
  const ProcessIdentity other_server = *server_of(o);
  TcpClient client(o.port, o.export_name);
  client.write(pattern(4096, 1), 0);
  TcpClient ending_client(export_of(ending1).port, export_of(ending1).export_name);

  store_.set_job_status("job-ending", "completed");  // as the job service does, straight into the store
  EXPECT_TRUE(wait_for_cleanup("the completed job's servers stopped, after the store's change", [&] {
    return !served(export_of(ending1).export_name) && !served(export_of(ending2).export_name);
  }));
  EXPECT_EQ(export_of(ending1).status, "revoked");
  EXPECT_NE(ending_client.try_write(pattern(4096, 2), 0), 0);
  EXPECT_EQ(server_of(o), other_server);
  client.write(pattern(4096, 3), 4096);
  EXPECT_EQ(client.read(8192, 0), pattern(4096, 1) + pattern(4096, 3));
}

TEST_F(ServeCleanupTest, AJobThatIsDeletedHasItsServersStoppedAndOtherJobsAreUntouched) {
  manager_.start();
  const auto deleted = add_volume("job-deleted", "disk-1");
  const auto other = add_volume("job-other", "disk-1");
  ASSERT_EQ(create(deleted).code, 0);
  ASSERT_EQ(create(other).code, 0);
  const std::string deleted_name = export_of(deleted).export_name;
  const NbdExport o = export_of(other);
  const ProcessIdentity other_server = *server_of(o);
  TcpClient client(o.port, o.export_name);

  store_.delete_job("job-deleted");  // cascades: the export row is gone
  EXPECT_TRUE(wait_for_cleanup("the deleted job's server stopped, after the store's change",
                               [&] { return !served(deleted_name); }));
  EXPECT_EQ(store_.find_export(deleted_name), std::nullopt);
  EXPECT_EQ(server_of(o), other_server);
  client.write(pattern(4096, 4), 0);
  EXPECT_EQ(client.read(4096, 0), pattern(4096, 4));
}

TEST_F(ServeCleanupTest, AMovedMappingCutsOpenConnectionsAndNewOnesReachTheNewPathWithoutARestart) {
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  ASSERT_EQ(create(volume).code, 0);
  const NbdExport e = export_of(volume);
  const ProcessIdentity server = *server_of(e);
  TcpClient before(e.port, e.export_name);
  before.write(pattern(4096, 1), 0);

  // The volume daemon re-attached the volume: same volume, another device path.
  const std::string moved = dir_.file("moved.img");
  create_volume_file(moved, kGiB);
  store_.set_mapping_path(volume.uuid, moved);
  // The plugin notices within its bound; until then a write may still reach the old device, never after.
  EXPECT_TRUE(wait_until([&] { return before.try_write(pattern(4096, 2), 8192) != 0; }, 30s));
  EXPECT_NE(before.try_write(pattern(4096, 4), 16384), 0);
  TcpClient after(e.port, e.export_name);
  after.write(pattern(4096, 3), 0);
  after.disconnect();
  EXPECT_EQ(read_file(moved, 0, 4096), pattern(4096, 3));
  EXPECT_EQ(read_file(volume.path, 0, 4096), pattern(4096, 1));
  EXPECT_EQ(read_file(volume.path, 16384, 4096), std::string(4096, '\0'));
  EXPECT_EQ(read_file(moved, 16384, 4096), std::string(4096, '\0'));
  EXPECT_EQ(server_of(e), server);  // no signal, no restart
}

TEST_F(ServeCleanupTest, ExportsWrittenDirectlyToTheStoreAreServedAndStopped) {
  manager_.start();
  add_volume("job-1", "disk-1");
  const int port = ports_.low() + 5;
  {
    // Another appliance service writes the store with its own connection and plain SQL, waiting for the lock as the
    // manager holds it now and then (its counter folds) as every writer of a shared store must.
    SQLite::Database other(db_path_, SQLite::OPEN_READWRITE, kRawWriterBusyTimeoutMs);
    other.exec("PRAGMA foreign_keys = ON");
    SQLite::Statement insert(
        other,
        "INSERT INTO nbd_exports (job_id, vm_disk_id, device_mapping_id, export_name, port) "
        "SELECT d.job_id, d.id, m.id, 'written-directly', ? FROM vm_disks d "
        "JOIN device_mappings m ON m.volume_uuid = d.cloudstack_volume_uuid WHERE d.disk_id = 'disk-1'");
    insert.bind(1, port);
    ASSERT_EQ(insert.exec(), 1);
  }
  ASSERT_TRUE(wait_until([&] { return store_.get_export("written-directly").status == "active"; }, 30s))
      << manager_.log();
  EXPECT_EQ(TcpClient::connect_error(port, "written-directly"), std::nullopt);
  {
    SQLite::Database other(db_path_, SQLite::OPEN_READWRITE, kRawWriterBusyTimeoutMs);
    other.exec("UPDATE nbd_exports SET status = 'revoked' WHERE export_name = 'written-directly'");
  }
  EXPECT_TRUE(wait_for_cleanup("the revoked export's server stopped, after the store's change",
                               [&] { return !served("written-directly"); }));
  // The manager releases the port once the server is gone and its device synced.
  EXPECT_TRUE(wait_for_cleanup("the revoked export's port released, after its server stopped",
                               [&] { return port_bindable(port); }));
}

}  // namespace
}  // namespace nbdxm::test
