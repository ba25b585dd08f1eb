// The server spec's access settings (tls, allow_from): nbdkit's argv, and which changes narrow access; and the device
// sync after a server stopped (by the manager, or `nbdxm-sync-devices` where no manager runs), whose failure is a
// durability failure of the export.
#include "server_command.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "manager_harness.hpp"
#include "nbdxm/export_counters.hpp"

namespace nbdxm::supervision {
namespace {

ServerSettings base() {
  ServerSettings s;
  s.nbdkit = "nbdkit";
  s.plugin = "nbdxm";
  s.db_path = "/var/lib/nbdxm/state.db";
  s.listen_address = "127.0.0.1";
  s.run_dir = "/run/nbdxm";
  s.byid_dir = "/dev/disk/by-id";
  return s;
}

const ServerTarget kTarget{7, "migration-vol-1", 10810, "2026-11-30T14:11:16.123Z", "", ""};

bool has(const std::vector<std::string>& argv, const std::string& arg) {
  return std::find(argv.begin(), argv.end(), arg) != argv.end();
}

TEST(ServerCommandTest, TlsAndAllowlistBecomeNbdkitArguments) {
  const auto plain = server_argv(base(), kTarget);
  EXPECT_FALSE(has(plain, "--tls=require"));
  EXPECT_TRUE(
      std::none_of(plain.begin(), plain.end(), [](const std::string& a) { return a.starts_with("allow-from"); }));

  ServerSettings s = base();
  s.tls = true;
  s.allow_from = "127.0.0.1/32,::1/128";
  const auto argv = server_argv(s, kTarget);
  EXPECT_TRUE(has(argv, "--tls=require"));
  EXPECT_TRUE(has(argv, "--tls-psk=/var/lib/nbdxm/tls/migration-vol-1.20261130T141116123Z.psk"));
  EXPECT_EQ(tls_psk_path(s.db_path, kTarget), "/var/lib/nbdxm/tls/migration-vol-1.20261130T141116123Z.psk");
  EXPECT_TRUE(has(argv, "allow-from=127.0.0.1/32,::1/128"));
  // Options come before the plugin, its parameters after it.
  const auto plugin = std::find(argv.begin(), argv.end(), "nbdxm");
  EXPECT_LT(std::find(argv.begin(), argv.end(), "--tls=require"), plugin);
  EXPECT_GT(std::find(argv.begin(), argv.end(), "allow-from=127.0.0.1/32,::1/128"), plugin);
}

TEST(ServerCommandTest, TurningTlsOnOrShrinkingTheAllowlistNarrowsAccess) {
  ServerSettings running = base();
  ServerSettings wanted = base();
  wanted.tls = true;
  EXPECT_TRUE(narrows_access(running, wanted));
  EXPECT_EQ(describe_difference(running, wanted), "tls off -> require");
  EXPECT_FALSE(narrows_access(wanted, running));  // TLS turned off widens

  running = base();
  wanted = base();
  wanted.allow_from = "10.0.0.0/8";
  EXPECT_TRUE(narrows_access(running, wanted));  // any client -> a list
  EXPECT_EQ(describe_difference(running, wanted), "allow-from any -> 10.0.0.0/8");
  EXPECT_FALSE(narrows_access(wanted, running));  // a list -> any client

  running.allow_from = "10.0.0.0/8,127.0.0.1/32";
  wanted.allow_from = "10.0.0.0/8";
  EXPECT_TRUE(narrows_access(running, wanted));  // a network dropped
  wanted.allow_from = "10.0.0.0/8,127.0.0.1/32,::1/128";
  EXPECT_FALSE(narrows_access(running, wanted));  // a network added
  EXPECT_FALSE(narrows_access(running, running));
}

TEST(ServerCommandTest, SpecsKeepTheAccessSettings) {
  ServerSettings s = base();
  s.tls = true;
  s.allow_from = "192.168.0.0/16";
  const std::string path = ::testing::TempDir() + "/access-spec.json";
  write_server_spec(path, ServerSpec{s, kTarget, {}, {}});
  const ServerSpec read = read_server_spec(path);
  EXPECT_EQ(read.settings, s);
  std::remove(path.c_str());
}

TEST(ServerCommandTest, ASyncThatFailsAfterTheServerStoppedIsRecordedAsTheExportsDurabilityFailure) {
  const test::TempDir dir;
  const std::string device = dir.file("volume.img");
  std::ofstream(device) << "acknowledged data";
  ServerSettings settings = base();
  settings.run_dir = dir.file("run");
  const std::string spec = server_spec_path(settings, kTarget);
  write_server_spec(spec, {settings, kTarget, {device}, device});
  std::string output;
  const int status = test::run_program({"strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=fdatasync", "-e",
                                        "inject=fdatasync:error=EIO", NBDXM_SYNC_DEVICES_BINARY, "--spec", spec},
                                       &output);
  EXPECT_NE(status, 0) << output;
  const auto counters = ExportCounters::open_read_only(
      ExportCounters::path(counters_dir(settings.run_dir), kTarget.export_id, kTarget.created_at));
  ASSERT_NE(counters, nullptr) << output;
  const auto durability = counters->durability();
  EXPECT_EQ(durability.failures, 1u);
  EXPECT_EQ(durability.reason,
            "durability: sync after the server stopped failed: " + device + ": fdatasync: Input/output error");
}

TEST(ServerCommandTest, EveryDeviceTheExportWasMappedToIsSynced) {
  const test::TempDir dir;
  const std::string earlier = dir.file("earlier.img");
  const std::string current = dir.file("current.img");
  std::ofstream(earlier) << "written before the move";
  std::ofstream(current) << "written after it";
  const std::string spec = dir.file("spec.json");
  write_server_spec(spec, merged_server_spec(spec, base(), kTarget, earlier));
  write_server_spec(spec, merged_server_spec(spec, base(), kTarget, current));
  EXPECT_EQ(read_server_spec(spec).device, current);
  EXPECT_EQ(sync_spec_devices(spec).synced, (std::vector<std::string>{earlier, current}));
}

// What the systemd backend's start does with the specs of units stopped while no manager ran: every device of each
// spec synced; a spec counts as done only when all its devices were synced (else it is kept, to try again).
TEST(ServerCommandTest, SpecFilesAreSyncedSideBySideAndEachSaysWhetherAllItsDevicesWere) {
  const test::TempDir dir;
  std::vector<std::string> specs;
  for (int i = 0; i < 20; ++i) {  // more than kParallelSyncs: every one is taken
    const std::string earlier = dir.file(fmt::format("earlier-{}.img", i));
    const std::string current = dir.file(fmt::format("current-{}.img", i));
    std::ofstream(earlier) << "written before the move";
    std::ofstream(current) << "written after it";
    specs.push_back(dir.file(fmt::format("spec-{}.json", i)));
    write_server_spec(specs.back(), ServerSpec{base(), kTarget, {earlier, current}, current});
  }
  const std::string unreadable = dir.file("unreadable.json");
  std::ofstream(unreadable) << "not json";
  specs.push_back(unreadable);
  specs.push_back(dir.file("gone.json"));  // removed meanwhile: nothing to sync

  const std::vector<bool> synced = sync_spec_files(specs);
  ASSERT_EQ(synced.size(), specs.size());
  for (int i = 0; i < 20; ++i) EXPECT_TRUE(synced[i]) << specs[i];
  EXPECT_FALSE(synced[20]) << "a spec that cannot be read was not synced";
  EXPECT_TRUE(synced[21]) << "a spec that is gone has nothing left to sync";
}

}  // namespace
}  // namespace nbdxm::supervision
