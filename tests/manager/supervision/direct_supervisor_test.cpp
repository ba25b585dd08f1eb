// The direct backend with real parts: the built `nbdxm export-server` running real nbdkit with the built plugin on a
// socket the backend bound, libnbd clients, a real store, and a loop device whose flush count shows the stop's sync.
#include "direct_supervisor.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>

#include "manager_harness.hpp"
#include "nbdxm/port_allocator.hpp"
#include "server_command.hpp"

namespace nbdxm::test {
namespace {

using namespace std::chrono_literals;
using supervision::DirectSupervisor;
using supervision::ServerEvent;
using supervision::ServerSettings;
using supervision::ServerTarget;

class DirectSupervisorTest : public ManagerTest {
 protected:
  DirectSupervisorTest() {
    // The servers are this process's children and inherit its environment: give it what every nbdkit of the tests
    // gets (in a sanitizer build, the runtime preloaded for the sanitized plugin).
    for (const auto& name : nbdkit_unset_environment()) ::unsetenv(name.c_str());
    for (const auto& entry : nbdkit_environment()) {
      const auto equals = entry.find('=');
      ::setenv(entry.substr(0, equals).c_str(), entry.substr(equals + 1).c_str(), 1);
    }
    settings_.nbdkit = "nbdkit";
    settings_.plugin = NBDXM_PLUGIN;
    settings_.db_path = db_path_;
    settings_.listen_address = "127.0.0.1";
    settings_.run_dir = dir_.file("run");
    settings_.allow_regular_files = true;
    settings_.allow_uncorrelated = true;  // the test's volumes have no identity links
    settings_.byid_dir = dir_.file("by-id");
    settings_.server_threads = 4;
    supervisor_ =
        std::make_unique<DirectSupervisor>(settings_, std::vector<std::string>{NBDXM_BINARY, "export-server"});
  }

  PortRange port_range() const { return PortRange{ports_.low(), ports_.high()}; }
  // An active export of a new volume, with its server spec written as the reconciler writes it.
  ServerTarget export_for(const Volume& volume) {
    NewExport request{volume.job_id, volume.disk_id, std::nullopt, std::nullopt};
    const auto e = store_.create_export(request, PortAllocator(port_range(), "127.0.0.1"));
    store_.set_export_status(e.export_name, "active");
    const ServerTarget target{e.id, e.export_name, e.port, e.created_at, "", ""};
    const std::string device = store_.get_export(e.export_name).device_path;
    supervision::write_server_spec(supervision::server_spec_path(settings_, target),
                                   supervision::ServerSpec{settings_, target, {device}, device});
    return target;
  }
  // Advances the backend until an event of `kind` for the target arrives (the events before it are kept); with
  // `at`, the backend's clock stays there: nothing that waits for a deadline happens.
  bool await(ServerEvent::Kind kind, const ServerTarget& target, std::chrono::milliseconds timeout = 20s,
             std::optional<std::chrono::steady_clock::time_point> at = std::nullopt) {
    return wait_until(
        [&] {
          for (auto& event : supervisor_->advance(at.value_or(std::chrono::steady_clock::now()))) {
            events_.push_back(event);
          }
          return std::any_of(events_.begin(), events_.end(),
                             [&](const ServerEvent& e) { return e.kind == kind && e.target == target; });
        },
        timeout);
  }
  std::optional<ProcessIdentity> server_process(const ServerTarget& target) {
    for (const auto& s : servers_for(target.export_name)) {
      if (s.port == target.port) return s.process;
    }
    return std::nullopt;
  }

  ServerSettings settings_;
  std::unique_ptr<DirectSupervisor> supervisor_;
  std::vector<ServerEvent> events_;
};

TEST_F(DirectSupervisorTest, AKilledServerIsRestartedOnTheSamePortWhichStaysBoundMeanwhile) {
  const ServerTarget target = export_for(add_volume("job-1", "disk-1"));
  supervisor_->serve(target, std::chrono::steady_clock::now());
  ASSERT_TRUE(await(ServerEvent::Kind::serving, target));
  ASSERT_TRUE(wait_until([&] { return server_process(target).has_value(); }, 10s));
  const ProcessIdentity first = *server_process(target);
  ASSERT_EQ(::kill(first.pid, SIGKILL), 0);

  bool bindable = false;
  ASSERT_TRUE(wait_until(
      [&] {
        bindable = bindable || port_bindable(target.port);
        for (auto& event : supervisor_->advance(std::chrono::steady_clock::now())) events_.push_back(event);
        return std::any_of(events_.begin(), events_.end(),
                           [](const ServerEvent& e) { return e.kind == ServerEvent::Kind::restarted; });
      },
      20s));
  EXPECT_FALSE(bindable) << "a plain bind() to the port succeeded while the server was down";
  const auto restarted = std::find_if(events_.begin(), events_.end(),
                                      [](const ServerEvent& e) { return e.kind == ServerEvent::Kind::restarted; });
  EXPECT_NE(restarted->reason.find("killed by signal 9"), std::string::npos) << restarted->reason;
  ASSERT_TRUE(wait_until([&] { return server_process(target).has_value(); }, 10s));
  EXPECT_NE(*server_process(target), first);
  TcpClient client(target.port, target.export_name);
  client.write(pattern(4096, 1), 0);
}

// The manager's loop polls one fd for all the servers (1,000 of them must not cost a system call each at every turn),
// and that fd wakes it when any server exits.
TEST_F(DirectSupervisorTest, TheLoopPollsOneFdForEveryServerWhichWakesItWhenAnyOfThemExits) {
  const std::vector<ServerTarget> targets{export_for(add_volume("job-1", "disk-1")),
                                          export_for(add_volume("job-1", "disk-2")),
                                          export_for(add_volume("job-1", "disk-3"))};
  for (const auto& target : targets) {
    supervisor_->serve(target, std::chrono::steady_clock::now());
    ASSERT_TRUE(await(ServerEvent::Kind::serving, target));
    ASSERT_TRUE(wait_until([&] { return server_process(target).has_value(); }, 10s));
  }
  std::vector<pollfd> fds;
  supervisor_->collect_fds(fds);
  ASSERT_EQ(fds.size(), 1U);
  EXPECT_EQ(::poll(fds.data(), 1, 0), 0) << "readable while every server runs";

  ASSERT_EQ(::kill(server_process(targets[1])->pid, SIGKILL), 0);
  ASSERT_EQ(::poll(fds.data(), 1, 20'000), 1) << "the server's exit did not wake the loop within 20 s";
  events_.clear();
  ASSERT_TRUE(await(ServerEvent::Kind::restarted, targets[1]));
  EXPECT_EQ(std::count_if(events_.begin(), events_.end(),
                          [](const ServerEvent& e) { return e.kind == ServerEvent::Kind::restarted; }),
            1);
}

// A whole job's servers end at once: every exit is seen and every stop reported, however many exit fds are ready
// together. (The servers here are `sleep`s: what is tested is the backend's bookkeeping, not nbdkit.)
TEST_F(DirectSupervisorTest, ManyServersStoppedAtOnceAreAllReportedStopped) {
  constexpr int kServers = 80;
  DirectSupervisor many(settings_, {"/bin/sh", "-c", "exec sleep 3600", "server"});
  const auto now = std::chrono::steady_clock::now();
  std::vector<ServerTarget> targets;
  for (int k = 0; k < kServers; ++k) {
    const ServerTarget target{k + 1, fmt::format("many-{}", k), ports_.low() + k, "2026-01-01T00:00:00.000Z", "", ""};
    supervision::write_server_spec(supervision::server_spec_path(settings_, target),
                                   supervision::ServerSpec{settings_, target, {}, ""});
    many.serve(target, now);
    targets.push_back(target);
  }
  const auto count = [&](ServerEvent::Kind kind) {
    return std::count_if(events_.begin(), events_.end(), [&](const ServerEvent& e) { return e.kind == kind; });
  };
  const auto advance_until = [&](ServerEvent::Kind kind) {
    return wait_until(
        [&] {
          for (auto& event : many.advance(std::chrono::steady_clock::now())) events_.push_back(event);
          return count(kind) == kServers;
        },
        20s);
  };
  ASSERT_TRUE(advance_until(ServerEvent::Kind::serving));
  for (const auto& target : targets) many.stop(target, std::chrono::steady_clock::now());
  ASSERT_TRUE(advance_until(ServerEvent::Kind::stopped)) << count(ServerEvent::Kind::stopped) << " reported stopped";
  EXPECT_EQ(count(ServerEvent::Kind::restarted), 0);
}

TEST_F(DirectSupervisorTest, AStopEndsAServerWithAnIdleClientAtOnceAndPutsEveryAcknowledgedWriteOnTheDevice) {
  if (const auto reason = LoopDevice::unavailable_reason()) GTEST_SKIP() << *reason;
  const Volume volume = add_volume("job-1", "disk-1");
  LoopDevice loop(volume.path);
  store_.set_mapping_path(volume.uuid, loop.path());
  const ServerTarget target = export_for(volume);
  supervisor_->serve(target, std::chrono::steady_clock::now());
  ASSERT_TRUE(await(ServerEvent::Kind::serving, target));

  TcpClient idle(target.port, target.export_name);  // never flushes, never disconnects
  idle.write(pattern(kMiB, 7), 0);
  const uint64_t flushes_before = loop.flushes_completed();
  // The backend's clock does not move: the server ends without a grace that an idle client would use up.
  const auto stop_time = std::chrono::steady_clock::now();
  supervisor_->stop(target, stop_time);
  ASSERT_TRUE(await(ServerEvent::Kind::stopped, target, 20s, stop_time));
  EXPECT_FALSE(server_process(target).has_value());
  EXPECT_GT(loop.flushes_completed(), flushes_before) << "the device was not synced after the server was gone";
  EXPECT_EQ(read_file(loop.path(), 0, kMiB), pattern(kMiB, 7));
  EXPECT_TRUE(port_bindable(target.port));
}

TEST_F(DirectSupervisorTest, ShutdownStopsEveryServerAndReportsThemStopped) {
  const ServerTarget a = export_for(add_volume("job-1", "disk-1"));
  const ServerTarget b = export_for(add_volume("job-1", "disk-2"));
  supervisor_->serve(a, std::chrono::steady_clock::now());
  supervisor_->serve(b, std::chrono::steady_clock::now());
  ASSERT_TRUE(await(ServerEvent::Kind::serving, a));
  ASSERT_TRUE(await(ServerEvent::Kind::serving, b));
  TcpClient client(a.port, a.export_name);
  client.write(pattern(4096, 3), 0);

  supervisor_->shutdown();
  EXPECT_TRUE(servers_of(db_path_).empty());
  EXPECT_TRUE(port_bindable(a.port));
  EXPECT_TRUE(port_bindable(b.port));
  EXPECT_NE(client.try_write(pattern(4096, 4), 4096), 0);
  EXPECT_TRUE(await(ServerEvent::Kind::stopped, a, 1s));
  EXPECT_TRUE(await(ServerEvent::Kind::stopped, b, 1s));
}

TEST_F(DirectSupervisorTest, APortHeldByAnotherProgramIsReportedUnavailable) {
  const ServerTarget target = export_for(add_volume("job-1", "disk-1"));
  const FileDescriptor other = listen_on("127.0.0.1", target.port);
  ASSERT_TRUE(other.valid());
  supervisor_->serve(target, std::chrono::steady_clock::now());
  ASSERT_TRUE(await(ServerEvent::Kind::port_unavailable, target));
  EXPECT_FALSE(server_process(target).has_value());
}

}  // namespace
}  // namespace nbdxm::test
