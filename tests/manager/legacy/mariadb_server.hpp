#pragma once
// A private MariaDB server for the import tests, from Debian's mariadb-server: its own data directory and socket
// under a temporary directory, no network (--skip-networking), no system service touched. Started once per test
// binary (a GoogleTest environment) and stopped, with its directory removed, when the binary ends.
#include <gtest/gtest.h>

#include <sys/types.h>
#include <optional>
#include <string>

namespace nbdxm::test {

class MariadbServer : public ::testing::Environment {
 public:
  void SetUp() override;
  void TearDown() override;

  // The running server, or nullptr with the reason the tests skip (MariaDB is not installed).
  static MariadbServer* instance();
  static const std::string& unavailable_reason();

  const std::string& socket() const { return socket_; }
  std::string uri(const std::string& database) const;  // mariadb:///DATABASE?socket=...
  // Runs SQL (several statements) as root; fails the test on error.
  void execute(const std::string& database, const std::string& sql) const;
  // Drops and creates database, loads the legacy schema and then each fixture file (tests/manager/legacy/data).
  // With device_root, device paths under /dev/ become device_root/dev/... (files the test creates), so that
  // `nbdxm check` finds the devices on a machine that has no /dev/vdb.
  void load(const std::string& database, const std::vector<std::string>& fixtures,
            const std::string& device_root = "") const;

 private:
  void stop();

  std::string dir_;
  std::string socket_;
  pid_t pid_ = -1;
};

std::string read_text_file(const std::string& path);

}  // namespace nbdxm::test
