// One shared port, end to end: `nbdxm serve --shared-listener` runs one server (supervised like the others) that
// serves every export created with `--shared`, by name, with the real manager (direct backend), real nbdkit and
// real libnbd clients: it lists no names, refuses unknown ones, and revoking one export cuts only its connections.
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "manager_harness.hpp"
#include "nbdxm/export_counters.hpp"

namespace nbdxm::test {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

class ExportSharedTest : public ManagerTest {
 protected:
  // The exports' own ports are the first half of the block; the shared port is its last port, outside that range.
  ExportSharedTest()
      : shared_port_(ports_.high()),
        shared_manager_(db_path_, dir_.path(), ports_.range(PortBlock::kSize / 2),
                        {"--shared-listener", fmt::format("127.0.0.1:{}", ports_.high())}) {}

  int shared_port_;
  Manager shared_manager_;
};

struct NbdCloser {
  void operator()(nbd_handle* h) const { nbd_close(h); }
};

// The names NBD_OPT_LIST returns on the port (libnbd in option mode); throws with libnbd's words on failure.
std::vector<std::string> listed_names(int port) {
  std::unique_ptr<nbd_handle, NbdCloser> h(nbd_create());
  std::vector<std::string> names;
  nbd_list_callback collect{[](void* user, const char* name, const char*) {
                              static_cast<std::vector<std::string>*>(user)->push_back(name);
                              return 0;
                            },
                            &names, nullptr};
  if (nbd_set_opt_mode(h.get(), true) == -1 || nbd_connect_tcp(h.get(), "127.0.0.1", std::to_string(port).c_str()) ||
      nbd_opt_list(h.get(), collect) == -1) {
    throw std::runtime_error(nbd_get_error());
  }
  nbd_opt_abort(h.get());
  return names;
}

TEST_F(ExportSharedTest, ServesSharedExportsByNameListsNoneAndRevokingOneCutsOnlyItsClients) {
  shared_manager_.start();
  const auto first = add_volume("job-shared", "disk-1");
  const auto second = add_volume("job-shared", "disk-2");
  const auto own = add_volume("job-shared", "disk-3");
  const CliResult created =
      nbdxm({"--json", "export", "create", "--job", first.job_id, "--disk-id", first.disk_id, "--shared"});
  ASSERT_EQ(created.code, 0) << created.err;
  ASSERT_EQ(create(second, {"--shared"}).code, 0);
  ASSERT_EQ(create(own).code, 0);  // a tcp export with its own port
  const NbdExport a = export_of(first);
  const NbdExport b = export_of(second);
  const NbdExport c = export_of(own);
  EXPECT_EQ(a.transport, "shared");
  EXPECT_EQ(Json::parse(created.out)["uri"], fmt::format("nbd://127.0.0.1:{}/{}", shared_port_, a.export_name));

  // Both reached by name on the one port; the listing names none; an unknown name and a tcp export's name are
  // refused there.
  TcpClient client_a(shared_port_, a.export_name);
  TcpClient client_b(shared_port_, b.export_name);
  EXPECT_EQ(client_a.size(), kGiB);
  EXPECT_TRUE(listed_names(shared_port_).empty());
  EXPECT_TRUE(TcpClient::connect_error(shared_port_, "no-such-export").has_value());
  EXPECT_TRUE(TcpClient::connect_error(shared_port_, c.export_name).has_value());
  EXPECT_FALSE(TcpClient::connect_error(c.port, c.export_name).has_value());  // on its own port it is served

  // b keeps writing throughout a's revocation, with zero errors; a's connection fails once revoked.
  client_a.write(pattern(4096, 1), 0);
  std::atomic<bool> done{false};
  std::atomic<int> b_errors{0};
  std::atomic<int> b_writes{0};
  std::thread writer([&] {
    uint64_t offset = 0;
    while (!done) {
      if (client_b.try_write(pattern(65536, static_cast<uint32_t>(offset)), offset) != 0) ++b_errors;
      ++b_writes;
      offset = (offset + 65536) % (64 * kMiB);
    }
  });
  const CliResult revoked = nbdxm({"export", "revoke", a.export_name});
  EXPECT_EQ(revoked.code, 0) << revoked.err;
  int a_error = 0;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (a_error == 0 && std::chrono::steady_clock::now() < deadline) {
    a_error = client_a.try_write(pattern(4096, 2), 0);
    if (a_error == 0) std::this_thread::sleep_for(10ms);
  }
  const int writes_at_cut = b_writes;
  while (b_writes < writes_at_cut + 50 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
  done = true;
  writer.join();
  EXPECT_NE(a_error, 0);
  EXPECT_EQ(b_errors, 0);
  EXPECT_GE(b_writes, writes_at_cut + 50);
  EXPECT_TRUE(TcpClient::connect_error(shared_port_, a.export_name).has_value());  // a new connect is refused too
  EXPECT_EQ(client_b.read(65536, 0), pattern(65536, 0));
  EXPECT_EQ(read_file(second.path, 0, 65536), pattern(65536, 0));
}

// How many export counter files (<run-dir>/counters/<id>-<created>.bin) the process has mapped.
int mapped_counter_files(pid_t pid) {
  std::ifstream maps(fmt::format("/proc/{}/maps", pid));
  int count = 0;
  for (std::string line; std::getline(maps, line);) {
    if (line.find("/run/counters/") != std::string::npos && line.find(".bin") != std::string::npos) ++count;
  }
  return count;
}

// The shared server serves one export life after another for as long as the manager runs: it maps a life's counter
// file while the life has a connection, and never keeps the mapping of a life that ended.
TEST_F(ExportSharedTest, TheSharedServerKeepsNoCounterMappingOfAnEndedExport) {
  shared_manager_.start();
  constexpr int kExports = 3;
  std::vector<NbdExport> exports;
  for (int i = 1; i <= kExports; ++i) {
    const auto volume = add_volume("job-shared", fmt::format("disk-{}", i));
    ASSERT_EQ(create(volume, {"--shared"}).code, 0);
    exports.push_back(export_of(volume));
  }
  pid_t server = 0;
  for (const auto& s : servers_of(db_path_)) {
    if (s.port == shared_port_) server = s.process.pid;
  }
  ASSERT_NE(server, 0) << shared_manager_.log();
  {
    std::vector<std::unique_ptr<TcpClient>> clients;
    for (const auto& e : exports) {
      clients.push_back(std::make_unique<TcpClient>(shared_port_, e.export_name));
      clients.back()->write(pattern(4096, 1), 0);
    }
    EXPECT_EQ(mapped_counter_files(server), kExports);  // one mapping per life with a connection
  }                                                     // the clients disconnect
  for (const auto& e : exports) ASSERT_EQ(nbdxm({"export", "revoke", e.export_name}).code, 0);
  EXPECT_TRUE(wait_until([&] { return mapped_counter_files(server) == 0; }, 30s))
      << mapped_counter_files(server) << " counter files still mapped";
}

// An export's own server, by contrast, serves one life: it keeps that life's counter file mapped between connections,
// so that a connect maps nothing (see ExportConnector::counters_of).
TEST_F(ExportSharedTest, AnExportsOwnServerKeepsItsCounterFileMappedBetweenConnections) {
  manager_.start();
  const auto volume = add_volume("job-own", "disk-1");
  ASSERT_EQ(create(volume).code, 0);  // its handshake is the first connection
  const NbdExport e = export_of(volume);
  const auto server = server_of(e);
  ASSERT_TRUE(server.has_value()) << manager_.log();
  { TcpClient(e.port, e.export_name).write(pattern(4096, 1), 0); }
  { TcpClient(e.port, e.export_name).write(pattern(4096, 2), 0); }
  // The server has closed all three connections (its own count), and still maps the file once.
  const auto counters =
      ExportCounters::open_read_only(ExportCounters::path(dir_.file("run/counters"), e.id, e.created_at));
  ASSERT_NE(counters, nullptr);
  ASSERT_TRUE(wait_until(
      [&] {
        const auto now = counters->counts();
        return now.connections_total == 3 && now.connections_open == 0;
      },
      30s));
  EXPECT_EQ(mapped_counter_files(server->pid), 1);
}

TEST_F(ExportSharedTest, SharedWithTlsIsRefusedWithOneLine) {
  shared_manager_.start();
  const auto volume = add_volume("job-shared", "disk-1");
  const CliResult tls = create(volume, {"--shared", "--tls"});
  EXPECT_EQ(tls.code, 2);
  EXPECT_EQ(tls.err,
            "nbdxm: --shared cannot be used with TLS: one server serves every shared export, and nbdkit 1.32 does not "
            "tell it which pre-shared key a client used, so it cannot hold each export to its own key; use "
            "--transport tcp or unix for a TLS export, or --no-tls\n");
  EXPECT_TRUE(store_.list_exports({}).empty());
}

TEST_F(ExportSharedTest, SharedWithoutASharedListenerIsRefused) {
  manager_.start();  // no shared listener
  const auto volume = add_volume("job-shared", "disk-1");
  const CliResult none = create(volume, {"--shared"});
  EXPECT_EQ(none.code, 6) << none.err;
  EXPECT_NE(none.err.find("the running manager has no shared listener"), std::string::npos) << none.err;
  EXPECT_TRUE(store_.list_exports({}).empty());
}

}  // namespace
}  // namespace nbdxm::test
