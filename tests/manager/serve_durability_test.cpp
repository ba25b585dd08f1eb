// Durability through the real manager, plugin and clients: a sync of an export's writes that fails (injected into
// the server with strace, or a thin volume that runs out of space) fails the export with the reason, `nbdxm check`
// reports it (exit 5) until it is acknowledged, and a new manager still shows it; write-through makes every write
// durable before its reply (the device's flush count rises per write), so a client and a server both killed right
// after the last reply leave every acknowledged byte on the device; the counters (`export show`) count what real
// clients did, rewrites covered once.
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "manager_harness.hpp"
#include "nbdxm/export_counters.hpp"

namespace nbdxm::test {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

// The pid of the process tracing `pid` (/proc/PID/status TracerPid), 0 when none.
pid_t tracer_of(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("TracerPid:", 0) == 0) return static_cast<pid_t>(std::stol(line.substr(10)));
  }
  return 0;
}

// strace attached to a running process, making every fdatasync of it fail with EIO (only those of `path`, when
// given); detached when destroyed.
class FdatasyncFailure {
 public:
  explicit FdatasyncFailure(pid_t pid, const std::string& path = "") : strace_(spawn(pid, path)) {
    if (!wait_until([&] { return tracer_of(pid) != 0; }, 10s)) throw std::runtime_error("strace did not attach");
  }
  ~FdatasyncFailure() { strace_.stop(5s); }

 private:
  static ChildProcess spawn(pid_t pid, const std::string& path) {
    SpawnOptions options;
    options.argv = {"strace",
                    "-f",
                    "-qq",
                    "-o",
                    "/dev/null",
                    "-e",
                    "trace=fdatasync",
                    "-e",
                    "inject=fdatasync:error=EIO",
                    "-p",
                    std::to_string(pid)};
    if (!path.empty()) options.argv.insert(options.argv.end(), {"-P", path});  // strace injects into traced calls only
    return ChildProcess::spawn(options);
  }

  ChildProcess strace_;
};

// A tmpfs of `size` mounted on `dir`, unmounted when destroyed.
class TmpfsMount {
 public:
  TmpfsMount(const std::string& dir, const std::string& size) {
    std::filesystem::create_directories(dir);
    std::string output;
    if (run_program({"mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", dir}, &output) != 0) {
      throw std::runtime_error("mount tmpfs: " + output);
    }
    dir_ = dir;
  }
  ~TmpfsMount() {
    if (!dir_.empty()) run_program({"umount", dir_});
  }
  TmpfsMount(const TmpfsMount&) = delete;
  TmpfsMount& operator=(const TmpfsMount&) = delete;

 private:
  std::string dir_;
};

// Field `index` (0-based) of /sys/block/<device>/stat: 6 is sectors written, 15 flushes completed.
uint64_t block_stat(const std::string& device, size_t index) {
  std::ifstream in("/sys/block/" + std::filesystem::path(device).filename().string() + "/stat");
  std::vector<uint64_t> fields;
  for (uint64_t value = 0; in >> value;) fields.push_back(value);
  if (fields.size() <= index) throw std::runtime_error("/sys/block/.../stat of " + device + " is too short");
  return fields[index];
}

// `length` bytes of the device from offset 0, read with O_DIRECT: what the device holds, not the page cache's copy.
std::string read_direct(const std::string& device, size_t length) {
  const FileDescriptor fd(::open(device.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC));
  if (!fd.valid()) throw std::runtime_error("cannot open " + device + " with O_DIRECT");
  void* buffer = nullptr;
  if (::posix_memalign(&buffer, 4096, length) != 0) throw std::bad_alloc();
  const std::unique_ptr<void, decltype(&std::free)> owned(buffer, &std::free);
  size_t done = 0;
  while (done < length) {
    const ssize_t n = ::pread(fd.get(), static_cast<char*>(buffer) + done, length - done, static_cast<off_t>(done));
    if (n <= 0) throw std::runtime_error("O_DIRECT read of " + device + " failed");
    done += static_cast<size_t>(n);
  }
  return std::string(static_cast<const char*>(buffer), length);
}

// A libnbd client in a process of its own (python3's nbd module): writes `source` 1 MiB at a time from offset 0,
// printing each write's index once it is replied to, then waits to be killed without ever disconnecting.
ChildProcess writing_client(const std::string& uri, const std::string& source, const std::string& acks) {
  SpawnOptions options;
  options.argv = {"/usr/bin/python3", "-c",
                  "import nbd, sys, time\n"
                  "h = nbd.NBD()\n"
                  "h.connect_uri(sys.argv[1])\n"
                  "data = open(sys.argv[2], 'rb').read()\n"
                  "step = 1 << 20\n"
                  "for i in range(len(data) // step):\n"
                  "    h.pwrite(data[i * step:(i + 1) * step], i * step)\n"
                  "    print(i, flush=True)\n"
                  "time.sleep(3600)\n",
                  uri, source};
  options.stdout_path = acks;
  options.stderr_path = acks;
  return ChildProcess::spawn(options);
}

class ServeDurabilityTest : public ManagerTest {
 protected:
  NbdExport created(const Volume& volume, const std::vector<std::string>& extra = {}) {
    const CliResult result = create(volume, extra);
    if (result.code != 0) throw std::runtime_error("export create failed: " + result.err);
    return export_of(volume);
  }
  Json show(const std::string& name) {
    const CliResult result = nbdxm({"--json", "export", "show", name});
    if (result.code != 0) throw std::runtime_error("export show failed: " + result.err);
    return Json::parse(result.out);
  }
  // The volume served from a loop device over `backing` instead of its file (same size: 1 GiB).
  void serve_from(const Volume& volume, const std::string& device) { store_.set_mapping_path(volume.uuid, device); }

  // Waits until the export is failed with a durability reason; returns the reason.
  std::string wait_failed(const NbdExport& e) {
    std::string reason;
    wait_until(
        [&] {
          const auto now = store_.get_export(e.export_name);
          reason = now.status_reason.value_or("");
          return now.status == "failed";
        },
        30s);
    return reason;
  }

  // Failed with the reason, reported by check until acknowledged, still after a manager restart.
  void expect_reported_until_acknowledged(const NbdExport& e, const std::string& reason) {
    CliResult check = nbdxm({"check"});
    EXPECT_EQ(check.code, 5) << check.out << check.err;
    EXPECT_NE((check.out + check.err).find(reason), std::string::npos) << check.out << check.err;
    EXPECT_TRUE(wait_until([&] { return servers_for(e.export_name).empty(); }, 30s)) << manager_.log();

    manager_.stop();
    manager_.start();
    const Json shown = show(e.export_name);
    EXPECT_EQ(shown["status"], "failed");
    ASSERT_TRUE(shown["durability_failure"].is_string()) << shown.dump(2);
    EXPECT_NE(shown["durability_failure"].get<std::string>().find(reason), std::string::npos) << shown.dump(2);
    EXPECT_EQ(nbdxm({"check"}).code, 5);

    const CliResult ack = nbdxm({"export", "acknowledge", e.export_name});
    EXPECT_EQ(ack.code, 0) << ack.err;
    check = nbdxm({"check"});
    EXPECT_EQ(check.code, 0) << check.out << check.err;
    EXPECT_TRUE(show(e.export_name)["durability_failure"].is_null());
    EXPECT_EQ(show(e.export_name)["durability_failures_acknowledged"], 1);
  }
};

TEST_F(ServeDurabilityTest, AnInjectedFdatasyncFailureAtCloseFailsTheExportUntilAcknowledged) {
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  const NbdExport e = created(volume);
  const auto server = server_of(e);
  ASSERT_TRUE(server) << manager_.log();
  {
    FdatasyncFailure failure(server->pid);
    TcpClient client(e.port, e.export_name);
    client.write(pattern(kMiB, 1), 0);
    client.disconnect();  // the migration client's way: no flush, the close-time sync is the only one
    const std::string reason = wait_failed(e);
    EXPECT_EQ(reason, fmt::format("durability: fdatasync on {} failed: Input/output error", volume.path))
        << manager_.log();
  }
  expect_reported_until_acknowledged(
      e, fmt::format("durability: fdatasync on {} failed: Input/output error", volume.path));
}

TEST_F(ServeDurabilityTest, AFailureTheStoppedManagerHadNotRecordedIsRecordedByTheNextOne) {
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  const NbdExport e = created(volume);
  { TcpClient client(e.port, e.export_name); }  // the server's first connect creates the export's counter file
  manager_.stop();  // the export stays active; its counter file stays for the next manager's server
  const std::string file = ExportCounters::path(dir_.file("run/counters"), e.id, e.created_at);
  ASSERT_TRUE(std::filesystem::exists(file));
  ExportCounters::open_or_create(file, {e.id, e.created_at, e.size})
      ->durability_failure("durability: fdatasync on /dev/vdc failed: No space left on device");
  ASSERT_EQ(store_.get_export(e.export_name).status, "active");

  manager_.start();
  EXPECT_EQ(wait_failed(e), "durability: fdatasync on /dev/vdc failed: No space left on device") << manager_.log();
  EXPECT_EQ(nbdxm({"check"}).code, 5);
}

TEST_F(ServeDurabilityTest, AThinVolumeOutOfSpaceFailsTheExportAtClose) {
  if (const auto why = LoopDevice::unavailable_reason()) GTEST_SKIP() << *why;
  const TmpfsMount thin(dir_.file("thin"), "16m");
  const std::string backing = dir_.file("thin/volume.img");
  create_volume_file(backing, 1024 * kMiB);  // sparse: 1 GiB on 16 MiB of space
  const LoopDevice loop(backing);
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  serve_from(volume, loop.path());
  const NbdExport e = created(volume);
  {
    TcpClient client(e.port, e.export_name);
    for (int i = 0; i < 2; ++i) client.write(pattern(32 * kMiB, i), static_cast<uint64_t>(i) * 32 * kMiB);
    client.disconnect();  // accepted into the page cache; the writeback fails at the close-time sync
  }
  const std::string reason = wait_failed(e);
  EXPECT_EQ(reason.rfind(fmt::format("durability: fdatasync on {} failed: ", loop.path()), 0), 0u) << reason << "\n"
                                                                                                   << manager_.log();
  expect_reported_until_acknowledged(e, fmt::format("durability: fdatasync on {} failed", loop.path()));
}

TEST_F(ServeDurabilityTest, WriteThroughMakesEveryWriteDurableBeforeItsReply) {
  if (const auto why = LoopDevice::unavailable_reason()) GTEST_SKIP() << *why;
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  const LoopDevice loop(volume.path);
  serve_from(volume, loop.path());
  const NbdExport e = created(volume, {"--durability", "write-through"});
  EXPECT_EQ(e.durability, "write-through");
  TcpClient client(e.port, e.export_name);
  for (int i = 0; i < 4; ++i) {
    const uint64_t before = loop.flushes_completed();
    client.write(pattern(kMiB, i), static_cast<uint64_t>(i) * kMiB);
    // Replied to: the device has completed a flush since the write was sent (RWF_DSYNC), with no flush from the
    // client and the connection still open.
    EXPECT_GT(loop.flushes_completed(), before) << "write " << i;
  }
  EXPECT_EQ(show(e.export_name)["requests_flush"], 0);
}

TEST_F(ServeDurabilityTest, WriteThroughKeepsEveryAcknowledgedByteWhenClientAndServerAreKilled) {
  if (const auto why = LoopDevice::unavailable_reason()) GTEST_SKIP() << *why;
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  const LoopDevice loop(volume.path);
  serve_from(volume, loop.path());
  const NbdExport e = created(volume, {"--durability", "write-through"});
  const auto server = server_of(e);
  ASSERT_TRUE(server) << manager_.log();
  constexpr int kWrites = 8;
  const std::string data = pattern(kWrites * kMiB, 7);
  write_file(dir_.file("source.bin"), data);
  const uint64_t flushes_before = loop.flushes_completed();
  const uint64_t sectors_before = block_stat(loop.path(), 6);

  const std::string acks = dir_.file("acks.txt");
  ChildProcess client =
      writing_client(fmt::format("nbd://127.0.0.1:{}/{}", e.port, e.export_name), dir_.file("source.bin"), acks);
  ASSERT_TRUE(
      wait_until([&] { return read_file(acks).find(fmt::format("\n{}\n", kWrites - 1)) != std::string::npos; }, 30s))
      << read_file(acks);
  // Right after the last reply, before anything else can sync the device (the server's restart, the manager): the
  // device has received every acknowledged byte and completed a flush for each write.
  const uint64_t flushes = loop.flushes_completed() - flushes_before;
  const uint64_t sectors = block_stat(loop.path(), 6) - sectors_before;
  ::kill(server->pid, SIGKILL);
  ::kill(client.pid(), SIGKILL);
  client.wait(10s);
  std::cout << "at the last reply: " << flushes << " flushes completed, " << sectors * 512 << " bytes written to "
            << loop.path() << " since the first write\n";
  EXPECT_GE(flushes, static_cast<uint64_t>(kWrites));
  EXPECT_GE(sectors * 512, static_cast<uint64_t>(kWrites) * kMiB);
  EXPECT_TRUE(read_direct(loop.path(), data.size()) == data) << "an acknowledged byte is not on the device";
}

TEST_F(ServeDurabilityTest, OnCloseLeavesWritesToTheCloseTimeSync) {
  if (const auto why = LoopDevice::unavailable_reason()) GTEST_SKIP() << *why;
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  const LoopDevice loop(volume.path);
  serve_from(volume, loop.path());
  const NbdExport e = created(volume);
  EXPECT_EQ(e.durability, "on-close");
  TcpClient client(e.port, e.export_name);
  const uint64_t before = loop.flushes_completed();
  for (int i = 0; i < 4; ++i) client.write(pattern(kMiB, i), static_cast<uint64_t>(i) * kMiB);
  EXPECT_LT(loop.flushes_completed(), before + 4);  // not one per write
  client.disconnect();
  EXPECT_TRUE(wait_until([&] { return loop.flushes_completed() > before; }, 10s));  // the close-time sync
}

TEST_F(ServeDurabilityTest, CountersCountRealClientsAndCoverRewritesOnce) {
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  const NbdExport e = created(volume);
  {
    TcpClient a(e.port, e.export_name);
    TcpClient b(e.port, e.export_name);
    for (int i = 0; i < 10; ++i) a.write(pattern(kMiB, i), 0);  // the same MiB 10 times
    b.write(pattern(kMiB, 11), 4 * kMiB);
    EXPECT_EQ(a.read(4096, 0).size(), 4096u);
    const Json shown = show(e.export_name);
    EXPECT_EQ(shown["connections_open"], 2) << shown.dump(2);
  }
  Json shown;
  ASSERT_TRUE(wait_until(
      [&] {
        shown = show(e.export_name);
        return shown["connections_open"] == 0;
      },
      10s))
      << shown.dump(2);
  EXPECT_EQ(shown["bytes_written"], 11 * kMiB);
  EXPECT_EQ(shown["requests_write"], 11);
  EXPECT_EQ(shown["failed_write"], 0);
  EXPECT_EQ(shown["bytes_read"], 4096);
  EXPECT_GE(shown["connections_total"], 2);  // and `export create`'s handshake
  EXPECT_EQ(shown["coverage_bytes"], 2 * kMiB);
  EXPECT_TRUE(shown["last_write_at"].is_string());
  EXPECT_EQ(shown["durability"], "on-close");
  EXPECT_TRUE(shown["durability_failure"].is_null());
}

TEST_F(ServeDurabilityTest, FullCopyThroughNbdcopyCoversTheWholeVolume) {
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  const NbdExport e = created(volume);
  const std::string source = dir_.file("source.img");
  write_file(source, pattern(8 * kMiB, 3));
  std::filesystem::resize_file(source, 1024 * kMiB);  // the rest a hole: nbdcopy zeroes it
  std::string output;
  ASSERT_EQ(run_program({"nbdcopy", source, fmt::format("nbd://127.0.0.1:{}/{}", e.port, e.export_name)}, &output), 0)
      << output;
  Json shown;
  ASSERT_TRUE(wait_until(
      [&] {
        shown = show(e.export_name);
        return shown["connections_open"] == 0;
      },
      10s));
  EXPECT_EQ(shown["coverage_bytes"], 1024 * kMiB) << shown.dump(2);
  EXPECT_DOUBLE_EQ(shown["coverage_percent"].get<double>(), 100.0);
}

// A shared export's end (`serve --shared-listener`): the devices of its life are synced once its connections are
// closed, and a failed sync of the shared server's own stop is charged to the exports it serves.
class SharedDurabilityTest : public ServeDurabilityTest {
 protected:
  SharedDurabilityTest()
      : shared_manager_(db_path_, dir_.path(), ports_.range(PortBlock::kSize / 2),
                        {"--shared-listener", fmt::format("127.0.0.1:{}", ports_.high())}) {}
  int shared_port() const { return ports_.high(); }
  // The devices the shared server's spec lists (those it may open, synced when it stops).
  std::vector<std::string> shared_spec_devices() {
    const std::string path = dir_.file(fmt::format("run/servers/127.0.0.1:{}.json", shared_port()));
    if (!std::filesystem::exists(path)) return {};
    return Json::parse(read_file(path))["devices"].get<std::vector<std::string>>();
  }
  bool logged(const std::string& line) { return shared_manager_.log().find(line) != std::string::npos; }

  Manager shared_manager_;
};

TEST_F(SharedDurabilityTest, AnEndedSharedExportSyncsTheDeviceItsMappingMovedTo) {
  if (const auto why = LoopDevice::unavailable_reason()) GTEST_SKIP() << *why;
  shared_manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  LoopDevice first(volume.path);
  serve_from(volume, first.path());
  const NbdExport e = created(volume, {"--shared"});
  {
    TcpClient client(shared_port(), e.export_name);
    client.write(pattern(kMiB, 1), 0);
  }
  // The volume is attached again under another name: its mapping moves to a second loop device over the same file.
  LoopDevice second(volume.path);
  serve_from(volume, second.path());
  ASSERT_TRUE(wait_until(
      [&] {
        const auto devices = shared_spec_devices();
        return std::find(devices.begin(), devices.end(), second.path()) != devices.end();
      },
      30s))
      << shared_manager_.log();
  const uint64_t before = second.flushes_completed();
  ASSERT_EQ(nbdxm({"export", "revoke", e.export_name}).code, 0);
  EXPECT_TRUE(wait_until([&] { return second.flushes_completed() > before; }, 30s)) << shared_manager_.log();
}

TEST_F(SharedDurabilityTest, AnEndedSharedExportIsSyncedOnlyOnceItsConnectionsAreClosed) {
  if (const auto why = LoopDevice::unavailable_reason()) GTEST_SKIP() << *why;
  shared_manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  LoopDevice loop(volume.path);
  serve_from(volume, loop.path());
  const NbdExport e = created(volume, {"--shared"});
  TcpClient client(shared_port(), e.export_name);
  client.write(pattern(kMiB, 1), 0);
  const uint64_t before = loop.flushes_completed();
  const std::string synced = fmt::format("export {} (shared): syncing {}", e.export_name, loop.path());
  store_.set_export_status(e.export_name, "revoked");  // as any writer of the store may (the CLI waits for the end)
  ASSERT_TRUE(wait_until([&] { return client.try_write(pattern(4096, 2), 0) != 0; }, 30s));  // cut
  // While its connection stays open (for less than Reconciler::kSharedEndWait, 5 s), a write of it may still be on
  // its way: nothing syncs its device yet. (Without the wait, the manager synced at its first look after the revoke,
  // well within this while.) A test held up for longer than the bound may see the bound's sync, which says so.
  std::this_thread::sleep_for(2s);
  const uint64_t flushes = loop.flushes_completed();  // read before the log: the manager logs, then syncs
  if (logged(synced)) {
    EXPECT_TRUE(logged(fmt::format("export {} (shared): 1 connections still open", e.export_name)))
        << shared_manager_.log();
  } else {
    EXPECT_EQ(flushes, before) << shared_manager_.log();
  }
  client.disconnect();
  EXPECT_TRUE(wait_until([&] { return logged(synced); }, 30s)) << shared_manager_.log();
  EXPECT_GT(loop.flushes_completed(), before);
  EXPECT_TRUE(wait_until([&] { return !store_.find_export_server(e.id)->running(); }, 30s));
}

TEST_F(SharedDurabilityTest, AFailedSyncAtTheSharedServersStopFailsItsExportsAndLeavesNoFileOfItsOwn) {
  shared_manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  const NbdExport e = created(volume, {"--shared"});
  {
    TcpClient client(shared_port(), e.export_name);
    client.write(pattern(kMiB, 1), 0);
  }
  {
    // The direct backend's shared server goes with its manager, which syncs its devices once it is gone.
    FdatasyncFailure failure(shared_manager_.pid(), volume.path);
    shared_manager_.stop();
  }
  const std::string counters = dir_.file("run/counters");
  EXPECT_FALSE(std::filesystem::exists(ExportCounters::path(counters, 0, ""))) << shared_manager_.log();
  shared_manager_.start();
  EXPECT_EQ(
      wait_failed(e),
      fmt::format("durability: sync after the server stopped failed: {}: fdatasync: Input/output error", volume.path))
      << shared_manager_.log();
  EXPECT_EQ(nbdxm({"check"}).code, 5);
  EXPECT_FALSE(std::filesystem::exists(ExportCounters::path(counters, 0, "")));
}

}  // namespace
}  // namespace nbdxm::test
