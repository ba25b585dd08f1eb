#pragma once
// Real parts for the plugin's tests: temporary folders, sparse files, loop devices, a state store with exports, an
// nbdkit process loading the built plugin, a libnbd client, and an inotify watch proving what was (not) opened.
#include <gtest/gtest.h>
#include <libnbd.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nbdxm/child_process.hpp"
#include "nbdxm/database.hpp"
#include "nbdxm/export_store.hpp"
#include "store_test_support.hpp"  // TempDir, create_volume_file, LoopDevice

namespace nbdxm::test {

constexpr int64_t kMiB = int64_t{1} << 20;

int64_t file_size(const std::string& path);
std::string read_at(const std::string& path, uint64_t offset, size_t length);
// [offset, length) of every region holding data (SEEK_DATA/SEEK_HOLE).
std::vector<std::pair<uint64_t, uint64_t>> data_regions(const std::string& path);
// The bytes of `path` are zero everywhere except at the given (offset, bytes) writes, which match exactly.
::testing::AssertionResult holds_exactly(const std::string& path,
                                         const std::vector<std::pair<uint64_t, std::string>>& writes);
// Two files of the same size hold the same bytes. Reads only where either holds data (holes read as zeroes), so
// comparing sparse 1 GiB images costs what their data costs.
::testing::AssertionResult same_content(const std::string& a, const std::string& b);
std::string pattern(size_t length, char seed);
// Runs a program to completion; its output is kept in `output` (stdout and stderr together).
int run(const std::vector<std::string>& argv, std::string* output = nullptr);

// A state store with helpers that record, through ExportStore, everything an export needs.
class TestStore {
 public:
  explicit TestStore(const std::string& path);
  ExportStore& store() { return store_; }
  Database& database() { return db_; }
  const std::string& path() const { return path_; }

  struct Spec {
    std::string name;
    std::string device_path;
    int64_t size = kGiB;
    bool correlation = false;
    std::string status = "active";
  };
  // Job, device mapping, disk, link and export; returns the export as the store holds it.
  NbdExport add(const Spec& spec);

 private:
  std::string path_;
  Database db_;
  ExportStore store_;
  int next_ = 1;
};

// An nbdkit process (foreground, Unix socket) loading the built plugin.
class NbdkitServer {
 public:
  // `launcher`: a command that runs nbdkit (strace, say); nbdkit's environment is passed through env(1) after it.
  NbdkitServer(const TempDir& dir, const std::string& db, std::vector<std::string> plugin_params = {},
               std::vector<std::string> nbdkit_options = {}, std::vector<std::string> launcher = {});
  ~NbdkitServer();
  NbdkitServer(const NbdkitServer&) = delete;
  NbdkitServer& operator=(const NbdkitServer&) = delete;

  const std::string& socket() const { return socket_; }
  std::string uri(const std::string& export_name) const;
  pid_t pid() const { return process_->pid(); }
  std::string log() const;
  // Stops the server gracefully (SIGTERM: nbdkit closes every connection, so close-time syncs are done).
  void stop();

  // Environment for running nbdkit with the plugin (sanitizer runtime preloaded in sanitizer builds).

 private:
  std::string socket_;
  std::string pidfile_;
  bool launched_ = false;  // through a launcher: nbdkit's pid is not process_'s
  std::string log_;
  std::unique_ptr<ChildProcess> process_;
};

// A libnbd connection. Throws std::runtime_error with libnbd's message when the connection fails.
class NbdClient {
 public:
  NbdClient(const std::string& socket, const std::string& export_name, bool strict = true);
  ~NbdClient();
  NbdClient(const NbdClient&) = delete;
  NbdClient& operator=(const NbdClient&) = delete;
  // The error message when connecting fails, or nullopt when it succeeds.
  static std::optional<std::string> connect_error(const std::string& socket, const std::string& export_name);

  nbd_handle* get() { return h_; }
  int64_t size();
  void write(const std::string& data, uint64_t offset, uint32_t flags = 0);
  std::string read(size_t length, uint64_t offset);
  // 0, or the errno of the failure.
  int try_write(const std::string& data, uint64_t offset, uint32_t flags = 0);
  int try_read(size_t length, uint64_t offset);
  int try_zero(uint64_t count, uint64_t offset, uint32_t flags = 0);
  int try_trim(uint64_t count, uint64_t offset, uint32_t flags = 0);
  int try_flush();
  // NBD_CMD_DISC, then close.
  void disconnect();

 private:
  nbd_handle* h_ = nullptr;
};

// Counts opens of the given paths (inotify IN_OPEN) from construction on.
class OpenWatch {
 public:
  explicit OpenWatch(const std::vector<std::string>& paths);
  ~OpenWatch();
  OpenWatch(const OpenWatch&) = delete;
  OpenWatch& operator=(const OpenWatch&) = delete;
  int opens();

 private:
  int fd_ = -1;
  int count_ = 0;
};

}  // namespace nbdxm::test
