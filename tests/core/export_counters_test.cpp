// ExportCounters: the counter file shared by an export's server (writer) and the manager (reader), through real
// files and real mappings in a temporary directory.
#include "nbdxm/export_counters.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <thread>
#include <vector>

namespace nbdxm {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;

class ExportCountersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("nbdxm-counters-" + std::to_string(::getpid()) + "-" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string path() const { return ExportCounters::path(dir_.string(), 7, kCreatedAt); }
  static ExportCounters::Identity identity(int64_t size = 64 * kMiB) { return {7, kCreatedAt, size}; }

  static constexpr const char* kCreatedAt = "2026-11-30T14:00:00.123Z";
  std::filesystem::path dir_;
};

TEST_F(ExportCountersTest, PathNamesTheExportLife) {
  EXPECT_EQ(ExportCounters::path("/run/nbdxm/counters", 7, kCreatedAt), "/run/nbdxm/counters/7-20261130140000123.bin");
}

TEST_F(ExportCountersTest, WriterAndReaderSeeTheSameCounters) {
  auto writer = ExportCounters::open_or_create(path(), identity());
  writer->connection_opened();
  writer->request(ExportCounters::Request::write, 4096, 0, true);
  writer->request(ExportCounters::Request::write, 4096, 8192, false);
  writer->request(ExportCounters::Request::zero, 2 * kMiB, 4 * kMiB, true);
  writer->request(ExportCounters::Request::trim, kMiB, 10 * kMiB, true);
  writer->request(ExportCounters::Request::read, 512, 0, true);
  writer->refused(ExportCounters::Refusal::not_active);

  const auto reader = ExportCounters::open_read_only(path());
  ASSERT_NE(reader, nullptr);
  const auto s = reader->snapshot();
  EXPECT_EQ(s.identity.export_id, 7);
  EXPECT_EQ(s.identity.created_at, kCreatedAt);
  EXPECT_EQ(s.identity.volume_size, static_cast<int64_t>(64 * kMiB));
  EXPECT_EQ(s.of(ExportCounters::Request::write).requests, 2u);
  EXPECT_EQ(s.of(ExportCounters::Request::write).failed, 1u);
  EXPECT_EQ(s.of(ExportCounters::Request::write).bytes, 4096u);
  EXPECT_EQ(s.of(ExportCounters::Request::zero).bytes, 2 * kMiB);
  EXPECT_EQ(s.of(ExportCounters::Request::trim).bytes, kMiB);
  EXPECT_EQ(s.of(ExportCounters::Request::read).bytes, 512u);
  EXPECT_EQ(s.connections_open, 1u);
  EXPECT_EQ(s.connections_total, 1u);
  EXPECT_EQ(s.refused[static_cast<int>(ExportCounters::Refusal::not_active)], 1u);
  EXPECT_TRUE(s.last_write_unix_ms.has_value());
  // The 4 KiB write covers one granule, the zero 2 MiB; the trim and the failed write cover nothing.
  EXPECT_EQ(s.coverage_bytes, ExportCounters::kGranule + 2 * kMiB);
  EXPECT_EQ(s.durability_failures, 0u);
}

TEST_F(ExportCountersTest, RewritesAndOverlapsCountOnce) {
  auto c = ExportCounters::open_or_create(path(), identity());
  for (int i = 0; i < 10; ++i) c->request(ExportCounters::Request::write, kMiB, 3 * kMiB, true);
  c->request(ExportCounters::Request::write, kMiB, 3 * kMiB + kMiB / 2, true);  // half overlaps
  const auto s = c->snapshot();
  EXPECT_EQ(s.of(ExportCounters::Request::write).bytes, 11 * kMiB);
  EXPECT_EQ(s.coverage_bytes, kMiB + kMiB / 2);
}

TEST_F(ExportCountersTest, FullVolumeIsWholeAndNeverMore) {
  const int64_t size = 64 * kMiB + 1000;  // not a whole number of granules
  auto c = ExportCounters::open_or_create(path(), identity(size));
  for (uint64_t at = 0; at < static_cast<uint64_t>(size); at += 32 * kMiB) {
    c->request(ExportCounters::Request::write, std::min<uint64_t>(32 * kMiB, size - at), at, true);
  }
  c->request(ExportCounters::Request::write, kMiB, static_cast<uint64_t>(size) + kMiB, true);  // beyond: ignored
  EXPECT_EQ(c->snapshot().coverage_bytes, static_cast<uint64_t>(size));
}

TEST_F(ExportCountersTest, ConcurrentWritersLoseNothing) {
  auto c = ExportCounters::open_or_create(path(), identity());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&c, t] {
      for (uint64_t i = 0; i < 1024; ++i) {
        c->request(ExportCounters::Request::write, ExportCounters::kGranule, (t * 1024 + i) * ExportCounters::kGranule,
                   true);
      }
    });
  }
  for (auto& t : threads) t.join();
  const auto s = c->snapshot();
  EXPECT_EQ(s.of(ExportCounters::Request::write).requests, 4096u);
  EXPECT_EQ(s.coverage_bytes, 64 * kMiB);
}

TEST_F(ExportCountersTest, ARestartedServerContinuesTheSameFile) {
  {
    auto first = ExportCounters::open_or_create(path(), identity());
    first->request(ExportCounters::Request::write, kMiB, 0, true);
    first->durability_failure("durability: fdatasync on /dev/loop9 failed: Input/output error");
  }
  auto second = ExportCounters::open_or_create(path(), identity());
  second->request(ExportCounters::Request::write, kMiB, kMiB, true);
  const auto s = ExportCounters::open_read_only(path())->snapshot();
  EXPECT_EQ(s.of(ExportCounters::Request::write).bytes, 2 * kMiB);
  EXPECT_EQ(s.coverage_bytes, 2 * kMiB);
  EXPECT_EQ(s.durability_failures, 1u);
  EXPECT_EQ(s.durability_reason, "durability: fdatasync on /dev/loop9 failed: Input/output error");
}

TEST_F(ExportCountersTest, DurabilityFailuresCountAndKeepTheLastReason) {
  auto c = ExportCounters::open_or_create(path(), identity());
  c->durability_failure("first");
  c->durability_failure(std::string(1000, 'x'));  // cut, never overflowing
  const auto s = c->snapshot();
  EXPECT_EQ(s.durability_failures, 2u);
  EXPECT_EQ(s.durability_reason, std::string(ExportCounters::kReasonBytes - 1, 'x'));
}

TEST_F(ExportCountersTest, FileIsCreatedReadableByTheManagersGroupOnly) {
  ExportCounters::open_or_create(path(), identity());
  struct stat st {};
  ASSERT_EQ(::stat(path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_), {}), 1);  // no temporary left
}

TEST_F(ExportCountersTest, AnotherExportsFileIsRefused) {
  ExportCounters::open_or_create(path(), identity());
  ExportCounters::Identity other = identity();
  other.export_id = 8;
  EXPECT_THROW(ExportCounters::open_or_create(path(), other), std::runtime_error);
}

TEST_F(ExportCountersTest, MissingFileReadsAsNone) { EXPECT_EQ(ExportCounters::open_read_only(path()), nullptr); }

TEST_F(ExportCountersTest, NotACounterFileIsRefused) {
  {
    std::FILE* f = std::fopen(path().c_str(), "w");
    std::fputs(std::string(4096, 'a').c_str(), f);
    std::fclose(f);
  }
  EXPECT_THROW(ExportCounters::open_read_only(path()), std::runtime_error);
}

}  // namespace
}  // namespace nbdxm
