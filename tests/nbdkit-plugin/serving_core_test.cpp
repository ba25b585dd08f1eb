// The plugin's core classes on their own, without nbdkit: DeviceResolver, BlockBackend, ExportWatcher and
// ExportConnector against real files, loop devices and a real store.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <thread>

#include "nbdxm/block_backend.hpp"
#include "nbdxm/block_device_sizes.hpp"
#include "nbdxm/device_claims.hpp"
#include "nbdxm/device_resolver.hpp"
#include "nbdxm/error.hpp"
#include "nbdxm/export_connector.hpp"
#include "nbdxm/export_watcher.hpp"
#include "plugin_harness.hpp"

namespace nbdxm::test {
namespace {

NbdExport export_of(const std::string& path, int64_t size, bool correlation = false) {
  NbdExport e;
  e.id = 1;
  e.export_name = "migration-vol-test";
  e.status = "active";
  e.volume_uuid = "b3bb9310-1b59-4f62-97e8-cefffdfe3804";
  e.device_path = path;
  e.size = size;
  e.requires_device_correlation = correlation;
  return e;
}

std::string refusal(const DeviceResolver& resolver, const NbdExport& e) {
  try {
    resolver.open(e, false);
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

TEST(DeviceResolver, IdentityLinkIsVirtioAndTheFirst20HexDigitsOfTheUuid) {
  DeviceResolver resolver(DeviceRules{false, "/dev/disk/by-id"});
  EXPECT_EQ(resolver.identity_link("b3bb9310-1b59-4f62-97e8-cefffdfe3804"),
            "/dev/disk/by-id/virtio-b3bb93101b594f6297e8");
}

TEST(DeviceResolver, OpensARegularFileOnlyWhenAllowedAndOfTheMappingsSize) {
  TempDir dir;
  create_volume_file(dir.file("disk"), kMiB);
  const DeviceResolver strict(DeviceRules{false, dir.path(), true});
  EXPECT_NE(refusal(strict, export_of(dir.file("disk"), kMiB)).find("is a regular file, not a block device"),
            std::string::npos);

  const DeviceResolver allowing(DeviceRules{true, dir.path(), true});
  OpenedDevice device = allowing.open(export_of(dir.file("disk"), kMiB), false);
  EXPECT_TRUE(device.fd.valid());
  EXPECT_EQ(device.kind, DeviceKind::regular_file);
  EXPECT_EQ(device.size, kMiB);

  EXPECT_NE(refusal(allowing, export_of(dir.file("disk"), kMiB + 512)).find("has 1048576 bytes but the mapping"),
            std::string::npos);
  EXPECT_NE(refusal(allowing, export_of(dir.file("missing"), kMiB)).find("does not exist"), std::string::npos);
  EXPECT_NE(refusal(allowing, export_of(dir.path(), kMiB)).find("is a directory, not a block device"),
            std::string::npos);
}

TEST(DeviceResolver, RequiresTheIdentityLinkToLeadToTheSameFile) {
  TempDir dir;
  create_volume_file(dir.file("disk"), kMiB);
  create_volume_file(dir.file("other"), kMiB);
  const DeviceResolver resolver(DeviceRules{true, dir.path()});
  const NbdExport e = export_of(dir.file("disk"), kMiB, true);
  EXPECT_NE(refusal(resolver, e).find("identity link " + dir.path() + "/virtio-b3bb93101b594f6297e8 of volume"),
            std::string::npos);
  std::filesystem::create_symlink(dir.file("other"), dir.file("virtio-b3bb93101b594f6297e8"));
  EXPECT_NE(refusal(resolver, e).find("leads to " + dir.file("other") + ", not to " + dir.file("disk")),
            std::string::npos);
  std::filesystem::remove(dir.file("virtio-b3bb93101b594f6297e8"));
  std::filesystem::create_symlink(dir.file("disk"), dir.file("virtio-b3bb93101b594f6297e8"));
  EXPECT_TRUE(resolver.open(e, false).fd.valid());
}

class FileBackend : public ::testing::Test {
 protected:
  void SetUp() override {
    create_volume_file(path_, kMiB);
    backend_ = std::make_unique<BlockBackend>(
        DeviceResolver(DeviceRules{true, dir_.path(), true}).open(export_of(path_, kMiB), false));
  }
  TempDir dir_;
  std::string path_ = dir_.file("disk");
  std::unique_ptr<BlockBackend> backend_;
};

TEST_F(FileBackend, WritesLandAndNothingBeyondTheEndIsWrittenOrGrown) {
  const std::string data = pattern(4096, 1);
  ASSERT_EQ(backend_->write(data.data(), 4096, kMiB - 4096, false), 0);
  EXPECT_EQ(backend_->write(data.data(), 4096, kMiB - 2048, false), ENOSPC);
  EXPECT_EQ(backend_->write(data.data(), 4096, kMiB, false), ENOSPC);
  EXPECT_EQ(backend_->zero(4096, kMiB, ZeroFlags{}), ENOSPC);
  EXPECT_EQ(backend_->trim(4096, kMiB - 2048, false), ENOSPC);
  EXPECT_EQ(file_size(path_), kMiB);
  EXPECT_TRUE(holds_exactly(path_, {{kMiB - 4096, data}}));
  EXPECT_EQ(backend_->sync_if_written(), 0);
}

TEST_F(FileBackend, ZeroPunchesAHoleWhenAllowedAndExtentsReportIt) {
  ASSERT_TRUE(backend_->can_extents());
  const std::string data = pattern(256 * 1024, 2);
  ASSERT_EQ(backend_->write(data.data(), static_cast<uint32_t>(data.size()), 0, false), 0);
  ASSERT_EQ(backend_->zero(64 * 1024, 64 * 1024, ZeroFlags{true, false, true}), 0);
  EXPECT_EQ(read_at(path_, 64 * 1024, 64 * 1024), std::string(64 * 1024, '\0'));
  EXPECT_EQ(read_at(path_, 0, 64 * 1024), data.substr(0, 64 * 1024));

  std::vector<std::tuple<uint64_t, uint64_t, bool>> extents;
  ASSERT_EQ(backend_->extents(kMiB, 0, false,
                              [&](uint64_t offset, uint64_t length, bool hole) {
                                extents.emplace_back(offset, length, hole);
                                return 0;
                              }),
            0);
  const std::vector<std::tuple<uint64_t, uint64_t, bool>> expected = {{0, 64 * 1024, false},
                                                                      {64 * 1024, 64 * 1024, true},
                                                                      {128 * 1024, 128 * 1024, false},
                                                                      {256 * 1024, kMiB - 256 * 1024, true}};
  EXPECT_EQ(extents, expected);
}

TEST_F(FileBackend, ZeroWithoutTrimKeepsTheSpaceAllocated) {
  const std::string data = pattern(64 * 1024, 3);
  ASSERT_EQ(backend_->write(data.data(), 64 * 1024, 0, false), 0);
  ASSERT_EQ(backend_->zero(64 * 1024, 0, ZeroFlags{false, true, false}), 0);
  EXPECT_EQ(read_at(path_, 0, 64 * 1024), std::string(64 * 1024, '\0'));
  ASSERT_FALSE(data_regions(path_).empty());
  EXPECT_EQ(data_regions(path_).front().first, 0u);
}

class LoopBackend : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto reason = LoopDevice::unavailable_reason()) GTEST_SKIP() << *reason;
    create_volume_file(dir_.file("backing"), 8 * kMiB);
    loop_ = std::make_unique<LoopDevice>(dir_.file("backing"));
    backend_ = std::make_unique<BlockBackend>(
        DeviceResolver(DeviceRules{false, dir_.path(), true}).open(export_of(loop_->path(), 8 * kMiB), false));
  }
  TempDir dir_;
  std::unique_ptr<LoopDevice> loop_;
  std::unique_ptr<BlockBackend> backend_;
};

TEST_F(LoopBackend, AdvertisesTheLogicalSectorAsMinimumAndNoExtents) {
  EXPECT_EQ(backend_->kind(), DeviceKind::block_device);
  EXPECT_EQ(backend_->block_sizes().minimum, 512u);
  EXPECT_EQ(backend_->block_sizes().preferred, 4096u);
  EXPECT_FALSE(backend_->can_extents());
}

TEST_F(LoopBackend, UnalignedOrSlowZeroesFallBackInsteadOfFailing) {
  EXPECT_EQ(backend_->zero(100, 1000, ZeroFlags{}), EOPNOTSUPP);
  EXPECT_EQ(backend_->zero(4096, 0, ZeroFlags{false, false, true}), EOPNOTSUPP);  // fast but no hole allowed
  const std::string data = pattern(8192, 4);
  ASSERT_EQ(backend_->write(data.data(), 8192, 0, true), 0);
  ASSERT_EQ(backend_->zero(4096, 4096, ZeroFlags{}), 0);  // BLKZEROOUT
  std::string back(8192, 'x');
  ASSERT_EQ(backend_->read(back.data(), 8192, 0), 0);
  EXPECT_EQ(back.substr(0, 4096), data.substr(0, 4096));
  EXPECT_EQ(back.substr(4096), std::string(4096, '\0'));
}

// Resizes the loop device's backing file and makes the kernel take the new size (losetup -c).
void resize_loop(const LoopDevice& loop, const std::string& backing, int64_t size) {
  std::filesystem::resize_file(backing, static_cast<uintmax_t>(size));
  ASSERT_EQ(run({"losetup", "-c", loop.path()}), 0);
}

dev_t device_number(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw std::runtime_error("stat " + path + " failed");
  return st.st_rdev;
}

TEST_F(LoopBackend, BlockDeviceSizesReadsTheSizeAfreshAtEveryCall) {
  BlockDeviceSizes sizes;
  const dev_t loop = device_number(loop_->path());
  EXPECT_EQ(sizes.bytes(loop), 8 * kMiB);
  resize_loop(*loop_, dir_.file("backing"), 12 * kMiB);
  EXPECT_EQ(sizes.bytes(loop), 12 * kMiB);  // the kept attribute is read again, not remembered
  resize_loop(*loop_, dir_.file("backing"), 8 * kMiB);
  EXPECT_EQ(sizes.bytes(loop), 8 * kMiB);
}

TEST(BlockDeviceSizes, KnowsNoSizeOfADeviceThatSysfsDoesNotList) {
  BlockDeviceSizes sizes;
  EXPECT_EQ(sizes.bytes(makedev(4095, 1048575)), std::nullopt);
}

TEST_F(LoopBackend, TheResolverRefusesADeviceThatChangedSizeSinceTheLastOpen) {
  backend_.reset();  // it holds the device under another resolver's claim
  const DeviceResolver resolver(DeviceRules{false, dir_.path(), true});
  const NbdExport e = export_of(loop_->path(), 8 * kMiB);
  resolver.open(e, true);
  resize_loop(*loop_, dir_.file("backing"), 8 * kMiB + 4096);
  EXPECT_NE(refusal(resolver, e).find("has 8392704 bytes but the mapping"), std::string::npos) << refusal(resolver, e);
  resize_loop(*loop_, dir_.file("backing"), 8 * kMiB);
  EXPECT_EQ(refusal(resolver, e), "");
}

TEST_F(LoopBackend, ClaimsAreSharedByOneExportRefusedToAnotherAndEndWithTheirLastShare) {
  const NbdExport e = export_of(loop_->path(), 8 * kMiB);
  const dev_t device = device_number(loop_->path());
  auto claims = DeviceClaims::create();
  try {  // the backend holds a claim of another server (another registry): the kernel refuses a second claim
    claims->claim(e, device, false);
    ADD_FAILURE() << "a device another holder claimed was claimed again";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("is in use: another process holds it open exclusively"), std::string::npos)
        << error.what();
  }
  backend_.reset();

  DeviceClaims::Share first = claims->claim(e, device, false);
  DeviceClaims::Share second = claims->claim(e, device, false);
  EXPECT_EQ(first.fd(), second.fd());
  EXPECT_EQ(claims->claimed(), 1u);
  NbdExport other = e;
  other.id = 2;
  other.export_name = "migration-vol-other";
  try {
    claims->claim(other, device, false);
    ADD_FAILURE() << "another export of the same server was given a claimed device";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("this server serves it as export migration-vol-test"), std::string::npos)
        << error.what();
  }
  first.reset();
  EXPECT_EQ(claims->claimed(), 1u);
  second.reset();
  EXPECT_EQ(claims->claimed(), 0u);
  const DeviceClaims::Share again = claims->claim(other, device, false);  // the claim ended: anyone may claim it now
  EXPECT_TRUE(again.held());
}

// A pace under which an idle watcher would not check the store again within any test: whatever it notices after
// its short settling time, it noticed because the store's files were written.
constexpr StoreCheckPace kEventsOnly{std::chrono::milliseconds(20), std::chrono::milliseconds(100),
                                     std::chrono::hours(1)};

bool revoked_within(const ExportWatch& watch, std::chrono::seconds limit) {
  return wait_until([&] { return watch.revoked(); }, limit);
}

class WatchedStore : public ::testing::Test {
 protected:
  void SetUp() override {
    create_volume_file(dir_.file("a"), kGiB);
    create_volume_file(dir_.file("b"), kGiB);
    store_.add({"export-a", dir_.file("a")});
    store_.add({"export-b", dir_.file("b")});
    watcher_ = std::make_unique<ExportWatcher>(Database::open(store_.path(), Database::Access::read_only),
                                               [this](const std::string& line) { log_.push_back(line); });
  }
  TempDir dir_;
  TestStore store_{dir_.file("state.db")};
  std::vector<std::string> log_;
  std::unique_ptr<ExportWatcher> watcher_;
};

TEST_F(WatchedStore, RevokesOnlyTheWatchesOfTheChangedExport) {
  auto a = watcher_->admit("export-a");
  auto b = watcher_->admit("export-b");
  ASSERT_TRUE(a.found && b.found);
  watcher_->poll();
  EXPECT_FALSE(a.watch->revoked());

  store_.store().set_export_status("export-a", "revoked", "job cancelled");
  watcher_->poll();
  EXPECT_TRUE(a.watch->revoked());
  EXPECT_EQ(a.watch->reason(), "export export-a became revoked (job cancelled)");
  EXPECT_FALSE(b.watch->revoked());
  ASSERT_EQ(log_.size(), 1u);
}

TEST_F(WatchedStore, RevokesOnARemapAndOnACascadeDelete) {
  auto a = watcher_->admit("export-a");
  auto b = watcher_->admit("export-b");
  create_volume_file(dir_.file("a2"), kGiB);
  store_.store().set_mapping_path(a.found->volume_uuid, dir_.file("a2"));
  watcher_->poll();
  EXPECT_TRUE(a.watch->revoked());
  EXPECT_NE(a.watch->reason().find("moved from " + dir_.file("a") + " to " + dir_.file("a2")), std::string::npos);

  store_.store().delete_mapping(b.found->volume_uuid);
  watcher_->poll();
  EXPECT_TRUE(b.watch->revoked());
  EXPECT_EQ(b.watch->reason(), "export export-b was deleted from the store");
}

TEST_F(WatchedStore, ForgetsAWatchWhenItsConnectionEnds) {
  {
    auto a = watcher_->admit("export-a");
    EXPECT_EQ(watcher_->watch_count(), 1u);
  }
  EXPECT_EQ(watcher_->watch_count(), 0u);
  EXPECT_FALSE(watcher_->admit("no-such-export").found);
  EXPECT_EQ(watcher_->watch_count(), 0u);
}

TEST_F(WatchedStore, TheThreadNoticesAChangeWithoutAnyoneAsking) {
  auto a = watcher_->admit("export-a");
  watcher_->start();
  store_.store().set_export_status("export-a", "failed", "device error");
  EXPECT_TRUE(revoked_within(*a.watch, std::chrono::seconds(30)));
  watcher_->stop();
}

// However slow the machine, a watcher checks the store at most once per interval of its settling time after the
// start, and then not again until the store is written: writes to other files of the store's folder, for as long
// as they go on, add no check. (Its cost while idle, one check a second, is a figure in bench/README.md.)
TEST_F(WatchedStore, AnIdleWatcherLeavesTheStoreAlone) {
  auto a = watcher_->admit("export-a");
  watcher_->start(kEventsOnly);
  const uint64_t settling_checks = kEventsOnly.settle_window / kEventsOnly.interval + 1;
  for (int i = 0; i < 100; ++i) {  // for a while: 100 writes, 10 ms apart
    std::ofstream(dir_.file("unrelated")) << "another file in the store's directory " << i;
    ASSERT_LE(watcher_->checks(), settling_checks) << "checked the store with nothing written to it";
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  store_.store().set_export_status("export-a", "revoked", "job cancelled");  // ...and a commit still wakes it
  EXPECT_TRUE(revoked_within(*a.watch, std::chrono::seconds(30)));
  watcher_->stop();
}

// How many inotify instances this process holds: a watcher watching the store's files holds one.
int inotify_instances() {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    if (std::filesystem::read_symlink(entry.path(), ec).string() == "anon_inode:inotify") ++count;
  }
  return count;
}

// A server with no open connection has nothing to revoke: with one export server per live export, most of them.
// Its watcher neither checks the store nor watches its files, however often the store is written; a connection
// admitted after that is watched as ever, and once the last connection has ended the watcher is idle again.
TEST_F(WatchedStore, WithoutConnectionsTheWatcherLeavesTheStoreAloneWhateverIsWritten) {
  const int instances_before = inotify_instances();
  watcher_->start();  // the default pace: it would check every 20 ms for a second after each of these commits
  for (int i = 0; i < 50; ++i) {  // commits for a while, 10 ms apart
    store_.store().add_job(fmt::format("other-job-{}", i), "vm-other", "other");
    ASSERT_EQ(watcher_->checks(), 0u) << "checked the store with no connection to revoke";
    ASSERT_EQ(inotify_instances(), instances_before) << "watches the store with no connection to revoke";
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_FALSE(watcher_->watching_store());

  {
    auto a = watcher_->admit("export-a");
    ASSERT_TRUE(a.found);
    EXPECT_TRUE(wait_until([&] { return watcher_->watching_store(); }, std::chrono::seconds(30)));
    EXPECT_EQ(inotify_instances(), instances_before + 1);
  }
  EXPECT_TRUE(wait_until([&] { return !watcher_->watching_store(); }, std::chrono::seconds(30)))
      << "still watches the store after its last connection ended";
  EXPECT_EQ(inotify_instances(), instances_before);
  const uint64_t checks = watcher_->checks();
  for (int i = 0; i < 20; ++i) {
    store_.store().add_job(fmt::format("later-job-{}", i), "vm-other", "other");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(watcher_->checks(), checks) << "checked the store after its last connection ended";
  watcher_->stop();
}

// The first connection after a long idle spell (the thread blocked, not watching the store) is revoked when its
// export is revoked: at once after its admission, and later, when the thread has gone back to waiting on the
// store's files. No idle-time check could notice it instead. The settling time is the manager's and the plugin's
// (1 s), not kEventsOnly's 100 ms: a commit is published only after the fsync that follows its write (the event),
// and an fsync under a loaded machine's I/O can outlast 100 ms, after which nothing would be written to wake the
// watcher again.
TEST_F(WatchedStore, TheFirstConnectionAfterAnIdleSpellIsRevoked) {
  constexpr StoreCheckPace kPace{std::chrono::milliseconds(20), StoreCheckPace{}.settle_window, std::chrono::hours(1)};
  const auto settled = kPace.settle_window + std::chrono::milliseconds(300);
  watcher_->start(kPace);
  for (int i = 0; i < 30; ++i) {  // an idle spell with commits in it, longer than the settling time
    store_.store().add_job(fmt::format("other-job-{}", i), "vm-other", "other");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::this_thread::sleep_for(settled);
  auto a = watcher_->admit("export-a");
  ASSERT_TRUE(a.found);
  store_.store().set_export_status("export-a", "revoked", "job cancelled");  // right after the admission
  EXPECT_TRUE(revoked_within(*a.watch, std::chrono::seconds(30)));
  a.watch.reset();

  std::this_thread::sleep_for(settled);  // idle again
  auto b = watcher_->admit("export-b");
  ASSERT_TRUE(b.found);
  std::this_thread::sleep_for(settled);  // settled: waiting on the store's files
  store_.store().set_export_status("export-b", "failed", "device error");
  EXPECT_TRUE(revoked_within(*b.watch, std::chrono::seconds(30)));
  watcher_->stop();
}

TEST_F(WatchedStore, ACommitWakesAnIdleWatcher) {
  auto a = watcher_->admit("export-a");
  auto b = watcher_->admit("export-b");
  watcher_->start(kEventsOnly);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  store_.store().set_export_status("export-a", "revoked", "job cancelled");
  EXPECT_TRUE(revoked_within(*a.watch, std::chrono::seconds(30)));
  EXPECT_FALSE(b.watch->revoked());

  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // idle again
  store_.store().set_export_status("export-b", "failed", "device error");
  EXPECT_TRUE(revoked_within(*b.watch, std::chrono::seconds(30)));
  watcher_->stop();
}

TEST_F(WatchedStore, ACommitWakesAWatcherThatOpenedTheStoreThroughASymbolicLink) {
  // SQLite writes the -wal file beside the database file, so that is the folder to watch.
  std::filesystem::create_directory(dir_.file("elsewhere"));
  const std::string link = dir_.file("elsewhere/another-name.db");
  std::filesystem::create_symlink(store_.path(), link);
  ExportWatcher linked(Database::open(link, Database::Access::read_only), nullptr);
  auto a = linked.admit("export-a");
  ASSERT_TRUE(a.found);
  linked.start(kEventsOnly);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  store_.store().set_export_status("export-a", "revoked", "job cancelled");
  EXPECT_TRUE(revoked_within(*a.watch, std::chrono::seconds(30)));
  linked.stop();
}

TEST_F(WatchedStore, StopsAndStartsAgain) {
  auto a = watcher_->admit("export-a");
  watcher_->start(kEventsOnly);
  watcher_->stop();
  watcher_->start(kEventsOnly);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  store_.store().set_export_status("export-a", "revoked", "job cancelled");
  EXPECT_TRUE(revoked_within(*a.watch, std::chrono::seconds(30)));
  watcher_->stop();
}

TEST(ExportConnector, ARevokedConnectionNoLongerReachesTheDevice) {
  TempDir dir;
  create_volume_file(dir.file("a"), kGiB);
  TestStore store(dir.file("state.db"));
  store.add({"export-a", dir.file("a")});
  ServeOptions options;
  options.db_path = store.path();
  options.device_rules = DeviceRules{true, dir.path(), true};
  ExportConnector connector(options, Database::open(store.path(), Database::Access::read_only), nullptr);
  auto connection = connector.connect("export-a", false);
  const std::string data = pattern(4096, 5);
  ASSERT_EQ(connection->write(data.data(), 4096, 0, false), 0);

  store.store().set_export_status("export-a", "revoked", "test");
  connector.watcher().poll();
  EXPECT_EQ(connection->write(data.data(), 4096, 8192, false), ESHUTDOWN);
  EXPECT_EQ(connection->zero(4096, 0, ZeroFlags{}), ESHUTDOWN);
  std::string back(4096, '\0');
  EXPECT_EQ(connection->read(back.data(), 4096, 0), ESHUTDOWN);
  EXPECT_EQ(connection->finish(), 0);
  EXPECT_TRUE(holds_exactly(dir.file("a"), {{0, data}}));
}

TEST(ExportConnector, AdmitsOnlyActiveAndPinnedExports) {
  TempDir dir;
  create_volume_file(dir.file("a"), kGiB);
  create_volume_file(dir.file("b"), kGiB);
  TestStore store(dir.file("state.db"));
  store.add({"export-a", dir.file("a")});
  store.add({"export-b", dir.file("b"), kGiB, false, "pending"});
  ServeOptions options;
  options.db_path = store.path();
  options.pinned_export = "export-a";
  options.device_rules = DeviceRules{true, dir.path(), true};
  ExportConnector connector(options, Database::open(store.path(), Database::Access::read_only), nullptr);
  EXPECT_EQ(connector.default_export(), "export-a");
  EXPECT_EQ(connector.connect("", false)->served().export_name, "export-a");
  EXPECT_THROW(connector.connect("export-b", false), Error);
  ASSERT_EQ(connector.served_exports().size(), 1u);
  EXPECT_EQ(printable_export_name("bad\nname"), "bad?name");
}

}  // namespace
}  // namespace nbdxm::test
