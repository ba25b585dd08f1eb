// Other clients and tools: qemu-img, nbdcopy and nbdinfo; the pinned export; nbdkit's --help and --dump-plugin;
// the plugin's exported symbols; a server refusing to start without its store.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "plugin_fixture.hpp"

namespace nbdxm::test {
namespace {

// A 1 GiB sparse source image with data in a few places, like a thin VMware disk.
std::string make_source_image(const TempDir& dir) {
  const std::string path = dir.file("source.img");
  create_volume_file(path, kGiB);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  for (uint64_t offset : {uint64_t{0}, uint64_t{300} * kMiB + 512, uint64_t{kGiB} - 4 * kMiB}) {
    const std::string data = pattern(4 * kMiB, static_cast<char>(offset % 11));
    EXPECT_EQ(::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset)), static_cast<ssize_t>(data.size()));
  }
  ::close(fd);
  return path;
}

class PluginInterop : public BackedPluginTest {
 protected:
  // Copies the export into a local file with nbdcopy and compares it with `source` byte for byte (stronger than
  // comparing checksums, and it reads only the data, not 1 GiB of holes).
  ::testing::AssertionResult export_equals(const NbdkitServer& server, const std::string& export_name,
                                           const std::string& source) {
    const std::string copy = dir_.file(export_name + ".copy");
    create_volume_file(copy, kGiB);
    std::string output;
    if (run({"nbdcopy", server.uri(export_name), copy}, &output) != 0) {
      return ::testing::AssertionFailure() << "nbdcopy failed: " << output;
    }
    return same_content(source, copy);
  }
};

TEST_P(PluginInterop, QemuImgConvertAndNbdcopyRoundTripsCompareEqual) {
  const std::string source = make_source_image(dir_);
  auto a = volume("a");
  auto b = volume("b");
  store_.add({"export-a", a->device()});
  store_.add({"export-b", b->device()});
  auto server = serve();
  {
    // The volumes are not new: stale data where the source has zeroes must be overwritten.
    NbdClient a_client(server->socket(), "export-a");
    a_client.write(pattern(kMiB, 9), 100 * kMiB);
    NbdClient b_client(server->socket(), "export-b");
    b_client.write(pattern(kMiB, 9), 100 * kMiB);
  }
  std::string output;
  ASSERT_EQ(run({"qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", source, server->uri("export-a")}, &output), 0)
      << output;
  EXPECT_TRUE(export_equals(*server, "export-a", source));

  ASSERT_EQ(run({"nbdcopy", "--flush", "-C", "4", source, server->uri("export-b")}, &output), 0) << output;
  EXPECT_TRUE(export_equals(*server, "export-b", source));
}

INSTANTIATE_TEST_SUITE_P(Backings, PluginInterop, ::testing::Values(Backing::file, Backing::loop, Backing::loop4k),
                         backing_name);

TEST_F(PluginTest, NbdinfoListsOnlyActiveExportsAndDescribesThem) {
  Volume a(dir_, "a", Backing::file);
  Volume b(dir_, "b", Backing::file);
  Volume c(dir_, "c", Backing::file);
  store_.add({"export-a", a.device()});
  store_.add({"export-b", b.device(), kGiB, false, "pending"});
  store_.add({"export-c", c.device(), kGiB, false, "revoked"});
  auto server = serve();
  std::string output;
  ASSERT_EQ(run({"nbdinfo", "--list", "--json", server->uri("")}, &output), 0) << output;
  const auto listed = nlohmann::json::parse(output);
  ASSERT_EQ(listed["exports"].size(), 1u) << output;
  EXPECT_EQ(listed["exports"][0]["export-name"], "export-a");
  EXPECT_EQ(listed["exports"][0]["description"], "disk disk-0 of job job-export-a");

  ASSERT_EQ(run({"nbdinfo", "--json", server->uri("export-a")}, &output), 0) << output;
  const auto info = nlohmann::json::parse(output)["exports"][0];
  EXPECT_EQ(info["export-size"], kGiB);
  EXPECT_EQ(info["can_multi_conn"], true);
  EXPECT_EQ(info["is_read_only"], false);
}

TEST_F(PluginTest, APinnedServerServesItsExportAsTheDefault) {
  Volume a(dir_, "a", Backing::file);
  Volume b(dir_, "b", Backing::file);
  store_.add({"export-a", a.device()});
  store_.add({"export-b", b.device()});
  auto server = serve({"allow-regular-files=true", "export=export-a"});
  std::string output;
  ASSERT_EQ(run({"nbdinfo", "--list", "--json", server->uri("")}, &output), 0) << output;
  const auto listed = nlohmann::json::parse(output);
  ASSERT_EQ(listed["exports"].size(), 1u) << output;
  EXPECT_EQ(listed["exports"][0]["export-name"], "export-a");
  {
    NbdClient by_default(server->socket(), "");
    by_default.write(pattern(4096, 1), 0);
    NbdClient by_name(server->socket(), "export-a");
    EXPECT_EQ(by_name.read(4096, 0), pattern(4096, 1));
  }
  server->stop();
  EXPECT_TRUE(holds_exactly(a.backing_file(), {{0, pattern(4096, 1)}}));
  EXPECT_TRUE(holds_exactly(b.backing_file(), {}));
}

TEST(PluginBinary, HelpAndDumpPluginDescribeTheParameters) {
  std::string help;
  ASSERT_EQ(run({"nbdkit", NBDXM_PLUGIN, "--help"}, &help), 0) << help;
  for (const char* parameter :
       {"db=PATH", "export=NAME", "allow-regular-files=BOOL", "allow-uncorrelated=BOOL", "byid-dir=DIR"}) {
    EXPECT_NE(help.find(parameter), std::string::npos) << parameter << " missing from:\n" << help;
  }
  std::string dump;
  ASSERT_EQ(run({"nbdkit", NBDXM_PLUGIN, "--dump-plugin"}, &dump), 0) << dump;
  for (const char* line : {"name=nbdxm", "thread_model=parallel", "has_list_exports=1", "has_after_fork=1",
                           "nbdxm_default_byid_dir=/dev/disk/by-id"}) {
    EXPECT_NE(dump.find(line), std::string::npos) << line << " missing from:\n" << dump;
  }
}

TEST(PluginBinary, ExportsOnlyPluginInit) {
  std::string symbols;
  ASSERT_EQ(run({"nm", "-D", "--defined-only", NBDXM_PLUGIN}, &symbols), 0) << symbols;
  std::istringstream lines(symbols);
  std::vector<std::string> names;
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty()) names.push_back(line.substr(line.rfind(' ') + 1));
  }
  EXPECT_EQ(names, std::vector<std::string>{"plugin_init"}) << symbols;
}

TEST(PluginBinary, RefusesToStartWithoutItsStore) {
  TempDir dir;
  std::string output;
  const std::string db = dir.file("absent.db");
  EXPECT_NE(run({"nbdkit", "-f", "-U", dir.file("sock"), NBDXM_PLUGIN, "db=" + db}, &output), 0);
  EXPECT_NE(output.find("state store " + db + " does not exist; create it with `nbdxm --db " + db + " init`"),
            std::string::npos)
      << output;
  EXPECT_NE(run({"nbdkit", "-f", "-U", dir.file("sock"), NBDXM_PLUGIN}, &output), 0);
  EXPECT_NE(output.find("the db=PATH parameter is required"), std::string::npos) << output;
}

}  // namespace
}  // namespace nbdxm::test
