// `nbdxm check` through the real binary: exit 0 on a sound store, one line per problem and exit 5 otherwise.
#include <filesystem>

#include "cli_store_support.hpp"

namespace nbdxm::test {
namespace {

using ::testing::HasSubstr;

class CliCheckTest : public CliStoreTest {
 protected:
  void SetUp() override {
    init_store();
    add_standard_store_rows();
  }
};

TEST_F(CliCheckTest, SoundStorePasses) {
  const CliResult result = run({"check"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "state store " + db_ + ": no problems found\n");
  EXPECT_EQ(result.err, "");
  EXPECT_EQ(run_json({"check"}), (Json{{"path", db_}, {"problems", Json::array()}}));
}

TEST_F(CliCheckTest, FindsProblemsPlantedWithForeignKeysOff) {
  std::string volume3_device;
  with_store([&](ExportStore& store) {
    volume3_device = store.get_mapping(kVolume3).device_path;
    exec_as_older_writer(store.database(), "DELETE FROM replication_jobs WHERE id = 'j2'");
  });
  std::filesystem::remove(volume3_device);
  const std::string before = state();
  const CliResult result = run({"check"});
  EXPECT_EQ(result.exit_code, 5);
  EXPECT_EQ(result.out, fmt::format("reference: disk d3 (vm_disks.id 3) belongs to job j2, which does not exist\n"
                                    "reference: export e3 belongs to job j2, which does not exist\n"
                                    "device: device {} of volume {} does not exist (No such file or directory)\n",
                                    volume3_device, kVolume3));
  EXPECT_EQ(result.err, "nbdxm: check found 3 problems in state store " + db_ + "\n");
  EXPECT_EQ(before, state()) << "check changed the store";

  const CliResult json = run({"--json", "check"});
  EXPECT_EQ(json.exit_code, 5);
  const auto parsed = Json::parse(json.out);
  ASSERT_EQ(parsed["problems"].size(), 3u);
  EXPECT_EQ(parsed["problems"][0]["rule"], "reference");
  EXPECT_EQ(parsed["problems"][2]["rule"], "device");
  EXPECT_THAT(parsed["problems"][2]["message"].get<std::string>(), HasSubstr(volume3_device));
}

TEST_F(CliCheckTest, FindsAMissingTrigger) {
  with_store([](ExportStore& store) { store.database().sql().exec("DROP TRIGGER nbd_exports_live_insert"); });
  const CliResult result = run({"check"});
  EXPECT_EQ(result.exit_code, 5);
  EXPECT_EQ(result.out,
            "schema: trigger nbd_exports_live_insert is missing from the store's schema; the rules it "
            "enforces are not enforced\n");
  EXPECT_EQ(result.err, "nbdxm: check found 1 problem in state store " + db_ + "\n");
}

}  // namespace
}  // namespace nbdxm::test
