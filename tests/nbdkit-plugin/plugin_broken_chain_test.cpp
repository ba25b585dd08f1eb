// The plugin serves an export only through its complete chain (export -> disk -> job, export -> device mapping) and
// only while its job runs, whatever the export's row says. A store of an older schema version can hold an 'active'
// export whose job a writer with foreign keys off deleted (no cleanup triggers then), or whose job was deleted and
// added again as ended; exec_as_older_writer makes such rows in a current store (see store_test_support.hpp).
#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>

#include "plugin_fixture.hpp"

namespace nbdxm::test {
namespace {

class PluginBrokenChain : public PluginTest {
 protected:
  // A connect to `export_name` is refused and nbdkit's log says `reason`; the device is not opened.
  void expect_refused(NbdkitServer& server, const std::string& export_name, const std::string& device,
                      const std::string& reason) {
    OpenWatch watch({device});
    ASSERT_TRUE(NbdClient::connect_error(server.socket(), export_name).has_value())
        << "the plugin served " << export_name;
    EXPECT_NE(server.log().find(reason), std::string::npos) << "expected \"" << reason << "\" in nbdkit's log:\n"
                                                            << server.log();
    EXPECT_EQ(watch.opens(), 0) << "a refused connect opened the device";
  }

  std::unique_ptr<Volume> volume(const std::string& name) {
    return std::make_unique<Volume>(dir_, name, Backing::file, kGiB);
  }
};

TEST_F(PluginBrokenChain, ExportWhoseJobWasDeletedIsRefusedAndItsConnectionsCut) {
  auto a = volume("a");
  const NbdExport served = store_.add({"export-a", a->device()});
  auto server = serve();
  NbdClient open(server->socket(), "export-a");
  ASSERT_EQ(open.try_read(4096, 0), 0);

  exec_as_older_writer(store_.database(), "DELETE FROM replication_jobs WHERE id = '" + served.job_id + "'");
  ASSERT_EQ(
      store_.database().sql().execAndGet("SELECT status FROM nbd_exports WHERE export_name = 'export-a'").getString(),
      "active");
  expect_refused(*server, "export-a", a->device(),
                 "export export-a does not exist in the state store, or its job, disk or device mapping does not");
  EXPECT_TRUE(eventually([&] { return open.try_read(4096, 0) == ESHUTDOWN; }, std::chrono::seconds(30)))
      << "the open connection was not cut";
}

TEST_F(PluginBrokenChain, ExportWhoseDiskWasDeletedIsRefused) {
  auto a = volume("a");
  store_.add({"export-a", a->device()});
  auto server = serve();
  exec_as_older_writer(store_.database(), "DELETE FROM vm_disks WHERE disk_id = 'disk-0'");
  expect_refused(*server, "export-a", a->device(),
                 "export export-a does not exist in the state store, or its job, disk or device mapping does not");
}

TEST_F(PluginBrokenChain, ExportOfAJobThatEndedIsRefusedAndItsConnectionsCut) {
  auto a = volume("a");
  const NbdExport served = store_.add({"export-a", a->device()});
  auto server = serve();
  NbdClient open(server->socket(), "export-a");
  ASSERT_EQ(open.try_read(4096, 0), 0);

  // Deleted and added again as completed: a job's end revokes its exports only when its status changes.
  exec_as_older_writer(store_.database(),
                       "DELETE FROM replication_jobs WHERE id = '" + served.job_id +
                           "'; INSERT INTO replication_jobs (id, source_vm_id, source_vm_name, status) VALUES ('" +
                           served.job_id + "', 'vm', 'vm', 'completed')");
  ASSERT_EQ(
      store_.database().sql().execAndGet("SELECT status FROM nbd_exports WHERE export_name = 'export-a'").getString(),
      "active");
  expect_refused(
      *server, "export-a", a->device(),
      "export export-a is revoked (job " + served.job_id + " has ended (completed)); only active exports are served");
  EXPECT_TRUE(eventually([&] { return open.try_read(4096, 0) == ESHUTDOWN; }, std::chrono::seconds(30)))
      << "the open connection was not cut";
}

}  // namespace
}  // namespace nbdxm::test
