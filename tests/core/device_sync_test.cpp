// sync_devices: what a stopped export server wrote reaches stable storage (a loop device's flush count rises).
#include "nbdxm/device_sync.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "store_test_support.hpp"

namespace nbdxm::test {
namespace {

TEST(DeviceSyncTest, ALoopDeviceIsFlushed) {
  if (const auto reason = LoopDevice::unavailable_reason()) GTEST_SKIP() << *reason;
  TempDir dir;
  create_volume_file(dir.file("backing"), 16 << 20);
  LoopDevice loop(dir.file("backing"));
  {
    const int fd = ::open(loop.path().c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    const std::string data(4096, 'x');
    ASSERT_EQ(::pwrite(fd, data.data(), data.size(), 0), 4096);
    ::close(fd);
  }
  const uint64_t before = loop.flushes_completed();
  const auto result = sync_devices({loop.path()});
  EXPECT_TRUE(result.ok());
  EXPECT_EQ(result.synced, std::vector<std::string>{loop.path()});
  EXPECT_GT(loop.flushes_completed(), before);
}

TEST(DeviceSyncTest, AMissingDeviceIsReportedMissingAndTheOthersAreStillSynced) {
  TempDir dir;
  create_volume_file(dir.file("file"), 1 << 20);
  const auto result = sync_devices({dir.file("gone"), dir.file("file")});
  EXPECT_TRUE(result.ok());
  EXPECT_EQ(result.missing, std::vector<std::string>{dir.file("gone")});
  EXPECT_EQ(result.synced, std::vector<std::string>{dir.file("file")});
}

}  // namespace
}  // namespace nbdxm::test
