#pragma once
// Real parts for the manager's end-to-end tests: the built `nbdxm` binary (daemon and CLI), real nbdkit servers
// loading the built plugin, real libnbd / nbdcopy / nbdinfo clients over TCP, a real store file and sparse files
// as volumes. Every test gets its own directory and its own block of ports (locked, so ctest -j never collides),
// and every server it started is stopped when it ends, also when it fails (servers outlive the manager by design).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <libnbd.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nbdxm/child_process.hpp"
#include "nbdxm/database.hpp"
#include "nbdxm/export_store.hpp"
#include "nbdxm/file_descriptor.hpp"
#include "nbdxm/process_identity.hpp"
#include "store_test_support.hpp"

namespace nbdxm::test {

constexpr int64_t kMiB = int64_t{1} << 20;

// A block of kSize ports that no other test process holds at the same time (an flock per block).
class PortBlock {
 public:
  static constexpr int kSize = 128;
  PortBlock();
  int low() const { return low_; }
  int high() const { return low_ + kSize - 1; }
  std::string range(int count = kSize) const;  // "LOW-HIGH" of the first count ports

 private:
  FileDescriptor lock_;
  int low_ = 0;
};

struct CliResult {
  int code = -1;
  std::string out;
  std::string err;
};

// Runs `nbdxm --db DB ARGS...` to completion.
CliResult run_nbdxm(const std::string& db, const std::vector<std::string>& args);
// Runs any program to completion; stdout and stderr together in *output.
int run_program(const std::vector<std::string>& argv, std::string* output = nullptr);

// `nbdxm serve` on a store, with the build's plugin, regular files allowed and an empty configuration (unless
// extra_args name a --config; an empty port_range leaves --port-range to it).
class Manager {
 public:
  Manager(std::string db, std::string dir, std::string port_range, std::vector<std::string> extra_args = {});
  ~Manager();
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;

  void start();   // and wait until it reports ready
  void launch();  // start without waiting (for a manager expected to fail)
  void add_env(std::string assignment) { extra_env_.push_back(std::move(assignment)); }
  void run_through(std::vector<std::string> wrapper) { wrapper_ = std::move(wrapper); }  // e.g. a seccomp helper
  void stop();                                                                           // SIGTERM, as systemd stops it
  void kill();                                                                           // SIGKILL: a crash
  bool running();
  pid_t pid() const;
  std::string log() const;
  std::vector<std::string> argv() const;
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);  // exit status

 private:
  std::string db_;
  std::string dir_;
  std::string port_range_;
  std::vector<std::string> extra_args_;
  std::vector<std::string> extra_env_;
  std::vector<std::string> wrapper_;
  std::optional<ChildProcess> process_;
  int starts_ = 0;
};

// A server of the store found in /proc: its command line names the store and the export; its port is that of the
// listening socket it was handed as fd 3 (socket activation).
struct ServerProcess {
  ProcessIdentity process;
  std::string export_name;
  int port = 0;
};
// The port of the socket listening as fd 3 of the process; 0 when there is none.
int listening_port(pid_t pid);
inline bool owns_listener(pid_t pid, int port) { return port != 0 && listening_port(pid) == port; }
std::vector<ServerProcess> servers_of(const std::string& db);
// Stops every nbdkit server of the store when destroyed.
class ServerReaper {
 public:
  explicit ServerReaper(std::string db) : db_(std::move(db)) {}
  ~ServerReaper();
  ServerReaper(const ServerReaper&) = delete;
  ServerReaper& operator=(const ServerReaper&) = delete;

 private:
  std::string db_;
};

// A libnbd connection over TCP. Throws std::runtime_error with libnbd's message when connecting fails.
class TcpClient {
 public:
  TcpClient(int port, const std::string& export_name);
  ~TcpClient();
  TcpClient(const TcpClient&) = delete;
  TcpClient& operator=(const TcpClient&) = delete;
  static std::optional<std::string> connect_error(int port, const std::string& export_name);

  int64_t size();
  void write(const std::string& data, uint64_t offset);
  std::string read(size_t length, uint64_t offset);
  int try_write(const std::string& data, uint64_t offset);  // 0 or the errno of the failure
  void disconnect();

 private:
  nbd_handle* h_ = nullptr;
};

std::string pattern(size_t length, uint32_t seed);
std::string read_file(const std::string& path, uint64_t offset = 0, size_t length = SIZE_MAX);
void write_file(const std::string& path, const std::string& data, uint64_t offset = 0);
bool files_equal(const std::string& a, const std::string& b, uint64_t length);
// Whether some program could bind the port on 127.0.0.1 now.
bool port_bindable(int port);

// A test with its own directory, store, port block and manager (not started), and servers stopped at the end.
class ManagerTest : public ::testing::Test {
 protected:
  ManagerTest();

  struct Volume {
    std::string job_id;
    std::string disk_id;
    std::string uuid;
    std::string path;
  };
  // A disk of the job (created when new) linked to a new sparse file-backed 'oma' volume of `size_gb` GiB.
  Volume add_volume(const std::string& job_id, const std::string& disk_id, int64_t size_gb = 1);
  // `nbdxm export create`; the export (from the store) when it succeeded.
  CliResult create(const Volume& volume, const std::vector<std::string>& extra = {});
  NbdExport export_of(const Volume& volume);
  // The server process of the export while the store records its server running (found in /proc by its command
  // line and listening socket).
  std::optional<ProcessIdentity> server_of(const NbdExport& e);
  std::vector<ServerProcess> servers_for(const std::string& export_name);  // every server of it, in /proc
  bool served(const std::string& export_name) { return !servers_for(export_name).empty(); }
  CliResult nbdxm(const std::vector<std::string>& args) { return run_nbdxm(db_path_, args); }

  TempDir dir_;
  std::string db_path_;
  Database db_;
  ExportStore store_;
  PortBlock ports_;
  ServerReaper reaper_;
  Manager manager_;
  int next_volume_ = 1;
};

}  // namespace nbdxm::test
