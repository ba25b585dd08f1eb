// Every reason the plugin refuses a connect: the client is refused, nbdkit's log says why in one line, and the
// device was not opened (inotify sees no open of it).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <filesystem>

#include "nbdxm/device_resolver.hpp"
#include "nbdxm/export_counters.hpp"
#include "nbdxm/refusal_counters.hpp"
#include "plugin_fixture.hpp"

namespace nbdxm::test {
namespace {

class PluginRefusal : public PluginTest {
 protected:
  std::unique_ptr<Volume> file_volume(const std::string& name, int64_t size = kGiB) {
    return std::make_unique<Volume>(dir_, name, Backing::file, size);
  }
};

TEST_F(PluginRefusal, TheWatchSeesTheOpenOfAnAcceptedConnect) {  // shows that the checks below can fail
  auto a = file_volume("a");
  store_.add({"export-a", a->device()});
  auto server = serve();
  OpenWatch watch({a->device()});
  NbdClient client(server->socket(), "export-a");
  EXPECT_GE(watch.opens(), 1);
}

TEST_F(PluginRefusal, UnknownExport) {
  auto a = file_volume("a");
  store_.add({"export-a", a->device()});
  auto server = serve();
  expect_refused(*server, "migration-vol-unknown", {a->device()},
                 "export migration-vol-unknown does not exist in the state store");
}

TEST_F(PluginRefusal, RevokedFailedAndPendingExports) {
  auto a = file_volume("a");
  auto b = file_volume("b");
  auto c = file_volume("c");
  store_.add({"export-a", a->device(), kGiB, false, "revoked"});
  store_.add({"export-b", b->device(), kGiB, false, "failed"});
  store_.add({"export-c", c->device(), kGiB, false, "pending"});
  auto server = serve();
  expect_refused(*server, "export-a", {a->device()},
                 "export export-a is revoked (set by the test); only active exports are served");
  expect_refused(*server, "export-b", {b->device()},
                 "export export-b is failed (set by the test); only active exports are served");
  expect_refused(*server, "export-c", {c->device()}, "export export-c is pending; only active exports are served");
}

TEST_F(PluginRefusal, AnExportOtherThanThePinnedOne) {
  auto a = file_volume("a");
  auto b = file_volume("b");
  store_.add({"export-a", a->device()});
  store_.add({"export-b", b->device()});
  auto server = serve({"allow-regular-files=true", "export=export-a"});
  expect_refused(*server, "export-b", {a->device(), b->device()},
                 "export export-b is not served here: this server serves only export export-a");
}

TEST_F(PluginRefusal, TheDefaultExportWhenNoneIsPinned) {
  auto a = file_volume("a");
  store_.add({"export-a", a->device()});
  auto server = serve();
  expect_refused(*server, "", {a->device()}, "the client asked for the default export, but this server serves");
}

TEST_F(PluginRefusal, AMissingDevice) {
  store_.add({"export-a", dir_.file("vdq")});
  auto server = serve();
  expect_refused(*server, "export-a", {}, "export export-a: device " + dir_.file("vdq") + " of volume");
  EXPECT_NE(server->log().find("does not exist; the volume is not attached at that path"), std::string::npos);
}

TEST_F(PluginRefusal, DevicesThatAreNotBlockDevices) {
  ASSERT_EQ(::mknod(dir_.file("chardev").c_str(), S_IFCHR | 0600, makedev(1, 3)), 0);  // like /dev/null
  ASSERT_EQ(::mkfifo(dir_.file("fifo").c_str(), 0600), 0);
  std::filesystem::create_directory(dir_.file("dir"));
  store_.add({"export-char", dir_.file("chardev")});
  store_.add({"export-fifo", dir_.file("fifo")});
  store_.add({"export-dir", dir_.file("dir")});
  auto server = serve();
  expect_refused(*server, "export-char", {dir_.file("chardev")},
                 dir_.file("chardev") + " is a character device, not a block device");
  expect_refused(*server, "export-fifo", {dir_.file("fifo")}, dir_.file("fifo") + " is a FIFO, not a block device");
  expect_refused(*server, "export-dir", {dir_.file("dir")}, dir_.file("dir") + " is a directory, not a block device");
}

TEST_F(PluginRefusal, ARegularFileUnlessAllowed) {
  auto a = file_volume("a");
  store_.add({"export-a", a->device()});
  auto server = serve({});
  expect_refused(*server, "export-a", {a->device()},
                 a->device() +
                     " is a regular file, not a block device; regular files are served only with "
                     "allow-regular-files=true");
}

TEST_F(PluginRefusal, AnUncorrelatedMappingUnlessAllowed) {
  auto a = file_volume("a");
  const NbdExport e = store_.add({"export-a", a->device()});  // without device correlation
  auto strict = serve({"allow-regular-files=true", "allow-uncorrelated=false"});
  expect_refused(*strict, "export-a", {a->device()},
                 "export export-a: the mapping of volume " + e.volume_uuid +
                     " does not require device correlation, so nothing proves that " + a->device() +
                     " is that volume; such mappings are served only by a server started with "
                     "allow-uncorrelated=true");
  auto allowing = serve({"allow-regular-files=true", "allow-uncorrelated=true"});
  NbdClient client(allowing->socket(), "export-a");
  EXPECT_EQ(client.size(), kGiB);
}

TEST_F(PluginRefusal, AFileOfAnotherSizeThanTheMapping) {
  auto a = file_volume("a", kGiB + 4096);
  store_.add({"export-a", a->device(), kGiB});
  auto server = serve();
  expect_refused(*server, "export-a", {a->device()},
                 "device " + a->device() + " has 1073745920 bytes but the mapping of volume");
}

TEST_F(PluginRefusal, EveryRefusalIsCountedByReasonInTheFileAllServersShare) {
  using Reason = RefusalCounters::Reason;
  auto a = file_volume("a");
  auto b = file_volume("b");
  const NbdExport ea = store_.add({"export-a", a->device()});
  store_.add({"export-b", b->device(), kGiB, false, "revoked"});
  store_.add({"export-c", dir_.file("vdq")});  // its device is missing
  const std::string counters = dir_.file("counters");
  const std::string params = "counters-dir=" + counters;
  auto by_name = serve({"allow-regular-files=true", params});
  auto pinned = serve({"allow-regular-files=true", params, "export=export-a"});
  auto guarded = serve({"allow-regular-files=true", params, "allow-from=192.0.2.0/24"});

  EXPECT_TRUE(NbdClient::connect_error(by_name->socket(), "migration-vol-unknown").has_value());
  EXPECT_TRUE(NbdClient::connect_error(by_name->socket(), "").has_value());
  EXPECT_TRUE(NbdClient::connect_error(by_name->socket(), "export-b").has_value());
  EXPECT_TRUE(NbdClient::connect_error(by_name->socket(), "export-c").has_value());
  EXPECT_TRUE(NbdClient::connect_error(pinned->socket(), "export-b").has_value());
  EXPECT_TRUE(NbdClient::connect_error(guarded->socket(), "export-a").has_value());  // a Unix socket is in no network
  { NbdClient served(by_name->socket(), "export-a"); }                               // not counted

  const auto refusals = RefusalCounters::open_read_only(RefusalCounters::path(counters));
  ASSERT_NE(refusals, nullptr);
  const auto counts = refusals->counts();
  const auto of = [&](Reason r) { return counts[static_cast<size_t>(r)]; };
  EXPECT_EQ(of(Reason::unknown_export), 1u);
  EXPECT_EQ(of(Reason::no_export_name), 1u);
  EXPECT_EQ(of(Reason::not_active), 1u);
  EXPECT_EQ(of(Reason::device), 1u);
  EXPECT_EQ(of(Reason::export_not_served_here), 1u);
  EXPECT_GE(of(Reason::client_not_allowed), 1u);
  EXPECT_EQ(of(Reason::store_unavailable), 0u);
  EXPECT_EQ(of(Reason::counter_file), 0u);
  // The export's own file counts the refusals of an export that exists.
  EXPECT_NE(ExportCounters::open_read_only(ExportCounters::path(counters, ea.id, ea.created_at)), nullptr);
}

class PluginDeviceRefusal : public PluginRefusal {
 protected:
  void SetUp() override {
    if (auto reason = LoopDevice::unavailable_reason()) GTEST_SKIP() << *reason;
    std::filesystem::create_directory(byid_);
  }
  std::string byid_ = dir_.file("by-id");
};

TEST_F(PluginDeviceRefusal, ABlockDeviceOfAnotherSizeThanTheMapping) {
  Volume a(dir_, "a", Backing::loop, kGiB + 4096);
  store_.add({"export-a", a.device(), kGiB});
  auto server = serve({"byid-dir=" + byid_});
  expect_refused(*server, "export-a", {a.device()},
                 "device " + a.device() + " has 1073745920 bytes but the mapping of volume");
}

TEST_F(PluginDeviceRefusal, ABlockDeviceThatChangedSizeSinceTheLastConnect) {
  Volume a(dir_, "a", Backing::loop);
  store_.add({"export-a", a.device(), kGiB});
  auto server = serve({"byid-dir=" + byid_});
  { NbdClient served(server->socket(), "export-a"); }

  auto set_size = [&](int64_t size) {  // the volume is resized under the server: the kernel sees the new size
    std::filesystem::resize_file(a.backing_file(), static_cast<uintmax_t>(size));
    ASSERT_EQ(run({"losetup", "-c", a.device()}), 0);
  };
  set_size(kGiB + 4096);
  expect_refused(*server, "export-a", {a.device()},
                 "device " + a.device() + " has 1073745920 bytes but the mapping of volume");
  set_size(kGiB);
  NbdClient client(server->socket(), "export-a");
  EXPECT_EQ(client.size(), kGiB);
}

TEST_F(PluginDeviceRefusal, AMissingIdentityLink) {
  Volume a(dir_, "a", Backing::loop);
  const NbdExport e = store_.add({"export-a", a.device(), kGiB, true});
  auto server = serve({"byid-dir=" + byid_});
  expect_refused(*server, "export-a", {a.device()},
                 "identity link " + byid_ + "/virtio-" + e.volume_uuid.substr(0, 8) + e.volume_uuid.substr(9, 4) +
                     e.volume_uuid.substr(14, 4) + e.volume_uuid.substr(19, 4) + " of volume " + e.volume_uuid +
                     " does not exist");
}

TEST_F(PluginDeviceRefusal, AnIdentityLinkLeadingToAnotherDeviceAndThenToTheRightOne) {
  Volume a(dir_, "a", Backing::loop);
  Volume b(dir_, "b", Backing::loop);
  const NbdExport e = store_.add({"export-a", a.device(), kGiB, true});
  const std::string link = DeviceResolver(DeviceRules{false, byid_}).identity_link(e.volume_uuid);
  std::filesystem::create_symlink(b.device(), link);
  auto server = serve({"byid-dir=" + byid_});
  expect_refused(*server, "export-a", {a.device(), b.device()},
                 "identity link " + link + " of volume " + e.volume_uuid + " leads to " + b.device() + ", not to " +
                     a.device() + "; the mapping names the wrong device");

  std::filesystem::remove(link);  // udev fixes the link: the next connect is served, with no restart
  std::filesystem::create_symlink(a.device(), link);
  NbdClient client(server->socket(), "export-a");
  EXPECT_EQ(client.size(), kGiB);
}

}  // namespace
}  // namespace nbdxm::test
