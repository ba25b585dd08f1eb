// Device claims: a server serves a block device only under its exclusive claim (O_EXCL), held while it has clients
// on the device and shared by them, so that a device in use elsewhere (mounted, held by another process or server,
// served as another export) is refused, whatever path leads to it; partitions and device nodes outside /dev are
// refused too. Real loop devices, a real mount, real nbdkit servers and libnbd clients.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include "nbdxm/file_descriptor.hpp"
#include "plugin_fixture.hpp"

namespace nbdxm::test {
namespace {

constexpr int64_t kSize = kGiB;  // sparse; TestStore gives each export a disk of 1 GiB

// Whether an exclusive open of `device` succeeds now: it fails while a server holds its claim.
bool claimable(const std::string& device) {
  const FileDescriptor fd(::open(device.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC));
  return fd.valid();
}

std::string kernel_name(const std::string& device) { return std::filesystem::path(device).filename().string(); }

class PluginClaim : public PluginTest {
 protected:
  void SetUp() override {
    if (auto reason = LoopDevice::unavailable_reason()) GTEST_SKIP() << *reason;
    std::filesystem::create_directory(byid_);
  }
  std::unique_ptr<NbdkitServer> serve_devices(std::vector<std::string> params = {}) {
    params.push_back("byid-dir=" + byid_);
    return serve(std::move(params));
  }
  // Connects once `export_name` can be served (its device's claim is released when a server's last connection to
  // it has closed, which the server does after the client has gone).
  std::unique_ptr<NbdClient> connect_when_free(NbdkitServer& server, const std::string& export_name) {
    std::unique_ptr<NbdClient> client;
    eventually(
        [&] {
          try {
            client = std::make_unique<NbdClient>(server.socket(), export_name);
          } catch (const std::runtime_error&) {
          }
          return client != nullptr;
        },
        std::chrono::seconds(20));
    return client;
  }
  std::string byid_ = dir_.file("by-id");
};

TEST_F(PluginClaim, IsHeldWhileTheDeviceHasClientsAndSharedByThem) {
  Volume a(dir_, "a", Backing::loop, kSize);
  store_.add({"export-a", a.device(), kSize});
  auto server = serve_devices();
  EXPECT_TRUE(claimable(a.device()));
  {
    NbdClient first(server->socket(), "export-a");
    NbdClient second(server->socket(), "export-a");  // the migration client opens two connections per export
    EXPECT_FALSE(claimable(a.device())) << "the server does not hold the device exclusively";
    first.write(pattern(4096, 1), 0);
    EXPECT_EQ(second.read(4096, 0), pattern(4096, 1));
    std::string output;  // nbdinfo asks NBD_OPT_INFO, then NBD_OPT_GO: two opens, one claim
    EXPECT_EQ(run({"nbdinfo", server->uri("export-a")}, &output), 0) << output;
    first.disconnect();
    EXPECT_FALSE(claimable(a.device())) << "the claim ended with the first of two connections";
  }
  EXPECT_TRUE(eventually([&] { return claimable(a.device()); }, std::chrono::seconds(20)))
      << "the claim outlived the device's last client";
}

TEST_F(PluginClaim, ADeviceAnotherProcessHoldsExclusivelyIsRefusedAsInUse) {
  Volume a(dir_, "a", Backing::loop, kSize);
  store_.add({"export-a", a.device(), kSize});
  auto server = serve_devices();
  {
    const FileDescriptor held(::open(a.device().c_str(), O_RDONLY | O_EXCL | O_CLOEXEC));
    ASSERT_TRUE(held.valid()) << strerror(errno);
    expect_refused(*server, "export-a", {a.device()},
                   "export export-a: device " + a.device() + " (" + kernel_name(a.device()) +
                       ") is in use: another process holds it open exclusively");
  }
  NbdClient client(server->socket(), "export-a");  // released: served
  EXPECT_EQ(client.size(), kSize);
}

TEST_F(PluginClaim, AMountedDeviceIsRefusedAsInUse) {
  Volume a(dir_, "a", Backing::loop, kSize);
  std::string output;
  ASSERT_EQ(run({"mkfs.ext4", "-q", a.device()}, &output), 0) << output;
  std::filesystem::create_directory(dir_.file("mnt"));
  const Mount mount(a.device(), dir_.file("mnt"));
  store_.add({"export-a", a.device(), kSize});
  auto server = serve_devices();
  expect_refused(*server, "export-a", {a.device()},
                 "export export-a: device " + a.device() + " (" + kernel_name(a.device()) +
                     ") is in use: it is mounted on " + dir_.file("mnt") + "; a device in use is never served");
}

TEST_F(PluginClaim, APartitionIsRefused) {
  const std::string image = dir_.file("partitioned.img");
  create_volume_file(image, 2 * kGiB);
  std::string output;
  ASSERT_EQ(run({"sh", "-c", "echo 'start=2048, type=83' | sfdisk -q " + image}, &output), 0) << output;
  const LoopDevice loop(image, 512, true);
  const std::string partition = loop.path() + "p1";
  if (::access(partition.c_str(), F_OK) != 0) {
    // A kernel built without the partition table's parser finds no partition: add them as it would (BLKPG).
    ASSERT_EQ(run({"partx", "--add", loop.path()}, &output), 0) << output;
  }
  ASSERT_TRUE(eventually([&] { return ::access(partition.c_str(), F_OK) == 0; }, std::chrono::seconds(10)))
      << "neither losetup -P nor partx made " << partition;
  store_.add({"export-p", partition, 2 * kGiB - kMiB});  // the partition's size: from sector 2048 to the end
  auto server = serve_devices();
  expect_refused(*server, "export-p", {partition},
                 "export export-p: device " + partition + " is partition " + kernel_name(partition) +
                     "; only whole devices are served");
}

TEST_F(PluginClaim, TwoPathsToOneDeviceAreNeverServedAtOnceByOneServer) {
  Volume a(dir_, "a", Backing::loop, kSize);
  const TempDir links("/dev");  // a second path to the device, in /dev like the by-id links udev makes
  const std::string alias = links.file("virtio-alias");
  std::filesystem::create_symlink(a.device(), alias);
  store_.add({"export-a", a.device(), kSize});
  store_.add({"export-b", alias, kSize});
  auto server = serve_devices();
  {
    NbdClient first(server->socket(), "export-a");
    expect_refused(*server, "export-b", {a.device()},
                   "export export-b: device " + alias + " (" + kernel_name(a.device()) +
                       ") is in use: this server serves it as export export-a; two exports never write one device");
    NbdClient second(server->socket(), "export-a");  // the same export's connections share the device
    EXPECT_EQ(second.size(), kSize);
  }
  auto b = connect_when_free(*server, "export-b");  // export-a has no client left: export-b may have the device
  ASSERT_NE(b, nullptr) << server->log();
  expect_refused(*server, "export-a", {a.device()},
                 "export export-a: device " + a.device() + " (" + kernel_name(a.device()) +
                     ") is in use: this server serves it as export export-b");
}

TEST_F(PluginClaim, TwoPathsToOneDeviceAreNeverServedAtOnceByTwoServers) {
  Volume a(dir_, "a", Backing::loop, kSize);
  const TempDir links("/dev");
  const std::string alias = links.file("virtio-alias");
  std::filesystem::create_symlink(a.device(), alias);
  store_.add({"export-a", a.device(), kSize});
  store_.add({"export-b", alias, kSize});
  auto server_a = serve_devices({"export=export-a"});
  auto server_b = serve_devices({"export=export-b"});
  {
    NbdClient client(server_a->socket(), "export-a");
    expect_refused(*server_b, "export-b", {a.device()},
                   "export export-b: device " + alias + " (" + kernel_name(a.device()) +
                       ") is in use: another process holds it open exclusively");
  }
  auto b = connect_when_free(*server_b, "export-b");
  ASSERT_NE(b, nullptr) << server_b->log();
  expect_refused(*server_a, "export-a", {a.device()},
                 "export export-a: device " + a.device() + " (" + kernel_name(a.device()) +
                     ") is in use: another process holds it open exclusively");
}

TEST_F(PluginClaim, ABlockDeviceNodeOutsideDevIsRefused) {
  Volume a(dir_, "a", Backing::loop, kSize);
  struct stat st {};
  ASSERT_EQ(::stat(a.device().c_str(), &st), 0);
  const std::string node = dir_.file("vdz");  // the same device as a's loop device, through a node of its own
  ASSERT_EQ(::mknod(node.c_str(), S_IFBLK | 0600, st.st_rdev), 0) << strerror(errno);
  store_.add({"export-a", node, kSize});
  auto server = serve_devices();
  expect_refused(*server, "export-a", {node},
                 "export export-a: block device " + node + " leads to " + node +
                     ", outside /dev; only device nodes in /dev are served");
}

TEST_F(PluginClaim, FollowsTheDeviceTheConnectionServes) {
  Volume a(dir_, "a", Backing::loop, kSize);
  Volume b(dir_, "b", Backing::loop, kSize);
  const NbdExport e = store_.add({"export-a", a.device(), kSize});
  auto server = serve_devices();
  NbdClient old(server->socket(), "export-a");
  EXPECT_FALSE(claimable(a.device()));

  store_.store().set_mapping_path(e.volume_uuid, b.device());  // the volume was re-attached as another device
  ASSERT_TRUE(eventually([&] { return old.try_read(4096, 0) == ESHUTDOWN; }, std::chrono::seconds(20)));
  NbdClient moved(server->socket(), "export-a");
  EXPECT_FALSE(claimable(b.device())) << "the new connection serves b without claiming it";
  EXPECT_FALSE(claimable(a.device())) << "the old connection, still open, lost the claim of the device it has open";
  old.disconnect();
  EXPECT_TRUE(eventually([&] { return claimable(a.device()); }, std::chrono::seconds(20)))
      << "the claim of the old device outlived its last connection";
  EXPECT_FALSE(claimable(b.device()));
}

}  // namespace
}  // namespace nbdxm::test
