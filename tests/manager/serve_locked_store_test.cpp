// `nbdxm serve` while another process holds the store's lock: the manager's loop goes on (a killed server is
// restarted during the lock, other exports keep serving) and what it could not record is recorded once the lock
// ends; CLI writes wait for the lock up to their busy timeout, then say the store is busy.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>

#include "manager_harness.hpp"
#include "store_lock_holder.hpp"

namespace nbdxm::test {
namespace {

using namespace std::chrono_literals;
using Lock = StoreLockHolder::Lock;

class ServeLockedStoreTest : public ManagerTest, public ::testing::WithParamInterface<Lock> {};

TEST_P(ServeLockedStoreTest, AServerKilledWhileTheStoreIsLockedIsRestartedAtOnceAndRecordedAfterwards) {
  manager_.start();
  const auto kept_volume = add_volume("job-1", "disk-1");
  const auto killed_volume = add_volume("job-1", "disk-2");
  ASSERT_EQ(create(kept_volume).code, 0);
  ASSERT_EQ(create(killed_volume).code, 0);
  const NbdExport kept = export_of(kept_volume);
  const NbdExport killed = export_of(killed_volume);
  const ProcessIdentity first = *server_of(killed);

  // At most 8 s: shorter than the 10 s busy timeout a manager without its 100 ms bound would wait (it would restart
  // the server only once the lock had ended), long enough for a slow (sanitized) manager to restart it.
  StoreLockHolder holder(dir_, db_path_, GetParam(), 8s);
  ASSERT_EQ(::kill(first.pid, SIGKILL), 0);
  ASSERT_TRUE(wait_until(
      [&] {
        const auto running = servers_for(killed.export_name);
        return running.size() == 1 && running[0].process != first && owns_listener(running[0].process.pid, killed.port);
      },
      30s))
      << manager_.log();
  EXPECT_TRUE(holder.holding()) << "the server was restarted only once the lock had ended\n" << manager_.log();
  if (GetParam() == Lock::immediate) {
    // Readers are not blocked by a writer: the other export keeps serving new connections.
    EXPECT_EQ(TcpClient::connect_error(kept.port, kept.export_name), std::nullopt);
  }

  // Once the lock ends, the failure and the restart are recorded (they waited, they were not dropped).
  holder.release();
  ASSERT_TRUE(wait_until(
      [&] {
        const auto record = store_.find_export_server(killed.id);
        const auto running = servers_for(killed.export_name);
        return record && record->running() && running.size() == 1 && running[0].process != first &&
               record->restart_count == 1 && record->last_failure &&
               record->last_failure->find("killed by signal 9") != std::string::npos;
      },
      30s))
      << manager_.log();
  EXPECT_EQ(export_of(killed_volume).status, "active");
  EXPECT_EQ(TcpClient::connect_error(killed.port, killed.export_name), std::nullopt);
  EXPECT_EQ(TcpClient::connect_error(kept.port, kept.export_name), std::nullopt);
  EXPECT_EQ(servers_for(kept.export_name).size(), 1u);
}

INSTANTIATE_TEST_SUITE_P(Locks, ServeLockedStoreTest, ::testing::Values(Lock::immediate, Lock::recovery),
                         [](const auto& param) { return param.param == Lock::immediate ? "Immediate" : "Recovery"; });

class CliLockedStoreTest : public ManagerTest {};

TEST_F(CliLockedStoreTest, ExportCreateWaitsForALockHeldFiveSecondsAndSucceeds) {
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  StoreLockHolder holder(dir_, db_path_, Lock::immediate, 5s);
  const CliResult result = create(volume);
  EXPECT_TRUE(holder.released()) << "export create did not wait for the lock";
  ASSERT_EQ(result.code, 0) << result.err << manager_.log();
  EXPECT_EQ(export_of(volume).status, "active");
  EXPECT_EQ(TcpClient::connect_error(export_of(volume).port, export_of(volume).export_name), std::nullopt);
}

TEST_F(CliLockedStoreTest, AWriteThatOutwaitsItsBusyTimeoutSaysTheStoreIsBusyInOneLine) {
  add_volume("job-1", "disk-1");
  const std::string before = dump_file(db_path_);
  {
    StoreLockHolder holder(dir_, db_path_, Lock::immediate, 60s);  // longer than the CLI's 10 s
    const CliResult result = nbdxm({"job", "add", "job-2", "--vm-id", "vm-2", "--vm-name", "VM 2"});
    EXPECT_TRUE(holder.holding());
    EXPECT_EQ(result.code, 1);
    EXPECT_EQ(result.err,
              fmt::format("nbdxm: the state store {} is busy: another process kept it locked for longer than 10 s; "
                          "try again once it is done\n",
                          db_path_));
    EXPECT_EQ(result.out, "");
  }
  EXPECT_EQ(dump_file(db_path_), before);
}

}  // namespace
}  // namespace nbdxm::test
