// Data through the plugin: where writes land, parallel connections, bounds, write-zeroes, trim, extents, block
// sizes and durability at close.
#include <fcntl.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <thread>
#include <vector>

#include "nbdxm/file_descriptor.hpp"
#include "plugin_fixture.hpp"

namespace nbdxm::test {
namespace {

using Writes = std::vector<std::pair<uint64_t, std::string>>;

class PluginData : public BackedPluginTest {};

TEST_P(PluginData, TwoExportsWrittenAtSeveralOffsetsLandByteExactInTheirOwnStoresOnly) {
  auto a = volume("a");
  auto b = volume("b");
  store_.add({"export-a", a->device()});
  store_.add({"export-b", b->device()});
  auto server = serve();
  const uint64_t offsets[] = {0, kGiB / 2, kGiB - 4096};
  Writes writes_a, writes_b;
  for (uint64_t offset : offsets) {
    writes_a.emplace_back(offset, pattern(4096, static_cast<char>(offset % 13)));
    writes_b.emplace_back(offset, pattern(4096, static_cast<char>(offset % 13 + 5)));
  }
  {
    NbdClient client_a(server->socket(), "export-a");
    NbdClient client_b(server->socket(), "export-b");
    EXPECT_EQ(client_a.size(), kGiB);
    for (size_t i = 0; i < writes_a.size(); ++i) {
      client_a.write(writes_a[i].second, writes_a[i].first);
      client_b.write(writes_b[i].second, writes_b[i].first);
    }
    for (size_t i = 0; i < writes_a.size(); ++i) {
      EXPECT_EQ(client_a.read(4096, writes_a[i].first), writes_a[i].second);
      EXPECT_EQ(client_b.read(4096, writes_b[i].first), writes_b[i].second);
    }
    client_a.disconnect();
    client_b.disconnect();
  }
  server->stop();  // every close has run, so loop devices have passed the writes to their files
  EXPECT_TRUE(holds_exactly(a->backing_file(), writes_a));
  EXPECT_TRUE(holds_exactly(b->backing_file(), writes_b));
}

TEST_P(PluginData, TenParallelConnectionsWritingDisjointRangesAllLand) {
  auto a = volume("a");
  store_.add({"export-a", a->device()});
  auto server = serve();
  constexpr int kConnections = 10;
  Writes writes;
  for (int i = 0; i < kConnections; ++i) {
    writes.emplace_back(static_cast<uint64_t>(i) * 96 * kMiB + 4096, pattern(kMiB, static_cast<char>(i)));
  }
  std::atomic<int> failures{0};
  std::vector<std::thread> writers;
  for (int i = 0; i < kConnections; ++i) {
    writers.emplace_back([&, i] {
      try {
        NbdClient client(server->socket(), "export-a");
        // In 64 KiB pieces, so that the connections really interleave.
        for (size_t at = 0; at < kMiB; at += 64 * 1024) {
          client.write(writes[i].second.substr(at, 64 * 1024), writes[i].first + at);
        }
        client.disconnect();
      } catch (const std::exception&) {
        ++failures;
      }
    });
  }
  for (auto& t : writers) t.join();
  EXPECT_EQ(failures.load(), 0);
  server->stop();
  EXPECT_TRUE(holds_exactly(a->backing_file(), writes));
}

TEST_P(PluginData, OutOfBoundsRequestsFailAndTheBackingStoreNeverGrows) {
  auto a = volume("a");
  store_.add({"export-a", a->device()});
  auto server = serve();
  NbdClient client(server->socket(), "export-a", /*strict=*/false);
  EXPECT_NE(client.try_write(pattern(4096, 1), kGiB - 2048), 0);
  EXPECT_NE(client.try_write(pattern(4096, 1), kGiB), 0);
  EXPECT_NE(client.try_zero(8192, kGiB - 4096), 0);
  EXPECT_NE(client.try_trim(8192, kGiB - 4096), 0);
  EXPECT_NE(client.try_read(4096, kGiB), 0);
  EXPECT_EQ(client.try_write(pattern(4096, 1), kGiB - 4096), 0);  // the last block itself is fine
  client.disconnect();
  server->stop();
  EXPECT_EQ(file_size(a->backing_file()), kGiB);
  EXPECT_TRUE(holds_exactly(a->backing_file(), {{kGiB - 4096, pattern(4096, 1)}}));
}

TEST_P(PluginData, WriteZeroesZeroExactlyTheRangeAlignedOrNot) {
  auto a = volume("a");
  store_.add({"export-a", a->device()});
  auto server = serve();
  NbdClient client(server->socket(), "export-a", /*strict=*/false);
  const std::string data = pattern(64 * 1024, 2);
  client.write(data, 0);
  EXPECT_EQ(client.try_zero(100, 1000), 0);                             // unaligned: falls back to writing zeroes
  EXPECT_EQ(client.try_zero(8192, 16384, LIBNBD_CMD_FLAG_NO_HOLE), 0);  // aligned, allocation kept
  EXPECT_EQ(client.try_zero(8192, 32768), 0);                           // aligned, may punch a hole
  std::string expected = data;
  expected.replace(1000, 100, std::string(100, '\0'));
  expected.replace(16384, 8192, std::string(8192, '\0'));
  expected.replace(32768, 8192, std::string(8192, '\0'));
  EXPECT_EQ(client.read(expected.size(), 0), expected);
  client.disconnect();
  server->stop();
  EXPECT_EQ(read_at(a->backing_file(), 0, expected.size()), expected);
}

TEST_P(PluginData, FastZeroIsRefusedWhenItCouldEndUpWriting) {
  auto a = volume("a");
  store_.add({"export-a", a->device()});
  auto server = serve();
  NbdClient client(server->socket(), "export-a", /*strict=*/false);
  ASSERT_TRUE(nbd_can_fast_zero(client.get()));
  const std::string data = pattern(8192, 3);
  client.write(data, 0);
  if (GetParam() == Backing::loop) {
    // Unaligned, or without permission to unmap, a block device can only zero by writing: refused up front,
    // and the data is left alone.
    EXPECT_EQ(client.try_zero(100, 1000, LIBNBD_CMD_FLAG_FAST_ZERO), ENOTSUP);
    EXPECT_EQ(client.try_zero(4096, 0, LIBNBD_CMD_FLAG_FAST_ZERO | LIBNBD_CMD_FLAG_NO_HOLE), ENOTSUP);
    EXPECT_EQ(client.read(8192, 0), data);
  }
  // fallocate on a file, or unmapping write-zeroes on a loop device over a file, is fast.
  EXPECT_EQ(client.try_zero(4096, 4096, LIBNBD_CMD_FLAG_FAST_ZERO), 0);
  EXPECT_EQ(client.read(4096, 4096), std::string(4096, '\0'));
}

TEST_P(PluginData, AdvertisesMultiConnFuaFlushTrimAndTheDevicesBlockSize) {
  auto a = volume("a");
  store_.add({"export-a", a->device()});
  auto server = serve();
  NbdClient client(server->socket(), "export-a");
  EXPECT_EQ(nbd_can_multi_conn(client.get()), 1);
  EXPECT_EQ(nbd_can_fua(client.get()), 1);
  EXPECT_EQ(nbd_can_flush(client.get()), 1);
  EXPECT_EQ(nbd_can_trim(client.get()), 1);
  EXPECT_EQ(nbd_can_zero(client.get()), 1);
  EXPECT_EQ(nbd_is_read_only(client.get()), 0);
  EXPECT_EQ(nbd_get_block_size(client.get(), LIBNBD_SIZE_MINIMUM), GetParam() == Backing::loop ? 512 : 0);
  client.write(pattern(4096, 4), 8192, LIBNBD_CMD_FLAG_FUA);
  EXPECT_EQ(client.try_flush(), 0);
  EXPECT_EQ(client.read(4096, 8192), pattern(4096, 4));
}

TEST_P(PluginData, ExtentsReportHolesOnlyForSparseFiles) {
  auto a = volume("a");
  store_.add({"export-a", a->device()});
  auto server = serve();
  {
    NbdClient client(server->socket(), "export-a");
    client.write(pattern(64 * 1024, 5), 0);
    client.disconnect();
  }
  std::string map;
  ASSERT_EQ(run({"nbdinfo", "--map", server->uri("export-a")}, &map), 0) << map;
  if (GetParam() == Backing::file) {
    EXPECT_NE(map.find("hole,zero"), std::string::npos) << map;
  } else {
    EXPECT_EQ(map.find("hole"), std::string::npos) << map;  // a block device has no holes to report
    EXPECT_NE(map.find("1073741824    0  data"), std::string::npos) << map;
  }
}

TEST_P(PluginData, TrimIsAcceptedAndPunchesHolesInFiles) {
  auto a = volume("a");
  store_.add({"export-a", a->device()});
  auto server = serve();
  NbdClient client(server->socket(), "export-a", /*strict=*/false);
  client.write(pattern(kMiB, 6), 0);
  EXPECT_EQ(client.try_trim(kMiB, 0), 0);
  EXPECT_EQ(client.try_trim(100, kMiB + 10), 0);  // unaligned: advisory, nothing to do
  client.disconnect();
  server->stop();
  if (GetParam() == Backing::file) {
    EXPECT_TRUE(data_regions(a->backing_file()).empty());
  }
}

TEST_P(PluginData, AReadOnlyServerOpensTheDeviceReadOnlyAndRefusesWrites) {
  auto a = volume("a");
  store_.add({"export-a", a->device()});
  auto server = serve({"allow-regular-files=true"}, {"-r"});
  NbdClient client(server->socket(), "export-a", /*strict=*/false);
  EXPECT_EQ(nbd_is_read_only(client.get()), 1);
  EXPECT_NE(client.try_write(pattern(4096, 1), 0), 0);
  EXPECT_EQ(client.read(4096, 0), std::string(4096, '\0'));
  client.disconnect();
  server->stop();
  EXPECT_TRUE(holds_exactly(a->backing_file(), {}));
}

INSTANTIATE_TEST_SUITE_P(Backings, PluginData, ::testing::Values(Backing::file, Backing::loop), backing_name);

// The migration client never flushes: closing its connection must make its writes durable. On a loop device the
// writes sit in the device's page cache until synced, so the backing file shows them only once they were synced.
// The test holds the device open itself, as other processes on an appliance may: otherwise nbdkit's close would be
// the device's last close, which makes the kernel write the cache back whether the plugin synced or not.
TEST_F(PluginTest, ClosingAConnectionThatWroteMakesItsWritesDurable) {
  if (auto reason = LoopDevice::unavailable_reason()) GTEST_SKIP() << *reason;
  Volume a(dir_, "a", Backing::loop);
  store_.add({"export-a", a.device()});
  const FileDescriptor holder(::open(a.device().c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(holder.valid());
  auto server = serve();
  const std::string data = pattern(64 * 1024, 7);
  {
    NbdClient client(server->socket(), "export-a");
    client.write(data, kMiB);
    client.disconnect();  // no flush, like the migration client
  }
  EXPECT_TRUE(eventually([&] { return read_at(a.backing_file(), kMiB, data.size()) == data; }))
      << "the writes did not reach the backing store after the connection closed";
}

}  // namespace
}  // namespace nbdxm::test
