// `nbdxm export create` input that only the running manager can judge: a --port outside its range is refused
// (exit 2, one line naming the range) and records nothing.
#include <gtest/gtest.h>

#include "manager_harness.hpp"

namespace nbdxm::test {
namespace {

class ExportInputTest : public ManagerTest {};

TEST_F(ExportInputTest, APortOutsideTheManagersRangeIsRefused) {
  Manager small(db_path_, dir_.path(), ports_.range(4));  // ports low .. low+3 of this test's block
  small.start();
  const auto volume = add_volume("job-1", "disk-2000");
  const std::string range = ports_.range(4);
  for (const int port : {ports_.low() - 1, ports_.low() + 4, ports_.high(), 1, 65535}) {
    const CliResult refused = create(volume, {"--port", std::to_string(port)});
    EXPECT_EQ(refused.code, 2) << port << ": " << refused.err;
    EXPECT_EQ(refused.out, "");
    EXPECT_EQ(refused.err, fmt::format("nbdxm: --port {} is outside the port range {} of the running manager; give a "
                                       "port in that range, or leave --port out for the lowest free one\n",
                                       port, range));
  }
  EXPECT_TRUE(store_.list_exports({}).empty()) << "a refused create recorded an export";
  const CliResult inside = create(volume, {"--port", std::to_string(ports_.low() + 3)});
  ASSERT_EQ(inside.code, 0) << inside.err;
  EXPECT_EQ(export_of(volume).port, ports_.low() + 3);
}

}  // namespace
}  // namespace nbdxm::test
