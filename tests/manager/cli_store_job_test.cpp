// `nbdxm job add|list|show|set-status|delete` through the real binary: output in text and JSON, every refusal.
#include "cli_store_support.hpp"

namespace nbdxm::test {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::StartsWith;

class CliJobTest : public CliStoreTest {
 protected:
  void SetUp() override { init_store(); }
};

TEST_F(CliJobTest, AddPrintsTheJob) {
  const CliResult result = run({"job", "add", "job-1", "--vm-id", "vm-4211", "--vm-name", "web01"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, MatchesRegex("id +job-1\n"
                                       "source_vm_id +vm-4211\n"
                                       "source_vm_name +web01\n"
                                       "status +pending\n"
                                       "created_at +[-0-9T:.Z]+\n"
                                       "updated_at +[-0-9T:.Z]+\n"));
  const auto json = run_json({"job", "add", "job-2", "--vm-id", "vm-4212", "--vm-name", "db01"});
  EXPECT_EQ(json["id"], "job-2");
  EXPECT_EQ(json["source_vm_id"], "vm-4212");
  EXPECT_EQ(json["source_vm_name"], "db01");
  EXPECT_EQ(json["status"], "pending");
  std::vector<std::string> keys;
  for (const auto& [key, value] : json.items()) keys.push_back(key);
  EXPECT_THAT(keys, ::testing::UnorderedElementsAre("id", "source_vm_id", "source_vm_name", "status", "created_at",
                                                    "updated_at"));
}

TEST_F(CliJobTest, AddRefusals) {
  run({"job", "add", "job-1", "--vm-id", "vm-4211", "--vm-name", "web01"});
  EXPECT_EQ(refused(4, {"job", "add", "job-1", "--vm-id", "vm-9", "--vm-name", "other"}),
            "nbdxm: job job-1 already exists (VM web01, status pending)");
  EXPECT_EQ(refused(2, {"job", "add", "", "--vm-id", "vm-9", "--vm-name", "other"}),
            "nbdxm: job id \"\" must be 1 to 191 characters");
  EXPECT_EQ(refused(2, {"job", "add", "job-3", "--vm-name", "other"}),
            "nbdxm job add: --vm-id is required (see `nbdxm job add --help`)");
  EXPECT_THAT(refused(2, {"job", "add", "job-3", "--vm-id", "", "--vm-name", "other"}),
              HasSubstr("the job's source VM id must not be empty"));
}

TEST_F(CliJobTest, ListsJobs) {
  CliResult result = run({"job", "list"});
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_EQ(result.out, "id  source_vm_id  source_vm_name  status  created_at  updated_at\n");
  EXPECT_EQ(run_json({"job", "list"}), Json::array());
  add_standard_store_rows();
  result = run({"job", "list"});
  EXPECT_THAT(result.out, MatchesRegex("id +source_vm_id +source_vm_name +status +created_at +updated_at\n"
                                       "j1 +vm-1 +web01 +replicating +[-0-9T:.Z]+ +[-0-9T:.Z]+\n"
                                       "j2 +vm-2 +db01 +pending +[-0-9T:.Z]+ +[-0-9T:.Z]+\n"));
  const auto json = run_json({"job", "list"});
  ASSERT_EQ(json.size(), 2u);
  EXPECT_EQ(json[0]["id"], "j1");
  EXPECT_EQ(json[1]["source_vm_name"], "db01");
}

TEST_F(CliJobTest, ShowsAJob) {
  add_standard_store_rows();
  EXPECT_THAT(run({"job", "show", "j2"}).out, StartsWith("id              j2\nsource_vm_id    vm-2\n"));
  EXPECT_EQ(run_json({"job", "show", "j1"})["status"], "replicating");
  EXPECT_EQ(refused(3, {"job", "show", "nope"}), "nbdxm: job nope does not exist; `nbdxm job list` shows the jobs");
}

TEST_F(CliJobTest, SetStatusSaysWhichExportsItRevoked) {
  add_standard_store_rows();
  CliResult result = run({"job", "set-status", "j2", "replicating"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("status          replicating\n"));
  EXPECT_THAT(result.out, ::testing::Not(HasSubstr("revoked")));

  result = run({"job", "set-status", "j1", "completed"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("status          completed\n"));
  EXPECT_THAT(result.out, ::testing::EndsWith("revoked live export e1 on port 10809: job j1 became completed\n"));

  const auto json = run_json({"job", "set-status", "j2", "cancelled"});
  EXPECT_EQ(json["job"]["status"], "cancelled");
  ASSERT_EQ(json["revoked_exports"].size(), 1u);
  EXPECT_EQ(json["revoked_exports"][0]["export_name"], "e3");
  EXPECT_EQ(json["revoked_exports"][0]["status"], "revoked");
}

TEST_F(CliJobTest, SetStatusRefusals) {
  add_standard_store_rows();
  EXPECT_EQ(refused(2, {"job", "set-status", "j1", "done"}),
            "nbdxm: job status \"done\" is not one of pending, replicating, completed, failed, cancelled");
  EXPECT_THAT(refused(3, {"job", "set-status", "nope", "failed"}), HasSubstr("job nope does not exist"));
  EXPECT_THAT(refused(2, {"job", "set-status", "j1"}), HasSubstr("STATUS is required"));
}

TEST_F(CliJobTest, DeleteSaysWhatWentWithTheJob) {
  add_standard_store_rows();
  CliResult result = run({"job", "delete", "j1"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "deleted job j1 with 2 disks (d1, d2) and 2 exports (e1-old, e1); device mappings are kept\n");
  EXPECT_EQ(run_json({"mapping", "list"}).size(), 4u);
  EXPECT_EQ(run_json({"disk", "list"}).size(), 1u);

  const auto json = run_json({"job", "delete", "j2"});
  EXPECT_EQ(json["job"]["id"], "j2");
  ASSERT_EQ(json["deleted_disks"].size(), 1u);
  EXPECT_EQ(json["deleted_disks"][0]["disk_id"], "d3");
  ASSERT_EQ(json["deleted_exports"].size(), 1u);
  EXPECT_EQ(json["deleted_exports"][0]["export_name"], "e3");

  run({"job", "add", "j3", "--vm-id", "v", "--vm-name", "n"});
  EXPECT_EQ(run({"job", "delete", "j3"}).out, "deleted job j3; device mappings are kept\n");
  EXPECT_THAT(refused(3, {"job", "delete", "j3"}), HasSubstr("job j3 does not exist"));
}

}  // namespace
}  // namespace nbdxm::test
