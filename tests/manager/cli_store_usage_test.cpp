// Help, version and usage errors of the store commands through the real binary: every command documents the exit
// codes, and every usage error is one line naming the command and where its help is, with exit code 2.
#include "cli_store_support.hpp"

namespace nbdxm::test {
namespace {

using ::testing::HasSubstr;

class CliUsageTest : public CliStoreTest, public ::testing::WithParamInterface<std::vector<std::string>> {};

TEST_P(CliUsageTest, HelpDocumentsTheExitCodes) {
  std::vector<std::string> args = GetParam();
  args.push_back("--help");
  const CliResult result = run(args, {}, false);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  std::string command = "nbdxm";
  for (const auto& word : GetParam()) command += " " + word;
  EXPECT_THAT(result.out, HasSubstr("Usage: " + command));
  for (const char* line : {"Exit codes:", "0  success", "1  any other failure", "2  usage", "3  not found",
                           "4  conflict", "5  check found problems"}) {
    EXPECT_THAT(result.out, HasSubstr(line)) << command;
  }
}

INSTANTIATE_TEST_SUITE_P(
    StoreCommands, CliUsageTest,
    ::testing::Values(std::vector<std::string>{}, std::vector<std::string>{"init"}, std::vector<std::string>{"job"},
                      std::vector<std::string>{"job", "add"}, std::vector<std::string>{"job", "list"},
                      std::vector<std::string>{"job", "show"}, std::vector<std::string>{"job", "set-status"},
                      std::vector<std::string>{"job", "delete"}, std::vector<std::string>{"mapping"},
                      std::vector<std::string>{"mapping", "add"}, std::vector<std::string>{"mapping", "set-path"},
                      std::vector<std::string>{"mapping", "list"}, std::vector<std::string>{"mapping", "show"},
                      std::vector<std::string>{"mapping", "delete"}, std::vector<std::string>{"disk"},
                      std::vector<std::string>{"disk", "add"}, std::vector<std::string>{"disk", "list"},
                      std::vector<std::string>{"disk", "show"}, std::vector<std::string>{"disk", "link"},
                      std::vector<std::string>{"check"}),
    [](const ::testing::TestParamInfo<std::vector<std::string>>& param_info) {
      std::string name = "nbdxm";
      for (const auto& word : param_info.param) {
        for (char c : word) name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
        name += "_";
      }
      return name;
    });

TEST_F(CliStoreTest, UsageErrorsNameTheCommandAndItsHelp) {
  init_store();
  EXPECT_EQ(refused(2, {}),
            "nbdxm: a command is required; expected one of: init, job, mapping, disk, check, export, gc, serve, import "
            "(see `nbdxm --help`)");
  EXPECT_EQ(refused(2, {"job"}),
            "nbdxm job: a command is required; expected one of: add, list, show, set-status, delete (see `nbdxm job "
            "--help`)");
  EXPECT_EQ(refused(2, {"mapping", "move"}),
            "nbdxm mapping: unknown command move; expected one of: add, set-path, list, show, delete (see `nbdxm "
            "mapping --help`)");
  EXPECT_THAT(refused(2, {"jobs"}), HasSubstr("nbdxm: unknown command jobs; expected one of: init, job"));
  EXPECT_EQ(refused(2, {"job", "show"}), "nbdxm job show: ID is required (see `nbdxm job show --help`)");
  EXPECT_EQ(refused(2, {"disk", "list", "extra"}),
            "nbdxm disk list: The following argument was not expected: extra (see `nbdxm disk list --help`)");
  EXPECT_THAT(refused(2, {"disk", "add", "--job", "j1", "--disk-id", "d", "--vmdk-path", "p", "--size-gb", "x"}),
              HasSubstr("nbdxm disk add: --size-gb: x is not a whole number from"));
}

TEST_F(CliStoreTest, PrintsItsVersion) {
  const CliResult result = run({"--version"}, {}, false);
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_EQ(result.out, std::string("nbdxm ") + NBDXM_VERSION + "\n");
}

}  // namespace
}  // namespace nbdxm::test
