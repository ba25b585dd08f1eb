// `nbdxm serve` keeping servers alive under the direct supervisor (the manager's children): restarts with back-off
// on the same, still bound, port, failure with a reason, servers stopped with the manager (by signal or by its
// death), one manager per store, configuration file, systemd notifications.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "manager_harness.hpp"

namespace nbdxm::test {
namespace {

using namespace std::chrono_literals;

class ServeSupervisionTest : public ManagerTest {};

TEST_F(ServeSupervisionTest, AKilledServerIsRestartedOnTheSamePort) {
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  ASSERT_EQ(create(volume).code, 0);
  const NbdExport e = export_of(volume);
  const pid_t first = server_of(e)->pid;
  ASSERT_EQ(::kill(first, SIGKILL), 0);

  // The manager keeps the port bound while the server is restarted: no other program can take it meanwhile.
  std::optional<ProcessIdentity> restarted;
  bool bindable = false;
  ASSERT_TRUE(wait_until(
      [&] {
        bindable = bindable || port_bindable(e.port);
        restarted = server_of(e);
        return restarted && restarted->pid != first;
      },
      10s))
      << manager_.log();
  EXPECT_FALSE(bindable);
  EXPECT_EQ(export_of(volume).port, e.port);
  EXPECT_EQ(export_of(volume).status, "active");
  EXPECT_TRUE(owns_listener(restarted->pid, e.port));
  EXPECT_EQ(servers_for(e.export_name).size(), 1u) << manager_.log();
  TcpClient client(e.port, e.export_name);
  client.write(pattern(4096, 5), 0);
  EXPECT_EQ(store_.find_export_server(e.id)->restart_count, 1);
}

TEST_F(ServeSupervisionTest, AKilledManagerTakesItsServersWithItAndEveryAcknowledgedWriteStays) {
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  ASSERT_EQ(create(volume).code, 0);
  const NbdExport e = export_of(volume);

  constexpr int kBlocks = 64;
  std::atomic<int> acknowledged{0};
  std::thread writer([&] {
    TcpClient client(e.port, e.export_name);
    for (int i = 0; i < kBlocks; ++i) {
      if (client.try_write(pattern(kMiB, static_cast<uint32_t>(i)), static_cast<uint64_t>(i) * kMiB) != 0) break;
      ++acknowledged;
      std::this_thread::sleep_for(5ms);
    }
  });
  ASSERT_TRUE(wait_until([&] { return acknowledged >= 8; }, 30s));
  manager_.kill();
  writer.join();
  // Under the direct supervisor exports do not outlive the manager: its servers die with it.
  EXPECT_TRUE(wait_until([&] { return servers_for(e.export_name).empty(); }, 10s));
  for (int i = 0; i < acknowledged; ++i) {
    ASSERT_EQ(read_file(volume.path, static_cast<uint64_t>(i) * kMiB, kMiB), pattern(kMiB, static_cast<uint32_t>(i)))
        << "block " << i;
  }

  manager_.start();
  ASSERT_TRUE(wait_until([&] { return server_of(e).has_value(); }, 10s)) << manager_.log();
  EXPECT_EQ(servers_for(e.export_name).size(), 1u);
  EXPECT_EQ(TcpClient::connect_error(e.port, e.export_name), std::nullopt);
}

TEST_F(ServeSupervisionTest, AManagerKilledWhileStartingAServerLeavesExactlyOneServerAfterItsRestart) {
  manager_.start();
  add_volume("job-1", "disk-1");
  const int port = ports_.low() + 30;
  // Another service records the export; the manager is killed as soon as nbdkit exists for it: while nbdkit is
  // still the launcher, or once it forked the server but before the manager recorded it.
  store_.add_export("job-1", "disk-1", "crash-window", port, "pending");
  ASSERT_TRUE(wait_until([&] { return served("crash-window"); }, 10s)) << manager_.log();
  manager_.kill();

  manager_.start();
  ASSERT_TRUE(wait_until([&] { return store_.get_export("crash-window").status == "active"; }, 10s)) << manager_.log();
  // A whole reconcile pass after the one that activated it: a duplicate start, were there one, has happened by then.
  add_volume("job-1", "disk-2");
  store_.add_export("job-1", "disk-2", "later", port + 1, "pending");
  ASSERT_TRUE(wait_until([&] { return store_.get_export("later").status == "active"; }, 30s)) << manager_.log();
  // `active` once the port is bound and the server started; nbdkit takes the socket a moment later.
  std::vector<ServerProcess> running;
  ASSERT_TRUE(wait_until(
      [&] {
        running = servers_for("crash-window");
        return !running.empty() && owns_listener(running[0].process.pid, port);
      },
      10s))
      << manager_.log();
  EXPECT_EQ(running.size(), 1u) << manager_.log();
  EXPECT_EQ(server_of(store_.get_export("crash-window")), running[0].process);
  EXPECT_EQ(TcpClient::connect_error(port, "crash-window"), std::nullopt);
}

TEST_F(ServeSupervisionTest, OnStartServersWithoutALiveExportAreStoppedAndMissingOnesStarted) {
  manager_.start();
  const auto revoked = add_volume("job-1", "disk-1");
  const auto kept = add_volume("job-1", "disk-2");
  ASSERT_EQ(create(revoked).code, 0);
  ASSERT_EQ(create(kept).code, 0);
  const ProcessIdentity kept_server = *server_of(export_of(kept));
  manager_.stop();

  // While no manager runs, another service revokes one export and records a new one directly in the store.
  store_.set_export_status(export_of(revoked).export_name, "revoked", std::string("volume detached"));
  const auto added = add_volume("job-1", "disk-3");
  store_.add_export("job-1", "disk-3", "added-directly", ports_.low() + 20, "pending");

  manager_.start();
  EXPECT_TRUE(wait_until([&] { return servers_for(export_of(revoked).export_name).empty(); }, 30s));
  EXPECT_TRUE(wait_until([&] { return export_of(added).status == "active"; }, 30s)) << manager_.log();
  EXPECT_EQ(TcpClient::connect_error(ports_.low() + 20, "added-directly"), std::nullopt);
  // Stopped with the manager (direct supervisor) and served again by the new one.
  EXPECT_TRUE(wait_until([&] { return server_of(export_of(kept)).has_value(); }, 30s)) << manager_.log();
  EXPECT_NE(server_of(export_of(kept)), kept_server);
  EXPECT_EQ(TcpClient::connect_error(export_of(kept).port, export_of(kept).export_name), std::nullopt);
}

TEST_F(ServeSupervisionTest, AServerThatKeepsFailingMarksTheExportFailedWithTheReason) {
  // An nbdkit that loads the plugin (the manager checks that at start) but cannot start a server.
  const std::string bin = dir_.file("bin");
  std::filesystem::create_directories(bin);
  {
    std::ofstream script(bin + "/nbdkit");
    script << "#!/bin/sh\n"
              "if [ \"$1\" = --dump-plugin ]; then exec nbdkit \"$@\"; fi\n"
              "echo 'nbdkit: simulated start failure' >&2\n"
              "exit 1\n";
  }
  std::filesystem::permissions(bin + "/nbdkit", std::filesystem::perms::owner_all);
  Manager failing(db_path_, dir_.path(), ports_.range(), {"--nbdkit", bin + "/nbdkit"});
  failing.start();

  const auto volume = add_volume("job-1", "disk-1");
  const CliResult created = create(volume, {"--timeout", "60"});
  EXPECT_EQ(created.code, 6);
  EXPECT_NE(created.err.find("simulated start failure"), std::string::npos) << created.err;
  const NbdExport e = export_of(volume);
  EXPECT_EQ(e.status, "failed");
  EXPECT_NE(e.status_reason.value_or("").find("failed 5 times in a row"), std::string::npos) << *e.status_reason;
  EXPECT_TRUE(store_.live_exports().empty());
  EXPECT_TRUE(port_bindable(e.port));
  const CliResult shown = nbdxm({"export", "show", e.export_name});
  EXPECT_NE(shown.out.find("simulated start failure"), std::string::npos) << shown.out;
}

TEST_F(ServeSupervisionTest, RevokingTheExportOfAnIdleClientStopsItsServerWithTheWriteOnDisk) {
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  ASSERT_EQ(create(volume).code, 0);
  const NbdExport e = export_of(volume);
  TcpClient idle(e.port, e.export_name);  // never leaves: the stop must not wait for it
  idle.write(pattern(kMiB, 9), 0);

  const CliResult revoked = nbdxm({"export", "revoke", e.export_name});
  EXPECT_EQ(revoked.code, 0) << revoked.err;  // 6 if the server had outlived the revoke's timeout
  EXPECT_TRUE(servers_for(e.export_name).empty());
  EXPECT_FALSE(store_.find_export_server(e.id)->running());
  EXPECT_NE(idle.try_write(pattern(4096, 1), kMiB), 0);
  EXPECT_EQ(read_file(volume.path, 0, kMiB), pattern(kMiB, 9));
}

TEST_F(ServeSupervisionTest, StoppingTheManagerStopsItsServersAndRecordsThem) {
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  ASSERT_EQ(create(volume).code, 0);
  const NbdExport e = export_of(volume);
  const ProcessIdentity server = *server_of(e);
  TcpClient client(e.port, e.export_name);
  client.write(pattern(4096, 1), 0);
  manager_.stop();
  EXPECT_EQ(manager_.wait_exit(10s).value_or(-1), 0);
  EXPECT_FALSE(still_running(server));
  EXPECT_NE(client.try_write(pattern(4096, 2), 4096), 0);
  EXPECT_EQ(read_file(volume.path, 0, 4096), pattern(4096, 1));
  EXPECT_FALSE(store_.find_export_server(e.id)->running());
  EXPECT_TRUE(port_bindable(e.port));
  // With no manager, nothing new is exported.
  const auto other = add_volume("job-1", "disk-2");
  EXPECT_EQ(create(other).code, 6);
}

TEST_F(ServeSupervisionTest, ASecondManagerOnTheSameStoreIsRefused) {
  manager_.start();
  Manager second(db_path_, dir_.file("second"), ports_.range());
  second.launch();
  const auto status = second.wait_exit(30s);
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(WEXITSTATUS(*status), 4);
  EXPECT_NE(second.log().find(fmt::format("another manager (pid {}", manager_.pid())), std::string::npos)
      << second.log();
  EXPECT_TRUE(manager_.running());
}

TEST_F(ServeSupervisionTest, TheConfigurationFileGivesTheSettingsAndRejectsUnknownKeys) {
  const std::string config = dir_.file("nbdxm.conf");
  {
    std::ofstream out(config);
    out << "# test configuration\n"
        << fmt::format("port-range = \"{}-{}\"\n", ports_.low() + 10, ports_.low() + 12) << "max-connections = 1\n";
  }
  Manager configured(db_path_, dir_.path(), "", {"--config", config});
  configured.start();
  const auto volume = add_volume("job-1", "disk-1");
  ASSERT_EQ(create(volume).code, 0);
  const NbdExport e = export_of(volume);
  EXPECT_EQ(e.port, ports_.low() + 10);
  TcpClient first(e.port, e.export_name);
  EXPECT_NE(TcpClient::connect_error(e.port, e.export_name), std::nullopt);  // max-connections = 1
  first.disconnect();
  configured.stop();

  {
    std::ofstream out(config, std::ios::app);
    out << "max-conections = 2\n";
  }
  Manager typo(db_path_, dir_.file("typo"), "", {"--config", config});
  typo.launch();
  const auto status = typo.wait_exit(30s);
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(WEXITSTATUS(*status), 2);
  EXPECT_NE(typo.log().find("unknown key 'max-conections'"), std::string::npos) << typo.log();
}

TEST_F(ServeSupervisionTest, ItReportsReadinessAndStatusToSystemd) {
  const std::string path = dir_.file("notify.sock");
  FileDescriptor sock(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path.c_str());
  ASSERT_EQ(::bind(sock.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  std::string received;
  auto receive_until = [&](const std::string& wanted) {
    return wait_until(
        [&] {
          char buffer[4096];
          ssize_t n;
          while ((n = ::recv(sock.get(), buffer, sizeof buffer, MSG_DONTWAIT)) > 0) {
            received.append(buffer, static_cast<size_t>(n)).push_back('\n');
          }
          return received.find(wanted) != std::string::npos;
        },
        10s);
  };

  manager_.add_env("NOTIFY_SOCKET=" + path);
  manager_.start();
  EXPECT_TRUE(receive_until("READY=1")) << received;
  EXPECT_TRUE(receive_until("STATUS=serving 0 exports on 127.0.0.1")) << received;
  const auto volume = add_volume("job-1", "disk-1");
  ASSERT_EQ(create(volume).code, 0);
  EXPECT_TRUE(receive_until("STATUS=serving 1 exports on 127.0.0.1")) << received;
  manager_.stop();
  EXPECT_TRUE(receive_until("STOPPING=1")) << received;
}

// An idle manager's wakeups (about one a second) are a figure of bench/README.md, not a test: a count over a time
// window depends on the machine's load. What is tested is that a write wakes it.
TEST_F(ServeSupervisionTest, AWriteWakesAnIdleManager) {
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  ASSERT_EQ(create(volume).code, 0);
  std::this_thread::sleep_for(1500ms);  // past the settling second after the last write (shorter only tests less)

  // ...and a write wakes it: the revocation stops the server.
  const NbdExport e = export_of(volume);
  const CliResult revoked = nbdxm({"export", "revoke", e.export_name});
  ASSERT_EQ(revoked.code, 0) << revoked.err;
  EXPECT_TRUE(wait_until([&] { return servers_for(e.export_name).empty(); }, 30s)) << manager_.log();
}

}  // namespace
}  // namespace nbdxm::test
