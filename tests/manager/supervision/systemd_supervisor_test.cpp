// SystemdSupervisor's parts that need no running systemd: unit names (checked against systemd's own systemd-escape)
// and the refusals of --supervisor systemd where it cannot run. The backend itself runs under a real systemd in
// tests/packaging/systemd-container (tests/packaging/systemd-supervision).
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "nbdxm/error.hpp"
#include "systemd_supervisor.hpp"

namespace nbdxm::supervision {
namespace {

// systemd-escape's output for `instance` (systemd's own unit-name escaping).
std::string systemd_escape(const std::string& instance) {
  const std::string command = "systemd-escape -- '" + instance + "'";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
  std::string out;
  std::array<char, 256> buffer{};
  while (pipe && fgets(buffer.data(), buffer.size(), pipe.get()) != nullptr) out += buffer.data();
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

TEST(SystemdSupervisorNames, InstancesAreEscapedAsSystemdEscapesThem) {
  if (std::system("command -v systemd-escape >/dev/null") != 0) GTEST_SKIP() << "systemd-escape is not installed";
  for (const std::string instance :
       {"127.0.0.1:10810", "[::1]:10810", "0.0.0.0:10999", "[fe80::1%lo]:10811", "192.168.1.20:10810"}) {
    SCOPED_TRACE(instance);
    EXPECT_EQ(SystemdSupervisor::escape_instance(instance), systemd_escape(instance));
    EXPECT_EQ(SystemdSupervisor::unescape_instance(SystemdSupervisor::escape_instance(instance)), instance);
  }
}

TEST(SystemdSupervisorNames, UnitsAreTheTemplatesInstances) {
  EXPECT_EQ(SystemdSupervisor::service_unit("127.0.0.1:10810"), "nbdxm-export@127.0.0.1:10810.service");
  EXPECT_EQ(SystemdSupervisor::socket_unit("[::1]:10810"), "nbdxm-export@\\x5b::1\\x5d:10810.socket");
}

ServerSettings settings_with_run_dir(const std::string& run_dir) {
  ServerSettings settings;
  settings.run_dir = run_dir;
  settings.db_path = "/var/lib/nbdxm/state.db";
  settings.listen_address = "127.0.0.1";
  return settings;
}

// Expects make_systemd_supervisor to refuse with a usage error whose message contains `words` and the fix.
void expect_refusal(const ServerSettings& settings, const std::string& words) {
  try {
    make_systemd_supervisor(settings, 10810);
    FAIL() << "make_systemd_supervisor accepted run dir " << settings.run_dir;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ExitCode::usage);
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--supervisor direct"), std::string::npos) << e.what();
  }
}

TEST(SystemdSupervisorFactory, RefusesWhereItCannotRun) {
  if (!std::filesystem::is_directory("/run/systemd/system")) {
    // This machine kind: systemd is not PID 1.
    expect_refusal(settings_with_run_dir(SystemdSupervisor::kRunDir), "systemd is not PID 1");
    EXPECT_FALSE(systemd_available());
  } else {
    // Under systemd: the units read their specs from /run/nbdxm only.
    expect_refusal(settings_with_run_dir("/tmp/elsewhere"), "--run-dir /run/nbdxm");
  }
}

}  // namespace
}  // namespace nbdxm::supervision
