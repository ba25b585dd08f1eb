// `nbdxm disk add|list|show|link` through the real binary: output in text and JSON, every refusal.
#include "cli_store_support.hpp"

namespace nbdxm::test {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;

class CliDiskTest : public CliStoreTest {
 protected:
  void SetUp() override {
    init_store();
    add_standard_store_rows();
  }
};

TEST_F(CliDiskTest, AddPrintsTheDisk) {
  const CliResult result = run({"disk", "add", "--job", "j2", "--disk-id", "disk-2001", "--vmdk-path",
                                "[ds2] db01/db01_1.vmdk", "--size-gb", "50", "--unit", "1"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("disk_id                 disk-2001\n"));
  EXPECT_THAT(result.out, HasSubstr("vm_dk_path              [ds2] db01/db01_1.vmdk\n"));
  EXPECT_THAT(result.out, HasSubstr("unit_number             1\n"));
  EXPECT_THAT(result.out, HasSubstr("cloudstack_volume_uuid  -\n"));
  const auto json =
      run_json({"disk", "add", "--job", "j2", "--disk-id", "disk-2002", "--vmdk-path", "x.vmdk", "--size-gb", "1"});
  EXPECT_EQ(json["job_id"], "j2");
  EXPECT_EQ(json["size_gb"], 1);
  EXPECT_TRUE(json["unit_number"].is_null());
  EXPECT_EQ(json["sync_status"], "pending");
  std::vector<std::string> keys;
  for (const auto& [key, value] : json.items()) keys.push_back(key);
  EXPECT_EQ(keys, (std::vector<std::string>{"id", "job_id", "disk_id", "vm_dk_path", "size_gb", "unit_number",
                                            "cloudstack_volume_uuid", "cloudstack_volume_id", "sync_status",
                                            "sync_progress_percent", "bytes_synced", "created_at", "updated_at"}));
}

TEST_F(CliDiskTest, AddRefusals) {
  auto args = [](const std::string& job, const std::string& disk, const std::string& size) {
    return std::vector<std::string>{"disk", "add",         "--job",  job,         "--disk-id",
                                    disk,   "--vmdk-path", "x.vmdk", "--size-gb", size};
  };
  EXPECT_EQ(refused(4, args("j1", "d1", "5")),
            "nbdxm: job j1 already has disk d1 (VMDK [datastore1] j1/d1.vmdk); disk ids are unique within a job");
  EXPECT_THAT(refused(3, args("nope", "d1", "5")), HasSubstr("job nope does not exist"));
  EXPECT_THAT(refused(2, args("j1", "d9", "0")), HasSubstr("disk size 0 GiB is out of range: it must be 1 to"));
  EXPECT_THAT(refused(2, args("j1", "d9", "2000000")), HasSubstr("disk size 2000000 GiB is out of range"));
  EXPECT_THAT(refused(2, args("j1", "", "1")), HasSubstr("disk id \"\" must be 1 to 191 characters"));
  auto negative_unit = args("j1", "d9", "1");
  negative_unit.insert(negative_unit.end(), {"--unit", "-1"});
  EXPECT_THAT(refused(2, negative_unit), HasSubstr("unit number -1 must not be negative"));
}

TEST_F(CliDiskTest, ListsAndShowsDisks) {
  const CliResult all = run({"disk", "list"});
  EXPECT_EQ(all.exit_code, 0) << all.err;
  EXPECT_THAT(all.out, MatchesRegex("job_id +disk_id +size_gb +unit_number +cloudstack_volume_uuid +sync_status "
                                    "+vm_dk_path\n"
                                    "j1 +d1 +5 +0 +" +
                                    kVolume1 +
                                    " +pending +\\[datastore1\\] j1/d1.vmdk\n"
                                    "j1 +d2 +10 +- +- +pending +\\[datastore1\\] j1/d2.vmdk\n"
                                    "j2 +d3 +20 +- +" +
                                    kVolume2 + " +pending +\\[datastore1\\] j2/d3.vmdk\n"));
  const auto of_j2 = run_json({"disk", "list", "--job", "j2"});
  ASSERT_EQ(of_j2.size(), 1u);
  EXPECT_EQ(of_j2[0]["disk_id"], "d3");
  EXPECT_EQ(of_j2[0]["cloudstack_volume_id"], 101);
  EXPECT_THAT(refused(3, {"disk", "list", "--job", "nope"}), HasSubstr("job nope does not exist"));
  EXPECT_EQ(run_json({"disk", "show", "--job", "j1", "--disk-id", "d2"})["size_gb"], 10);
  EXPECT_EQ(refused(3, {"disk", "show", "--job", "j1", "--disk-id", "d9"}),
            "nbdxm: disk d9 of job j1 does not exist; `nbdxm disk list --job j1` shows the job's disks");
}

TEST_F(CliDiskTest, LinkRecordsTheVolume) {
  const CliResult result = run({"disk", "link", "--job", "j1", "--disk-id", "d2", "--volume-uuid", kVolume3});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("cloudstack_volume_uuid  " + kVolume3 + "\n"));
  EXPECT_THAT(result.out, HasSubstr("cloudstack_volume_id    102\n"));
  EXPECT_THAT(result.out, ::testing::Not(HasSubstr("revoked")));
}

TEST_F(CliDiskTest, RelinkSaysWhichExportsItRevoked) {
  const auto json = run_json({"disk", "link", "--job", "j2", "--disk-id", "d3", "--volume-uuid", kVolume3});
  EXPECT_EQ(json["disk"]["cloudstack_volume_uuid"], kVolume3);
  ASSERT_EQ(json["revoked_exports"].size(), 1u);
  EXPECT_EQ(json["revoked_exports"][0]["export_name"], "e3");
  EXPECT_EQ(json["revoked_exports"][0]["status"], "revoked");
  // Volume 2 is free now.
  const CliResult result = run({"disk", "link", "--job", "j1", "--disk-id", "d1", "--volume-uuid", kVolume2});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, EndsWith("revoked live export e1 on port 10809: disk d1 was linked to another volume\n"));
}

TEST_F(CliDiskTest, LinkRefusals) {
  EXPECT_EQ(refused(4, {"disk", "link", "--job", "j1", "--disk-id", "d2", "--volume-uuid", kVolume2}),
            fmt::format("nbdxm: volume {} already backs disk d3 of job j2; a volume backs one disk", kVolume2));
  with_store([this](ExportStore& store) {
    store.add_mapping(new_mapping("11111111-2222-4333-8444-555555555555", dir_.file("small"), 5 * kGiB));
  });
  EXPECT_EQ(
      refused(4, {"disk", "link", "--job", "j1", "--disk-id", "d2", "--volume-uuid",
                  "11111111-2222-4333-8444-555555555555"}),
      fmt::format("nbdxm: volume 11111111-2222-4333-8444-555555555555 ({} bytes) is smaller than disk d2 of job j1 "
                  "(10 GiB = {} bytes); link a volume at least as large as the disk",
                  5 * kGiB, 10 * kGiB));
  EXPECT_EQ(refused(3, {"disk", "link", "--job", "j1", "--disk-id", "d2", "--volume-uuid",
                        "99999999-2222-4333-8444-555555555555"}),
            "nbdxm: volume 99999999-2222-4333-8444-555555555555 has no device mapping; `nbdxm mapping list` shows the "
            "mappings");
  EXPECT_THAT(refused(3, {"disk", "link", "--job", "j1", "--disk-id", "d9", "--volume-uuid", kVolume3}),
              HasSubstr("disk d9 of job j1 does not exist"));
  EXPECT_THAT(refused(3, {"disk", "link", "--job", "nope", "--disk-id", "d1", "--volume-uuid", kVolume3}),
              HasSubstr("job nope does not exist"));
  EXPECT_THAT(refused(2, {"disk", "link", "--job", "j1", "--disk-id", "d2", "--volume-uuid", "vol-3"}),
              HasSubstr("volume UUID \"vol-3\" is not a canonical lower-case UUID"));
}

}  // namespace
}  // namespace nbdxm::test
