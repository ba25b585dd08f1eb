// RefusalCounters: one file shared by every server of a manager; each mapping adds to the same counts, a reader sees
// them, and a file that is not one is refused with its path named.
#include "nbdxm/refusal_counters.hpp"

#include <gtest/gtest.h>

#include <fstream>

#include "store_test_support.hpp"

namespace nbdxm::test {
namespace {

using Reason = RefusalCounters::Reason;

TEST(RefusalCounters, ServersSharingTheFileAddToTheSameCounts) {
  TempDir dir;
  const std::string path = RefusalCounters::path(dir.path());
  EXPECT_EQ(RefusalCounters::open_read_only(path), nullptr);  // none before a server made it
  const auto first = RefusalCounters::open_or_create(path);
  const auto second = RefusalCounters::open_or_create(path);  // another server: maps the same file
  first->refused(Reason::unknown_export);
  second->refused(Reason::unknown_export);
  second->refused(Reason::client_not_allowed);
  const auto counts = RefusalCounters::open_read_only(path)->counts();
  EXPECT_EQ(counts[static_cast<size_t>(Reason::unknown_export)], 2u);
  EXPECT_EQ(counts[static_cast<size_t>(Reason::client_not_allowed)], 1u);
  EXPECT_EQ(counts[static_cast<size_t>(Reason::not_active)], 0u);
  EXPECT_STREQ(RefusalCounters::name(Reason::export_not_served_here), "export_not_served_here");
}

TEST(RefusalCounters, AFileThatIsNotOneIsRefusedByName) {
  TempDir dir;
  const std::string path = RefusalCounters::path(dir.path());
  std::ofstream(path) << std::string(4096, 'x');
  try {
    RefusalCounters::open_or_create(path);
    FAIL() << "a foreign file was mapped";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace nbdxm::test
