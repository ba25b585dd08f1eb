// The service user owns the store; root may write it too (packaging, an operator). A store written by root must
// stay writable by its owner: root-created -wal and -shm files are given to the store file's owner. And root must
// never be tricked, by links the service user plants in its folder, into changing a file outside the store.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cli_store_support.hpp"

namespace nbdxm::test {
namespace {

constexpr uid_t kNobody = 65534;

// A root-owned file with private contents, standing for /etc/shadow: nothing nbdxm does may change it.
class Canary {
 public:
  explicit Canary(std::string path) : path_(std::move(path)) {
    std::ofstream(path_) << kContents;
    ::chmod(path_.c_str(), 0600);
  }
  void expect_untouched() const {
    struct stat st {};
    ASSERT_EQ(::lstat(path_.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 0u);
    EXPECT_EQ(st.st_gid, 0u);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    std::stringstream contents;
    contents << std::ifstream(path_).rdbuf();
    EXPECT_EQ(contents.str(), kContents);
  }
  const std::string& path() const { return path_; }

 private:
  static constexpr const char* kContents = "root:secret:19000:0:99999:7:::\n";
  std::string path_;
};

class RootStoreLinksTest : public CliStoreTest {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: the danger is root following the service user's links";
    ASSERT_EQ(::chown(dir_.path().c_str(), kNobody, kNobody), 0);
  }
  // `nbdxm init` as root on path, then the store given to the service user, as packaging leaves it.
  void init_owned_store(const std::string& path) {
    ASSERT_EQ(run({"--db", path, "init"}, {}, false).exit_code, 0);
    for (const char* suffix : {"", "-wal", "-shm"}) ASSERT_EQ(::chown((path + suffix).c_str(), kNobody, kNobody), 0);
  }
  // Expects `nbdxm job add` as root to be refused with one line naming the store and the link.
  void expect_job_add_refused(const std::string& link) {
    const CliResult result = run({"job", "add", "by-root", "--vm-id", "v", "--vm-name", "n"});
    EXPECT_EQ(result.exit_code, 1) << result.err;
    EXPECT_EQ(result.out, "");
    EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
    EXPECT_THAT(result.err, ::testing::StartsWith("nbdxm: state store " + db_));
    EXPECT_THAT(result.err, ::testing::HasSubstr(link + " is a symbolic link"));
  }
  // The jobs of the store at path, read as root once no link is left next to it.
  Json jobs_of(const std::string& path) {
    const CliResult result = run({"--db", path, "--json", "job", "list"}, {}, false);
    EXPECT_EQ(result.exit_code, 0) << result.err;
    return Json::parse(result.out.empty() ? "[]" : result.out);
  }
};

TEST_F(RootStoreLinksTest, RootRefusesASymlinkedStoreAndLeavesThePlantedTargetAlone) {
  const std::string real = dir_.file("real.db");
  init_owned_store(real);
  const Canary canary(dir_.file("canary"));
  ASSERT_EQ(::symlink(real.c_str(), db_.c_str()), 0);                      // state.db -> real.db
  ASSERT_EQ(::symlink(canary.path().c_str(), (db_ + "-wal").c_str()), 0);  // state.db-wal -> canary

  expect_job_add_refused(db_);
  canary.expect_untouched();
  EXPECT_EQ(jobs_of(real).size(), 0u) << "the refused command wrote the store";
}

TEST_F(RootStoreLinksTest, RootRefusesAPlantedSideFileLinkAndLeavesItsTargetAlone) {
  init_owned_store(db_);
  const Canary canary(dir_.file("canary"));
  for (const char* suffix : {"-wal", "-shm", "-journal"}) {
    const std::string side = db_ + suffix;
    ::unlink(side.c_str());
    ASSERT_EQ(::symlink(canary.path().c_str(), side.c_str()), 0) << suffix;
    expect_job_add_refused(side);
    canary.expect_untouched();
    ASSERT_EQ(::unlink(side.c_str()), 0);
  }
  EXPECT_EQ(jobs_of(db_).size(), 0u) << "a refused command wrote the store";
}

TEST_F(CliStoreTest, StoreWrittenByRootStaysWritableByItsOwner) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to write as root and then as another user";
  if (run({"--version"}, {}, false).exit_code != 0) GTEST_SKIP() << "nbdxm does not run";
  const std::vector<std::string> as_nobody{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
  if (run({"--version"}, {}, false, as_nobody).exit_code != 0) {
    GTEST_SKIP() << "cannot run nbdxm as nobody with setpriv (can others read " << NBDXM_BINARY << "?)";
  }
  ASSERT_EQ(::chown(dir_.path().c_str(), kNobody, kNobody), 0);
  init_store();  // as root
  ASSERT_EQ(::chown(db_.c_str(), kNobody, kNobody), 0);
  ASSERT_EQ(run({"job", "add", "by-root", "--vm-id", "v", "--vm-name", "n"}).exit_code, 0);  // as root again
  for (const char* suffix : {"-wal", "-shm"}) {
    struct stat st {};
    ASSERT_EQ(::stat((db_ + suffix).c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, kNobody) << suffix;
  }

  const CliResult by_owner = run({"job", "add", "by-owner", "--vm-id", "v", "--vm-name", "n"}, {}, true, as_nobody);
  EXPECT_EQ(by_owner.exit_code, 0) << by_owner.err;
  const CliResult check = run({"check"}, {}, true, as_nobody);
  EXPECT_EQ(check.exit_code, 0) << check.err;
  const auto jobs = run_json({"job", "list"});
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs[1]["id"], "by-owner");
}

}  // namespace
}  // namespace nbdxm::test
