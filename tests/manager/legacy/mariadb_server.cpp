#include "mariadb_server.hpp"

#include <fmt/format.h>
#include <mysql.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace nbdxm::test {
namespace {

constexpr const char* kInstallDb = "/usr/bin/mariadb-install-db";
constexpr const char* kServer = "/usr/sbin/mariadbd";
MariadbServer* g_instance = nullptr;
std::string g_unavailable = "the MariaDB test server was not set up";

bool can_connect(const std::string& socket) {
  MYSQL* m = mysql_init(nullptr);
  const bool ok = mysql_real_connect(m, "localhost", "root", nullptr, nullptr, 0, socket.c_str(), 0) != nullptr;
  mysql_close(m);
  return ok;
}

}  // namespace

std::string read_text_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

MariadbServer* MariadbServer::instance() { return g_instance; }
const std::string& MariadbServer::unavailable_reason() { return g_unavailable; }

void MariadbServer::SetUp() {
  if (access(kInstallDb, X_OK) != 0 || access(kServer, X_OK) != 0) {
    g_unavailable = "MariaDB is not installed (Debian package mariadb-server: scripts/install-deps installs it)";
    return;
  }
  char pattern[] = "/tmp/nbdxm-mariadb-XXXXXX";
  dir_ = mkdtemp(pattern);
  socket_ = dir_ + "/mysqld.sock";
  const std::string install = fmt::format(
      "{} --no-defaults --datadir={}/data --auth-root-authentication-method=normal --skip-test-db "
      "--user=root > {}/install.log 2>&1",
      kInstallDb, dir_, dir_);
  if (std::system(install.c_str()) != 0) {
    g_unavailable = "mariadb-install-db failed: " + read_text_file(dir_ + "/install.log");
    return;
  }
  pid_ = fork();
  if (pid_ == 0) {
    const std::string datadir = "--datadir=" + dir_ + "/data";
    const std::string socket = "--socket=" + socket_;
    const std::string pid_file = "--pid-file=" + dir_ + "/mysqld.pid";
    const std::string log = "--log-error=" + dir_ + "/error.log";
    execl(kServer, kServer, "--no-defaults", datadir.c_str(), socket.c_str(), "--skip-networking", pid_file.c_str(),
          log.c_str(), "--user=root", "--innodb-buffer-pool-size=64M", "--skip-log-bin", static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!can_connect(socket_)) {
    if (waitpid(pid_, nullptr, WNOHANG) == pid_ || std::chrono::steady_clock::now() > deadline) {
      pid_ = -1;
      g_unavailable = "mariadbd did not start: " + read_text_file(dir_ + "/error.log");
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  g_instance = this;
}

void MariadbServer::stop() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
}

void MariadbServer::TearDown() {
  g_instance = nullptr;
  stop();
  if (!dir_.empty()) std::filesystem::remove_all(dir_);
}

std::string MariadbServer::uri(const std::string& database) const {
  return fmt::format("mariadb://root@/{}?socket={}", database, socket_);
}

void MariadbServer::execute(const std::string& database, const std::string& sql) const {
  MYSQL* m = mysql_init(nullptr);
  ASSERT_NE(mysql_real_connect(m, "localhost", "root", nullptr, database.empty() ? nullptr : database.c_str(), 0,
                               socket_.c_str(), CLIENT_MULTI_STATEMENTS),
            nullptr)
      << mysql_error(m);
  int status = mysql_real_query(m, sql.data(), sql.size());
  while (status == 0) {
    if (MYSQL_RES* result = mysql_store_result(m)) mysql_free_result(result);
    status = mysql_next_result(m);
  }
  const std::string error = status > 0 ? mysql_error(m) : "";
  mysql_close(m);
  ASSERT_EQ(error, "") << "in " << database;
}

void MariadbServer::load(const std::string& database, const std::vector<std::string>& fixtures,
                         const std::string& device_root) const {
  execute("", fmt::format("DROP DATABASE IF EXISTS `{0}`; CREATE DATABASE `{0}`", database));
  execute(database, read_text_file(std::string(NBDXM_LEGACY_DATA) + "/legacy_schema.sql"));
  for (const auto& fixture : fixtures)
    execute(database, read_text_file(std::string(NBDXM_LEGACY_DATA) + "/" + fixture));
  if (!device_root.empty()) {
    execute(database, fmt::format("UPDATE device_mappings SET device_path = CONCAT('{0}', device_path) "
                                  "WHERE device_path LIKE '/dev/%'; UPDATE nbd_exports SET device_path = "
                                  "CONCAT('{0}', device_path) WHERE device_path LIKE '/dev/%'",
                                  device_root));
  }
}

}  // namespace nbdxm::test
