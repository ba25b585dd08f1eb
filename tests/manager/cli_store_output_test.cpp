// Text output and refusals show store values escaped: VM names and VMDK paths come from the customer's VMware and
// any column from any writer, and a terminal escape or a line feed in one must neither drive the operator's
// terminal nor split a record. --json gives every value exactly.
#include <algorithm>

#include "cli_store_support.hpp"

namespace nbdxm::test {
namespace {

using ::testing::HasSubstr;

// A title-setting escape sequence, a line feed that would forge a record line, an 8-bit CSI and a backslash.
const std::string kHostile =
    "web\x1b]0;pwned\x07"
    "01\nstatus       completed\xc2\x9b"
    "2J\\";
const std::string kEscaped =
    "web\\x1b]0;pwned\\x07"
    "01\\nstatus       completed\\u009b2J\\\\";

size_t lines(const std::string& text) { return static_cast<size_t>(std::count(text.begin(), text.end(), '\n')); }

void expect_no_control_bytes(const std::string& text) {
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    EXPECT_FALSE((byte < 0x20 && byte != '\n') || byte == 0x7F) << "control byte " << int{byte} << " in:\n" << text;
  }
  EXPECT_EQ(text.find("\xc2\x9b"), std::string::npos) << text;
}

class CliOutputTest : public CliStoreTest {
 protected:
  void SetUp() override { init_store(); }
};

TEST_F(CliOutputTest, JobShowAndListEscapeAHostileVmName) {
  const CliResult added = run({"job", "add", "job-1", "--vm-id", "vm-4211", "--vm-name", kHostile});
  ASSERT_EQ(added.exit_code, 0) << added.err;
  const CliResult show = run({"job", "show", "job-1"});
  ASSERT_EQ(show.exit_code, 0) << show.err;
  for (const CliResult* text : {&added, &show}) {
    EXPECT_EQ(lines(text->out), 6u) << text->out;  // id, source_vm_id, source_vm_name, status, created_at, updated_at
    EXPECT_THAT(text->out, HasSubstr("source_vm_name  " + kEscaped + "\n"));
    expect_no_control_bytes(text->out);
  }
  const CliResult list = run({"job", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_EQ(lines(list.out), 2u) << list.out;  // heading and the one job
  EXPECT_THAT(list.out, HasSubstr(kEscaped));
  expect_no_control_bytes(list.out);

  EXPECT_EQ(run_json({"job", "show", "job-1"})["source_vm_name"], kHostile);
  EXPECT_EQ(run_json({"job", "list"})[0]["source_vm_name"], kHostile);
}

TEST_F(CliOutputTest, DiskListEscapesAHostileVmdkPath) {
  ASSERT_EQ(run({"job", "add", "job-1", "--vm-id", "vm-4211", "--vm-name", "web01"}).exit_code, 0);
  const CliResult added =
      run({"disk", "add", "--job", "job-1", "--disk-id", "disk-2000", "--vmdk-path", kHostile, "--size-gb", "1"});
  ASSERT_EQ(added.exit_code, 0) << added.err;
  const CliResult list = run({"disk", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_EQ(lines(list.out), 2u) << list.out;
  EXPECT_THAT(list.out, HasSubstr(kEscaped));
  expect_no_control_bytes(list.out);
  EXPECT_EQ(run_json({"disk", "list"})[0]["vm_dk_path"], kHostile);
}

TEST_F(CliOutputTest, ARefusalQuotingAStoreValueIsOneEscapedLine) {
  ASSERT_EQ(run({"job", "add", "job-1", "--vm-id", "vm-4211", "--vm-name", kHostile}).exit_code, 0);
  const std::string line = refused(4, {"job", "add", "job-1", "--vm-id", "vm-9", "--vm-name", "other"});
  EXPECT_THAT(line, HasSubstr(kEscaped));
  expect_no_control_bytes(line);
}

TEST_F(CliOutputTest, AValueWrittenByRawSqlIsEscapedToo) {
  ASSERT_EQ(run({"job", "add", "job-1", "--vm-id", "vm-4211", "--vm-name", "web01"}).exit_code, 0);
  {
    SQLite::Database raw(db_, SQLite::OPEN_READWRITE);
    raw.exec("UPDATE replication_jobs SET source_vm_id = 'vm' || char(13) || char(27) || '[2K' || char(127) || 'x'");
  }
  const CliResult show = run({"job", "show", "job-1"});
  ASSERT_EQ(show.exit_code, 0) << show.err;
  EXPECT_THAT(show.out, HasSubstr("source_vm_id    vm\\r\\x1b[2K\\x7fx\n"));
  expect_no_control_bytes(show.out);
}

}  // namespace
}  // namespace nbdxm::test
