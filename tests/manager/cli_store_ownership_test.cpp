// The service user owns the store; root may write it too (packaging, an operator). A store written by root must
// stay writable by its owner: root-created -wal and -shm files are given to the store file's owner.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "cli_store_support.hpp"

namespace nbdxm::test {
namespace {

constexpr uid_t kNobody = 65534;

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
