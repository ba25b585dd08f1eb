// Unix-socket exports, end to end: `export create --transport unix` with the real manager (direct backend), real
// nbdkit servers and real clients (nbdinfo, libnbd) run as other users with setpriv: only members of nbdxm-clients
// reach the socket (mode 0660), and a uid/gid allowlist (`--allow-from uid:N`) is enforced by the export's server.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "manager_harness.hpp"

namespace nbdxm::test {
namespace {

using Json = nlohmann::json;

constexpr const char* kClientsGroup = "nbdxm-clients";

// A user and the group nbdxm-clients for one test, removed again when it ends (also when it fails): the group only
// if this guard created it. The guards of concurrent tests take turns (an flock), so that one test never removes the
// group while another uses it.
class TestAccounts {
 public:
  TestAccounts() : lock_(::open("/tmp/nbdxm-unix-export-tests.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
    if (!lock_.valid() || ::flock(lock_.get(), LOCK_EX) != 0) throw std::runtime_error("cannot lock the accounts");
    if (::getgrnam(kClientsGroup) == nullptr) {
      if (run_program({"groupadd", "--system", kClientsGroup}) != 0) throw std::runtime_error("groupadd failed");
      created_group_ = true;
    }
    user_ = fmt::format("nbdxm-t{}", ::getpid());
    if (run_program(
            {"useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", user_}) != 0) {
      throw std::runtime_error("useradd failed");
    }
    const passwd* pw = ::getpwnam(user_.c_str());
    if (pw == nullptr) throw std::runtime_error("the new user is not found");
    uid_ = pw->pw_uid;
    gid_ = pw->pw_gid;
    clients_gid_ = ::getgrnam(kClientsGroup)->gr_gid;
  }
  ~TestAccounts() {
    run_program({"userdel", user_});
    run_program({"groupdel", user_});  // its own group, if userdel left it
    if (created_group_) run_program({"groupdel", kClientsGroup});
  }
  TestAccounts(const TestAccounts&) = delete;
  TestAccounts& operator=(const TestAccounts&) = delete;

  const std::string& user() const { return user_; }
  uid_t uid() const { return uid_; }
  gid_t clients_gid() const { return clients_gid_; }
  // The argv prefix that runs a program as the test user: a member of nbdxm-clients or not.
  std::vector<std::string> as_user(bool member) const {
    return {"setpriv", fmt::format("--reuid={}", uid_), fmt::format("--regid={}", gid_),
            member ? fmt::format("--groups={}", clients_gid_) : "--clear-groups"};
  }

 private:
  FileDescriptor lock_;
  bool created_group_ = false;
  std::string user_;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  gid_t clients_gid_ = 0;
};

class ExportUnixTest : public ManagerTest {
 protected:
  // The test's directories must be passable for the test user (mkdtemp makes them 0700).
  void open_directories() {
    ::chmod(dir_.path().c_str(), 0711);
    ::chmod((dir_.path() + "/run").c_str(), 0711);
  }
  Json create_json(const Volume& volume, const std::vector<std::string>& extra) {
    std::vector<std::string> args{"--json", "export", "create", "--job", volume.job_id, "--disk-id", volume.disk_id};
    args.insert(args.end(), extra.begin(), extra.end());
    const CliResult r = nbdxm(args);
    EXPECT_EQ(r.code, 0) << r.err;
    return r.code == 0 ? Json::parse(r.out) : Json::object();
  }
  // nbdinfo --size URI run through `prefix` (setpriv); its exit status, its words in *output.
  static int nbdinfo_as(const std::vector<std::string>& prefix, const std::string& uri, std::string* output) {
    std::vector<std::string> argv = prefix;
    argv.insert(argv.end(), {"nbdinfo", "--size", uri});
    return run_program(argv, output);
  }

  TestAccounts accounts_;
};

TEST_F(ExportUnixTest, OnlyMembersOfTheClientsGroupReachTheSocket) {
  manager_.start();
  open_directories();
  const auto volume = add_volume("job-unix", "disk-1");
  const Json out = create_json(volume, {"--transport", "unix"});
  ASSERT_FALSE(out.empty());
  const NbdExport e = export_of(volume);
  EXPECT_EQ(e.transport, "unix");
  const std::string socket = dir_.path() + "/run/exports/" + e.export_name + ".sock";
  EXPECT_EQ(out["transport"], "unix");
  EXPECT_EQ(out["socket"], socket);
  EXPECT_TRUE(out["port"].is_null());
  const std::string uri = fmt::format("nbd+unix:///{}?socket={}", e.export_name, socket);
  EXPECT_EQ(out["uri"], uri);

  // The socket: mode 0660, group nbdxm-clients.
  struct stat st {};
  ASSERT_EQ(::stat(socket.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_gid, accounts_.clients_gid());

  // `export show --json` and `export list --json` say where and how to reach it.
  const CliResult shown = nbdxm({"--json", "export", "show", e.export_name});
  ASSERT_EQ(shown.code, 0) << shown.err;
  const Json show = Json::parse(shown.out);
  EXPECT_EQ(show["uri"], uri);
  EXPECT_EQ(show["transport"], "unix");
  const CliResult listed = nbdxm({"--json", "export", "list"});
  ASSERT_EQ(listed.code, 0) << listed.err;
  const Json row = Json::parse(listed.out).at(0);
  EXPECT_EQ(row["uri"], uri);
  EXPECT_EQ(row["tls"], false);
  EXPECT_TRUE(row.contains("allow_from"));
  EXPECT_TRUE(row["allow_from"].is_null());

  // A user outside nbdxm-clients cannot open the socket; a member reads the volume's size.
  std::string words;
  EXPECT_NE(nbdinfo_as(accounts_.as_user(false), uri, &words), 0);
  EXPECT_NE(words.find("Permission denied"), std::string::npos) << words;
  words.clear();
  EXPECT_EQ(nbdinfo_as(accounts_.as_user(true), uri, &words), 0) << words;
  EXPECT_EQ(std::stoll(words), kGiB);
}

TEST_F(ExportUnixTest, UidRuleAdmitsOnlyThatUid) {
  manager_.start();
  open_directories();
  const auto volume = add_volume("job-unix", "disk-1");
  const Json out = create_json(volume, {"--transport", "unix", "--allow-from", "uid:" + accounts_.user()});
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out["allow_from"], fmt::format("uid:{}", accounts_.uid()));  // names are recorded as numbers
  const NbdExport e = export_of(volume);
  EXPECT_EQ(e.allow_peers, fmt::format("uid:{}", accounts_.uid()));
  EXPECT_FALSE(e.allow_from);
  const std::string uri = out["uri"].get<std::string>();

  // The listed uid, a member of nbdxm-clients, is served; root, who can open any socket, is refused by the rule.
  std::string words;
  EXPECT_EQ(nbdinfo_as(accounts_.as_user(true), uri, &words), 0) << words;
  words.clear();
  EXPECT_NE(nbdinfo_as({}, uri, &words), 0) << words;
  const std::string log =
      read_file(dir_.path() + "/run/servers/" + dir_.path() + "/run/exports/" + e.export_name + ".sock.log");
  EXPECT_NE(log.find("client uid 0 gid 0 refused: not in allow-from uid:" + std::to_string(accounts_.uid())),
            std::string::npos)
      << log;
}

// Refused before anything is served: no accounts, so it does not queue behind the other tests' accounts lock.
class ExportUnixRefusalTest : public ManagerTest {};

TEST_F(ExportUnixRefusalTest, AllowlistOfTheOtherTransportIsRefusedWithOneLine) {
  manager_.start();
  const auto volume = add_volume("job-unix", "disk-1");
  const CliResult cidr = create(volume, {"--transport", "unix", "--allow-from", "127.0.0.1"});
  EXPECT_EQ(cidr.code, 2);
  EXPECT_EQ(cidr.err,
            "nbdxm: --allow-from 127.0.0.1 lists addresses, which a unix export has no use for; give uid:N or gid:N "
            "rules (numbers or names), e.g. gid:nbdxm-clients\n");
  const CliResult peers = create(volume, {"--transport", "tcp", "--allow-from", "uid:0"});
  EXPECT_EQ(peers.code, 2);
  EXPECT_EQ(peers.err,
            "nbdxm: --allow-from uid:0 lists uid/gid rules, which only a unix export can check; give addresses for a "
            "tcp export, or use --transport unix\n");
  const CliResult port = create(volume, {"--transport", "unix", "--port", std::to_string(ports_.low())});
  EXPECT_EQ(port.code, 2);
  EXPECT_NE(port.err.find("--port is for tcp exports"), std::string::npos) << port.err;
  EXPECT_TRUE(store_.list_exports({}).empty());  // nothing was created
}

TEST_F(ExportUnixTest, ServeTransportIsTheDefaultAndUnixExportsTakeNoPort) {
  Manager unix_manager(db_path_, dir_.path(), ports_.range(), {"--transport", "unix"});
  unix_manager.start();
  const auto first = add_volume("job-unix", "disk-1");
  const auto second = add_volume("job-unix", "disk-2");
  ASSERT_EQ(create(first).code, 0);
  ASSERT_EQ(create(second).code, 0);  // both record no port of their own: no conflict
  EXPECT_EQ(export_of(first).transport, "unix");
  EXPECT_EQ(export_of(second).transport, "unix");
  const CliResult tcp = create(add_volume("job-unix", "disk-3"), {"--transport", "tcp"});
  ASSERT_EQ(tcp.code, 0) << tcp.err;
  NbdExport third = store_.list_exports({}).back();
  EXPECT_EQ(third.transport, "tcp");
  EXPECT_EQ(third.port, ports_.low());  // the first port of the range: the unix exports hold none
}

}  // namespace
}  // namespace nbdxm::test
