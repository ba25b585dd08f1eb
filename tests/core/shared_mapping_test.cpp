// SharedMapping: a file mapped whole and shared between processes, created complete (initialised, then linked into
// place) and refused by name when it is not one.
#include "nbdxm/shared_mapping.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "store_test_support.hpp"

namespace nbdxm::test {
namespace {

const std::function<void(const SharedMapping&)> kAcceptAny = [](const SharedMapping&) {};

void write_word(SharedMapping& m, uint64_t value) { std::memcpy(m.data(), &value, sizeof value); }
uint64_t word_of(const SharedMapping& m) {
  uint64_t value = 0;
  std::memcpy(&value, m.data(), sizeof value);
  return value;
}

TEST(SharedMapping, AMissingFileIsNoneAndACreatedOneIsSharedByEveryMapping) {
  TempDir dir;
  const std::string path = dir.path() + "/shared.bin";
  EXPECT_FALSE(SharedMapping::open(path, "test file", 8, false).has_value());
  int initialised = 0;
  auto first = SharedMapping::open_or_create(path, "test file", 8, 4096, kAcceptAny, [&](SharedMapping& m) {
    ++initialised;
    write_word(m, 42);
  });
  auto second =
      SharedMapping::open_or_create(path, "test file", 8, 4096, kAcceptAny, [&](SharedMapping&) { ++initialised; });
  EXPECT_EQ(initialised, 1);  // the second maps the first's file
  EXPECT_EQ(second.length(), 4096u);
  EXPECT_EQ(word_of(second), 42u);
  write_word(second, 7);
  EXPECT_EQ(word_of(first), 7u);
  const auto reader = SharedMapping::open(path, "test file", 8, false);
  ASSERT_TRUE(reader.has_value());
  EXPECT_EQ(word_of(*reader), 7u);
  // Only the file itself: no temporary file is left behind.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), std::filesystem::directory_iterator()), 1);
}

// The process's mappings of files under `dir` (/proc/self/maps).
int mappings_under(const std::string& dir) {
  std::ifstream maps("/proc/self/maps");
  int count = 0;
  for (std::string line; std::getline(maps, line);) count += line.find(dir + "/") != std::string::npos ? 1 : 0;
  return count;
}

TEST(SharedMapping, EveryMappingGoesWithItsObjectWhetherItCreatedTheFileOrFoundIt) {
  TempDir dir;
  const std::string path = dir.path() + "/shared.bin";
  {
    auto created = SharedMapping::open_or_create(path, "test file", 8, 4096, kAcceptAny, [](SharedMapping&) {});
    auto found = SharedMapping::open_or_create(path, "test file", 8, 4096, kAcceptAny, [](SharedMapping&) {});
    auto read_only = SharedMapping::open(path, "test file", 8, false);
    EXPECT_EQ(mappings_under(dir.path()), 3);
  }
  EXPECT_EQ(mappings_under(dir.path()), 0);
}

TEST(SharedMapping, AFileTooShortOrRefusedByItsCheckIsRefusedByName) {
  TempDir dir;
  const std::string path = dir.path() + "/shared.bin";
  std::ofstream(path) << "abc";
  try {
    SharedMapping::open(path, "test file", 8, false);
    FAIL() << "a short file was mapped";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "test file " + path + " is too short to be one; remove it");
  }
  std::ofstream(path) << std::string(64, 'x');
  EXPECT_THROW(SharedMapping::open_or_create(
                   path, "test file", 8, 64, [](const SharedMapping&) { throw std::runtime_error("not mine"); },
                   [](SharedMapping&) { FAIL() << "an existing file was initialised"; }),
               std::runtime_error);
}

TEST(SharedMapping, AMoveHandsOverTheMappingOnce) {
  TempDir dir;
  const std::string path = dir.path() + "/shared.bin";
  auto first = SharedMapping::open_or_create(path, "test file", 8, 4096, kAcceptAny, [](SharedMapping&) {});
  void* const data = first.data();
  SharedMapping moved(std::move(first));
  EXPECT_EQ(moved.data(), data);
  EXPECT_EQ(first.data(), nullptr);  // NOLINT(bugprone-use-after-move): moved-from state is part of the contract
  write_word(moved, 9);
  EXPECT_EQ(word_of(*SharedMapping::open(path, "test file", 8, false)), 9u);
}

}  // namespace
}  // namespace nbdxm::test
