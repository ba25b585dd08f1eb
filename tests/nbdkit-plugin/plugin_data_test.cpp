// Data through the plugin: where writes land, parallel connections, bounds, write-zeroes, trim, extents, block
// sizes and durability at close.
#include <fcntl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <fstream>
#include <optional>
#include <thread>
#include <tuple>
#include <vector>

#include "nbdxm/file_descriptor.hpp"
#include "plugin_fixture.hpp"

namespace nbdxm::test {
namespace {

using Writes = std::vector<std::pair<uint64_t, std::string>>;

// Equal bytes, or where the first difference is (without printing kilobytes of data).
::testing::AssertionResult same_bytes(const std::string& actual, const std::string& expected) {
  if (actual == expected) return ::testing::AssertionSuccess();
  const auto at = std::mismatch(actual.begin(), actual.end(), expected.begin(), expected.end()).first - actual.begin();
  return ::testing::AssertionFailure() << actual.size() << " bytes read, " << expected.size()
                                       << " expected; the first difference is at byte " << at;
}

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
  // Each range with the data around it: unaligned, whole 4 KiB blocks with and without a hole allowed, and whole
  // 512-byte sectors that are not whole 4096-byte ones (on a 4096-byte-sector device: refused by the kernel, so
  // nbdkit writes the zeroes).
  const std::vector<std::tuple<uint64_t, uint64_t, uint32_t>> ranges = {
      {1000, 100, 0}, {16384, 8192, LIBNBD_CMD_FLAG_NO_HOLE}, {32768, 8192, 0}, {49152 + 512, 5120, 0}};
  std::string expected = data;
  for (const auto& [offset, count, flags] : ranges) {
    EXPECT_EQ(client.try_zero(count, offset, flags), 0) << count << " bytes at " << offset;
    expected.replace(offset, count, std::string(count, '\0'));
  }
  EXPECT_TRUE(same_bytes(client.read(expected.size(), 0), expected));
  client.disconnect();
  server->stop();
  EXPECT_TRUE(same_bytes(read_at(a->backing_file(), 0, expected.size()), expected));
}

TEST_P(PluginData, FastZeroIsRefusedWhenItCouldEndUpWriting) {
  auto a = volume("a");
  store_.add({"export-a", a->device()});
  auto server = serve();
  NbdClient client(server->socket(), "export-a", /*strict=*/false);
  ASSERT_TRUE(nbd_can_fast_zero(client.get()));
  const std::string data = pattern(8192, 3);
  client.write(data, 0);
  if (is_loop(GetParam())) {
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

uint32_t minimum_block_size(Backing backing) {
  switch (backing) {
    case Backing::file:
      return 1;
    case Backing::loop:
      return 512;
    case Backing::loop4k:
      return 4096;
  }
  return 0;
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
  EXPECT_EQ(nbd_get_block_size(client.get(), LIBNBD_SIZE_MINIMUM), minimum_block_size(GetParam()));
  EXPECT_EQ(nbd_get_block_size(client.get(), LIBNBD_SIZE_PREFERRED), 4096);
  // The migration client's largest request: a client cannot hold a revoked connection in one long zero or trim.
  EXPECT_EQ(nbd_get_block_size(client.get(), LIBNBD_SIZE_MAXIMUM), 32 * kMiB);
}

// Requests as large as the advertised maximum work; a zero beyond it (from a client ignoring the maximum) is done
// piece by piece, exactly: the pieces' edges are zeroed, the blocks around the range are not.
TEST_P(PluginData, RequestsUpToTheMaximumWorkAndLargerZeroesAreDoneExactly) {
  auto a = volume("a");
  store_.add({"export-a", a->device()});
  auto server = serve();
  NbdClient client(server->socket(), "export-a", /*strict=*/false);
  const std::string data = pattern(32 * kMiB, 8);
  client.write(data, 4 * kMiB);
  EXPECT_TRUE(same_bytes(client.read(data.size(), 4 * kMiB), data));
  EXPECT_EQ(client.try_zero(32 * kMiB, 4 * kMiB), 0);
  EXPECT_EQ(client.try_trim(32 * kMiB, 4 * kMiB), 0);

  const uint64_t start = 48 * kMiB;
  const uint64_t count = 64 * kMiB + 4096;  // twice the maximum and one block
  const std::string block = pattern(4096, 9);
  for (const uint64_t inside : {start, start + 32 * kMiB - 4096, start + 32 * kMiB, start + count - 4096}) {
    client.write(block, inside);
  }
  const Writes kept = {{start - 4096, pattern(4096, 10)}, {start + count, pattern(4096, 11)}};
  for (const auto& [offset, bytes] : kept) client.write(bytes, offset);
  EXPECT_EQ(client.try_zero(count, start, LIBNBD_CMD_FLAG_NO_HOLE), 0);
  client.disconnect();
  server->stop();
  EXPECT_TRUE(holds_exactly(a->backing_file(), kept));
}

// Why strace cannot trace a program here (not installed, or ptrace not permitted), or nullopt when it can.
std::optional<std::string> strace_unavailable_reason() {
  std::string output;
  if (run({"strace", "-qq", "-o", "/dev/null", "true"}, &output) != 0) return "strace cannot run here: " + output;
  return std::nullopt;
}

// What the nbdkit server (run under strace) asked of the kernel: fdatasync, fsync and pwritev2 calls, one a line.
class SyscallLog {
 public:
  explicit SyscallLog(std::string path) : path_(std::move(path)) {}
  std::vector<std::string> launcher() const {
    return {"strace", "-f", "-qq", "-e", "signal=none", "-e", "trace=fdatasync,fsync,pwritev2", "-o", path_};
  }
  // Lines logged since the last call.
  std::vector<std::string> new_lines() {
    std::ifstream in(path_);
    std::vector<std::string> lines;
    size_t n = 0;
    for (std::string line; std::getline(in, line); ++n) {
      if (n >= seen_) lines.push_back(line);
    }
    seen_ = n;
    return lines;
  }

 private:
  std::string path_;
  size_t seen_ = 0;
};

bool any_contains(const std::vector<std::string>& lines, const std::string& text) {
  return std::any_of(lines.begin(), lines.end(),
                     [&](const std::string& l) { return l.find(text) != std::string::npos; });
}

// A flush or a FUA write reaches the device: the server syncs the device (or writes with RWF_DSYNC), and a loop
// device completes a flush request of its own (it passes it on to its backing file).
TEST_P(PluginData, FlushAndFuaReachTheDevice) {
  if (auto reason = strace_unavailable_reason()) GTEST_SKIP() << *reason;
  auto a = volume("a");
  store_.add({"export-a", a->device()});
  SyscallLog syscalls(dir_.file("strace.log"));
  auto server =
      std::make_unique<NbdkitServer>(dir_, store_.path(), std::vector<std::string>{"allow-regular-files=true"},
                                     std::vector<std::string>{}, syscalls.launcher());
  NbdClient client(server->socket(), "export-a");
  const auto flushes = [&] { return a->loop() ? a->loop()->flushes_completed() : 0; };

  client.write(pattern(4096, 4), 0);
  const uint64_t before_flush = flushes();
  syscalls.new_lines();
  EXPECT_EQ(client.try_flush(), 0);
  EXPECT_TRUE(eventually([&] { return any_contains(syscalls.new_lines(), "fdatasync("); }, std::chrono::seconds(30)))
      << "flush did not sync the device";
  if (a->loop()) {
    EXPECT_GT(flushes(), before_flush) << "the loop device completed no flush request";
  }

  const uint64_t before_fua = flushes();
  client.write(pattern(4096, 5), 8192, LIBNBD_CMD_FLAG_FUA);
  EXPECT_TRUE(eventually(
      [&] {
        const auto lines = syscalls.new_lines();
        return any_contains(lines, "RWF_DSYNC") || any_contains(lines, "fdatasync(");
      },
      std::chrono::seconds(30)))
      << "a FUA write was neither written with RWF_DSYNC nor followed by a sync";
  if (a->loop()) {
    EXPECT_GT(flushes(), before_fua) << "the loop device completed no flush request for a FUA write";
  }
  EXPECT_EQ(client.read(4096, 8192), pattern(4096, 5));
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

// A trim punches a hole into the file (a loop device passes its discard on to its backing file); an unaligned trim
// leaves the data around its range alone.
TEST_P(PluginData, TrimPunchesAHoleInTheBackingFileAndLeavesTheRestAlone) {
  auto a = volume("a");
  store_.add({"export-a", a->device()});
  auto server = serve();
  NbdClient client(server->socket(), "export-a", /*strict=*/false);
  const std::string data = pattern(2 * kMiB, 6);
  client.write(data, 0);
  EXPECT_EQ(client.try_trim(kMiB, 0), 0);
  // Unaligned, and whole 512-byte sectors that are not whole 4096-byte ones: what the device cannot discard stays.
  const std::vector<std::pair<uint64_t, uint64_t>> unaligned = {{kMiB + 10, 100}, {kMiB + 65536 + 512, 6144}};
  for (const auto& [offset, count] : unaligned) EXPECT_EQ(client.try_trim(count, offset), 0) << offset;
  // Trimmed bytes read as anything the device chooses (old data or zeroes); every other byte is unchanged.
  const std::string after = client.read(kMiB, kMiB);
  for (uint64_t at = 0; at < kMiB; ++at) {
    const uint64_t offset = kMiB + at;
    const bool trimmed = std::any_of(unaligned.begin(), unaligned.end(),
                                     [&](const auto& r) { return offset >= r.first && offset < r.first + r.second; });
    if (trimmed) {
      ASSERT_TRUE(after[at] == data[offset] || after[at] == '\0') << "offset " << offset;
    } else {
      ASSERT_EQ(after[at], data[offset]) << "a trim changed offset " << offset << ", outside its range";
    }
  }
  client.disconnect();
  server->stop();
  for (const auto& [start, length] : data_regions(a->backing_file())) {
    EXPECT_GE(start, static_cast<uint64_t>(kMiB)) << "data left at " << start << "+" << length << " after the trim";
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

INSTANTIATE_TEST_SUITE_P(Backings, PluginData, ::testing::Values(Backing::file, Backing::loop, Backing::loop4k),
                         backing_name);

// Waits at most `limit` for an asynchronous command; returns 0, the errno of its failure, or ETIMEDOUT.
int completion_of(nbd_handle* h, int64_t cookie, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    const int done = nbd_aio_command_completed(h, cookie);
    if (done == 1) return 0;
    if (done == -1) return nbd_get_errno() != 0 ? nbd_get_errno() : EIO;
    if (std::chrono::steady_clock::now() > deadline) return ETIMEDOUT;
    if (nbd_poll(h, 100) == -1) return EIO;
  }
}

// A write the kernel accepts without writing a byte (pwrite returning 0: a file system or device that makes no
// progress) fails as an I/O error instead of being retried for ever. No real device here returns 0 for a non-empty
// write (a full file system says ENOSPC), so strace makes the kernel's answer 0 for the server's writes.
TEST_F(PluginTest, AWriteThatMakesNoProgressFailsWithAnIoErrorInsteadOfSpinning) {
  if (auto reason = strace_unavailable_reason()) GTEST_SKIP() << *reason;
  Volume a(dir_, "a", Backing::file);
  store_.add({"export-a", a.device()});
  NbdkitServer server(dir_, store_.path(), {"allow-regular-files=true"}, {},
                      {"strace", "-f", "-qq", "-o", "/dev/null", "-e", "signal=none", "-e", "trace=pwrite64,pwritev2",
                       "-e", "inject=pwrite64,pwritev2:retval=0"});
  NbdClient client(server.socket(), "export-a");
  const std::string data = pattern(4096, 1);
  for (const uint32_t flags : {0u, static_cast<uint32_t>(LIBNBD_CMD_FLAG_FUA)}) {
    const int64_t cookie = nbd_aio_pwrite(client.get(), data.data(), data.size(), 0, NBD_NULL_COMPLETION, flags);
    ASSERT_NE(cookie, -1) << nbd_get_error();
    EXPECT_EQ(completion_of(client.get(), cookie, std::chrono::seconds(30)), EIO) << "flags " << flags;
  }
  EXPECT_NE(server.log().find("write of 4096 bytes at offset 0 on " + a.device() + ": Input/output error"),
            std::string::npos)
      << server.log();
}

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
