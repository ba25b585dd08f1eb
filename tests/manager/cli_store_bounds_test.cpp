// Numeric and duration options are bounded: a huge value (one that overflows a conversion or an arithmetic on
// it) is refused with exit 2 and one line naming the option, never turned into something else.
#include "cli_store_support.hpp"

namespace nbdxm::test {
namespace {

using ::testing::HasSubstr;

class CliBoundsTest : public CliStoreTest {
 protected:
  void SetUp() override {
    init_store();
    ASSERT_EQ(run({"job", "add", "job-1", "--vm-id", "vm-1", "--vm-name", "web01"}).exit_code, 0);
  }
  // Expects args refused with exit 2, naming option, for each value put in place of VALUE.
  void expect_out_of_range(const std::vector<std::string>& args, const std::string& option,
                           const std::vector<std::string>& values) {
    for (const auto& value : values) {
      std::vector<std::string> with_value = args;
      std::replace(with_value.begin(), with_value.end(), std::string("VALUE"), value);
      EXPECT_THAT(refused(2, with_value), HasSubstr(option)) << value;
    }
  }
};

const std::vector<std::string> kHugeIntegers{"99999999999999999999", "-99999999999999999999", "18446744073709551616"};

TEST_F(CliBoundsTest, GcRetention) {
  expect_out_of_range({"gc", "--older-than", "VALUE"}, "--older-than",
                      {"99999999999999999999", "9223372036854775807d", "9223372036854775807", "106751991167301d",
                       "36501d", "876025h", "-1s", "1y", ""});
  const CliResult longest = run({"gc", "--dry-run", "--older-than", "36500d"});
  EXPECT_EQ(longest.exit_code, 0) << longest.err;
  EXPECT_EQ(longest.out, "would delete 0 export rows older than 36500d\n");
}

TEST_F(CliBoundsTest, Timeouts) {
  const std::vector<std::string> values{
      "99999999999999999999", "9223372036854775807", "1e308", "inf", "nan", "86400.5", "0", "-1"};
  expect_out_of_range({"export", "create", "--job", "job-1", "--disk-id", "d", "--timeout", "VALUE"}, "--timeout",
                      values);
  expect_out_of_range({"export", "revoke", "--job", "job-1", "--timeout", "VALUE"}, "--timeout", values);
}

TEST_F(CliBoundsTest, IntegerOptions) {
  expect_out_of_range({"mapping", "add", "--volume-uuid", "b3bb9310-1b59-4f62-97e8-cefffdfe3804", "--volume-id", "1",
                       "--vm-id", "a", "--device-path", "/dev/vdc", "--size", "VALUE"},
                      "--size", kHugeIntegers);
  expect_out_of_range({"mapping", "add", "--volume-uuid", "b3bb9310-1b59-4f62-97e8-cefffdfe3804", "--volume-id",
                       "VALUE", "--vm-id", "a", "--device-path", "/dev/vdc", "--size", "1"},
                      "--volume-id", kHugeIntegers);
  expect_out_of_range({"disk", "add", "--job", "job-1", "--disk-id", "d", "--vmdk-path", "p", "--size-gb", "VALUE"},
                      "--size-gb", kHugeIntegers);
  expect_out_of_range(
      {"disk", "add", "--job", "job-1", "--disk-id", "d", "--vmdk-path", "p", "--size-gb", "1", "--unit", "VALUE"},
      "--unit", kHugeIntegers);
  expect_out_of_range({"export", "create", "--job", "job-1", "--disk-id", "d", "--port", "VALUE"}, "--port",
                      kHugeIntegers);
  expect_out_of_range({"serve", "--config", "", "--max-connections", "VALUE"}, "--max-connections", kHugeIntegers);
}

}  // namespace
}  // namespace nbdxm::test
