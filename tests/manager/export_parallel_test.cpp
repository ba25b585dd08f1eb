// Parallel creators: allocation of ports and names is safe across processes.
#include <gtest/gtest.h>

#include <set>

#include "manager_harness.hpp"

namespace nbdxm::test {
namespace {

using namespace std::chrono_literals;

class ExportParallelTest : public ManagerTest {};

// Ten exports each are enough: every create waits for its server (a second or more under the sanitizers) while the
// other three processes keep allocating, so each of the 40 allocations meets the others' transactions; more rounds
// would only repeat the same overlap.
TEST_F(ExportParallelTest, FourProcessesCreating10ExportsEachGet40DistinctPortsAndNames) {
  constexpr int kProcesses = 4;
  constexpr int kEach = 10;
  manager_.start();
  for (int p = 0; p < kProcesses; ++p) {
    for (int i = 0; i < kEach; ++i) add_volume(fmt::format("job-{}", p), fmt::format("disk-{}", i));
  }

  // Four shells, each creating its exports one after the other, all at once.
  std::vector<ChildProcess> creators;
  for (int p = 0; p < kProcesses; ++p) {
    const std::string script = fmt::format(
        "for i in $(seq 0 {}); do \"$0\" --db \"$1\" export create --job job-{} --disk-id disk-$i --timeout 60 || "
        "exit 1; done",
        kEach - 1, p);
    SpawnOptions options;
    options.argv = {"sh", "-c", script, NBDXM_BINARY, db_path_};
    options.stdout_path = dir_.file(fmt::format("creator-{}.out", p));
    options.stderr_path = dir_.file(fmt::format("creator-{}.err", p));
    options.extra_env = nbdkit_environment();
    options.unset_env = nbdkit_unset_environment();
    creators.push_back(ChildProcess::spawn(options));
  }
  for (int p = 0; p < kProcesses; ++p) {
    const auto status = creators[p].wait(240s);
    ASSERT_TRUE(status.has_value());
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
        << read_file(dir_.file(fmt::format("creator-{}.err", p)));
  }

  const auto exports = store_.live_exports();
  ASSERT_EQ(exports.size(), static_cast<size_t>(kProcesses * kEach));
  std::set<int> ports;
  std::set<std::string> names;
  for (const auto& e : exports) {
    EXPECT_EQ(e.status, "active") << e.export_name;
    EXPECT_GE(e.port, ports_.low());
    EXPECT_LE(e.port, ports_.high());
    ports.insert(e.port);
    names.insert(e.export_name);
  }
  EXPECT_EQ(ports.size(), exports.size());
  EXPECT_EQ(names.size(), exports.size());
  // Exactly one server per export, each listening on its own port.
  const auto servers = servers_of(db_path_);
  EXPECT_EQ(servers.size(), exports.size());
  for (const auto& s : servers) {
    const auto e = store_.get_export(s.export_name);
    EXPECT_EQ(s.port, e.port) << s.export_name;
  }
}

}  // namespace
}  // namespace nbdxm::test
