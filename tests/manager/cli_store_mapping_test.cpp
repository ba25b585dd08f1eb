// `nbdxm mapping add|set-path|list|show|delete` through the real binary: output in text and JSON, every refusal.
#include "cli_store_support.hpp"

namespace nbdxm::test {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;

const std::string kNewVolume = "11111111-2222-4333-8444-555555555555";

class CliMappingTest : public CliStoreTest {
 protected:
  void SetUp() override {
    init_store();
    add_standard_store_rows();
  }
  std::string device_of(const std::string& volume) {
    return run_json({"mapping", "show", volume})["device_path"].get<std::string>();
  }
  std::vector<std::string> add_args(const std::string& volume, const std::string& path, const std::string& size) {
    return {"mapping", "add",         "--volume-uuid", volume, "--volume-id", "2305",
            "--vm-id", "appliance-1", "--device-path", path,   "--size",      size};
  }
};

TEST_F(CliMappingTest, AddPrintsTheMapping) {
  const std::string device = dir_.file("vde");
  const CliResult result = run(add_args(kNewVolume, device, "10737418240"));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("volume_uuid                  " + kNewVolume + "\n"));
  EXPECT_THAT(result.out, HasSubstr("device_path                  " + device + "\n"));
  EXPECT_THAT(result.out, HasSubstr("operation_mode               oma\n"));
  EXPECT_THAT(result.out, HasSubstr("requires_device_correlation  true\n"));
  EXPECT_THAT(result.out, HasSubstr("cloudstack_device_id         -\n"));

  auto args = add_args("22222222-2222-4333-8444-555555555555", "remote", "1");
  args.insert(args.end(), {"--mode", "failover", "--no-correlation"});
  auto json = run_json(args);
  EXPECT_EQ(json["operation_mode"], "failover");
  EXPECT_EQ(json["requires_device_correlation"], false);
  EXPECT_EQ(json["volume_id"], 2305);
  EXPECT_EQ(json["size"], 1);
  EXPECT_TRUE(json["cloudstack_device_id"].is_null());
  std::vector<std::string> keys;
  for (const auto& [key, value] : json.items()) keys.push_back(key);
  EXPECT_EQ(keys, (std::vector<std::string>{"id", "volume_uuid", "volume_id", "vm_id", "device_path", "operation_mode",
                                            "cloudstack_device_id", "requires_device_correlation", "cloudstack_state",
                                            "linux_state", "size", "last_sync", "created_at", "updated_at"}));
}

TEST_F(CliMappingTest, AddRefusals) {
  const std::string taken = device_of(kVolume1);
  EXPECT_EQ(refused(4, add_args(kNewVolume, taken, "1")),
            fmt::format("nbdxm: device path {} is already mapped to volume {}; an 'oma' device path maps one volume",
                        taken, kVolume1));
  EXPECT_THAT(refused(4, add_args(kVolume2, "/dev/vdx", "1")),
              HasSubstr(fmt::format("volume {} already has a device mapping", kVolume2)));
  EXPECT_EQ(refused(2, add_args("7D1C2E9A-0C4B-4D7E-9A51-3F2E1B0C9D8A", "/dev/vdx", "1")),
            "nbdxm: volume UUID \"7D1C2E9A-0C4B-4D7E-9A51-3F2E1B0C9D8A\" is not a canonical lower-case UUID "
            "(8-4-4-4-12 hex digits, like b3bb9310-1b59-4f62-97e8-cefffdfe3804)");
  EXPECT_THAT(refused(2, add_args(kNewVolume, "vdx", "1")), HasSubstr("device path \"vdx\" must be an absolute path"));
  EXPECT_THAT(refused(2, add_args(kNewVolume, "/dev/vdx", "0")), HasSubstr("volume size 0 bytes is out of range"));
  EXPECT_THAT(refused(2, add_args(kNewVolume, "/dev/vdx", "ten")), HasSubstr("--size"));
  auto bad_mode = add_args(kNewVolume, "/dev/vdx", "1");
  bad_mode.insert(bad_mode.end(), {"--mode", "attached"});
  EXPECT_THAT(refused(2, bad_mode), HasSubstr("operation mode \"attached\" is not one of oma, failover"));
  EXPECT_THAT(refused(2, {"mapping", "add", "--volume-uuid", kNewVolume}), HasSubstr("is required"));
}

TEST_F(CliMappingTest, SetPathMovesTheMapping) {
  const std::string moved = dir_.file("vdq");
  const CliResult result = run({"mapping", "set-path", kVolume1, moved});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("device_path                  " + moved + "\n"));
  EXPECT_EQ(device_of(kVolume1), moved);
  EXPECT_EQ(run_json({"mapping", "set-path", kVolume1, moved})["device_path"], moved);
}

TEST_F(CliMappingTest, SetPathRefusals) {
  const std::string taken = device_of(kVolume2);
  EXPECT_EQ(refused(4, {"mapping", "set-path", kVolume1, taken}),
            fmt::format("nbdxm: device path {} is already mapped to volume {}; an 'oma' device path maps one volume",
                        taken, kVolume2));
  EXPECT_THAT(refused(3, {"mapping", "set-path", kNewVolume, "/dev/vdx"}),
              HasSubstr(fmt::format("volume {} has no device mapping", kNewVolume)));
  EXPECT_THAT(refused(2, {"mapping", "set-path", kVolume1, "/dev/../vdx"}), HasSubstr("must be an absolute path"));
  EXPECT_THAT(refused(2, {"mapping", "set-path", "nope", "/dev/vdx"}), HasSubstr("not a canonical lower-case UUID"));
}

TEST_F(CliMappingTest, ListsAndShowsMappings) {
  const CliResult result = run({"mapping", "list"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, MatchesRegex("volume_uuid +volume_id +vm_id +device_path +operation_mode +size +updated_at\n"
                                       "(.*\n){4}"));
  EXPECT_THAT(result.out, ::testing::ContainsRegex(kVolume4 + " +103 +vm-9 +remote +failover +42949672960 "));
  const auto json = run_json({"mapping", "list"});
  ASSERT_EQ(json.size(), 4u);
  EXPECT_EQ(json[0]["volume_uuid"], kVolume1);
  EXPECT_EQ(run_json({"mapping", "show", kVolume3})["size"], 30 * kGiB);
  EXPECT_THAT(refused(3, {"mapping", "show", kNewVolume}), HasSubstr("has no device mapping"));
}

TEST_F(CliMappingTest, DeleteSaysWhatWentWithTheMapping) {
  const std::string device = device_of(kVolume1);
  CliResult result = run({"mapping", "delete", kVolume1});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, fmt::format("deleted the device mapping of volume {} (device path {}); unlinked disk d1 of job "
                                    "j1; deleted 2 exports (e1-old, e1)\n",
                                    kVolume1, device));
  const auto disk = run_json({"disk", "show", "--job", "j1", "--disk-id", "d1"});
  EXPECT_TRUE(disk["cloudstack_volume_uuid"].is_null());

  const auto json = run_json({"mapping", "delete", kVolume2});
  EXPECT_EQ(json["mapping"]["volume_uuid"], kVolume2);
  ASSERT_EQ(json["unlinked_disks"].size(), 1u);
  EXPECT_EQ(json["unlinked_disks"][0]["disk_id"], "d3");
  EXPECT_TRUE(json["unlinked_disks"][0]["cloudstack_volume_uuid"].is_null());
  ASSERT_EQ(json["deleted_exports"].size(), 1u);
  EXPECT_EQ(json["deleted_exports"][0]["export_name"], "e3");

  EXPECT_EQ(run({"mapping", "delete", kVolume4}).out,
            fmt::format("deleted the device mapping of volume {} (device path remote)\n", kVolume4));
  EXPECT_THAT(refused(3, {"mapping", "delete", kVolume4}), HasSubstr("has no device mapping"));
  EXPECT_THAT(refused(2, {"mapping", "delete", "x"}), HasSubstr("not a canonical lower-case UUID"));
}

}  // namespace
}  // namespace nbdxm::test
