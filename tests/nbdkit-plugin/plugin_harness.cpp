#include "plugin_harness.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace nbdxm::test {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string trim(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

std::runtime_error nbd_failure(const char* what) {
  return std::runtime_error(fmt::format("{}: {}", what, nbd_get_error() ? nbd_get_error() : "(no message)"));
}

int nbd_errno_or(int fallback) {
  const int err = nbd_get_errno();
  return err != 0 ? err : fallback;
}

}  // namespace

int64_t file_size(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw std::runtime_error("cannot stat " + path);
  return st.st_size;
}

std::string read_at(const std::string& path, uint64_t offset, size_t length) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("cannot open " + path);
  std::string data(length, '\0');
  const ssize_t r = ::pread(fd, data.data(), length, static_cast<off_t>(offset));
  ::close(fd);
  if (r != static_cast<ssize_t>(length)) throw std::runtime_error("short read from " + path);
  return data;
}

std::vector<std::pair<uint64_t, uint64_t>> data_regions(const std::string& path) {
  std::vector<std::pair<uint64_t, uint64_t>> regions;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("cannot open " + path);
  const off_t end = ::lseek(fd, 0, SEEK_END);
  off_t pos = 0;
  while (pos < end) {
    const off_t data = ::lseek(fd, pos, SEEK_DATA);
    if (data < 0) break;  // ENXIO: only a hole is left
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) hole = end;
    regions.emplace_back(data, hole - data);
    pos = hole;
  }
  ::close(fd);
  return regions;
}

::testing::AssertionResult holds_exactly(const std::string& path,
                                         const std::vector<std::pair<uint64_t, std::string>>& writes) {
  for (const auto& [offset, bytes] : writes) {
    if (read_at(path, offset, bytes.size()) != bytes) {
      return ::testing::AssertionFailure() << path << " lacks the " << bytes.size() << " bytes written at " << offset;
    }
  }
  // Every region that holds data must read as zeroes overlaid with the writes that touch it.
  for (const auto& [start, length] : data_regions(path)) {
    std::string expected(length, '\0');
    for (const auto& [offset, bytes] : writes) {
      const uint64_t from = std::max(offset, start);
      const uint64_t to = std::min(offset + bytes.size(), start + length);
      if (from < to) expected.replace(from - start, to - from, bytes, from - offset, to - from);
    }
    const std::string actual = read_at(path, start, length);
    if (actual != expected) {
      const auto at = std::mismatch(actual.begin(), actual.end(), expected.begin()).first - actual.begin();
      return ::testing::AssertionFailure() << path << " has data nobody wrote at offset " << start + at;
    }
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult same_content(const std::string& a, const std::string& b) {
  if (file_size(a) != file_size(b)) return ::testing::AssertionFailure() << a << " and " << b << " differ in size";
  auto regions = data_regions(a);
  const auto more = data_regions(b);
  regions.insert(regions.end(), more.begin(), more.end());
  for (const auto& [start, length] : regions) {
    for (uint64_t at = start; at < start + length; at += 16 * kMiB) {
      const size_t chunk = static_cast<size_t>(std::min<uint64_t>(16 * kMiB, start + length - at));
      if (read_at(a, at, chunk) != read_at(b, at, chunk)) {
        return ::testing::AssertionFailure() << a << " and " << b << " differ within " << at << "+" << chunk;
      }
    }
  }
  return ::testing::AssertionSuccess();
}

std::string pattern(size_t length, char seed) {
  std::string s(length, '\0');
  for (size_t i = 0; i < length; ++i) s[i] = static_cast<char>('A' + (seed + i * 7 + i / 4096) % 26);
  return s;
}

int run(const std::vector<std::string>& argv, std::string* output) {
  TempDir dir;
  SpawnOptions options;
  options.argv = argv;
  options.stdout_path = dir.file("output");
  options.stderr_path = dir.file("output");
  // Only nbdkit loads the plugin; other programs (qemu-img above all) must not get its sanitizer runtime.
  if (argv.at(0) == "nbdkit") options.extra_env = nbdkit_environment();
  options.unset_env = nbdkit_unset_environment();
  const int code = run_to_completion(options, std::chrono::seconds(120));
  if (output) *output = slurp(dir.file("output"));
  return code;
}

Mount::Mount(const std::string& device, const std::string& dir) {
  std::string output;
  if (run({"mount", device, dir}, &output) != 0) throw std::runtime_error("mount failed: " + trim(output));
  dir_ = dir;
}

Mount::~Mount() {
  if (!dir_.empty()) run({"umount", dir_});
}

TestStore::TestStore(const std::string& path) : path_(path), db_(Database::create(path)), store_(db_) { db_.init(); }

NbdExport TestStore::add(const Spec& spec) {
  const int n = next_++;
  const std::string job = "job-" + spec.name;
  const std::string uuid = fmt::format("{:08x}-1b59-4f62-97e8-{:012x}", 0xb3bb0000 + n, n);
  store_.add_job(job, fmt::format("vm-{}", n), fmt::format("vm {}", n));
  NewMapping mapping;
  mapping.volume_uuid = uuid;
  mapping.volume_id = n;
  mapping.vm_id = fmt::format("vm-{}", n);
  mapping.device_path = spec.device_path;
  mapping.size = spec.size;
  mapping.requires_device_correlation = spec.correlation;
  store_.add_mapping(mapping);
  NewDisk disk;
  disk.job_id = job;
  disk.disk_id = "disk-0";
  disk.vm_dk_path = fmt::format("[datastore1] vm-{}/vm-{}.vmdk", n, n);
  disk.size_gb = std::max<int64_t>(1, spec.size / kGiB);
  store_.add_disk(disk);
  store_.link_disk(job, "disk-0", uuid);
  const bool live = spec.status == "pending" || spec.status == "active";
  store_.add_export(job, "disk-0", spec.name, 20000 + n, live ? spec.status : "pending");
  if (!live) store_.set_export_status(spec.name, spec.status, "set by the test");
  return store_.get_export(spec.name);
}

NbdkitServer::NbdkitServer(const TempDir& dir, const std::string& db, std::vector<std::string> plugin_params,
                           std::vector<std::string> nbdkit_options, std::vector<std::string> launcher) {
  static int counter = 0;
  const int n = ++counter;
  socket_ = dir.file(fmt::format("nbd{}.sock", n));
  pidfile_ = dir.file(fmt::format("nbdkit{}.pid", n));
  log_ = dir.file(fmt::format("nbdkit{}.log", n));
  SpawnOptions options;
  launched_ = !launcher.empty();
  options.argv = std::move(launcher);
  if (launched_) {
    options.argv.push_back("env");
    for (const auto& assignment : nbdkit_environment()) options.argv.push_back(assignment);
  } else {
    options.extra_env = nbdkit_environment();
  }
  options.argv.insert(options.argv.end(), {"nbdkit", "-f", "--exit-with-parent", "-U", socket_, "-P", pidfile_});
  options.argv.insert(options.argv.end(), nbdkit_options.begin(), nbdkit_options.end());
  options.argv.push_back(NBDXM_PLUGIN);
  options.argv.push_back("db=" + db);
  options.argv.insert(options.argv.end(), plugin_params.begin(), plugin_params.end());
  // TestStore's mappings do not require device correlation unless a test asks: serve them unless the test says.
  const bool says = std::any_of(plugin_params.begin(), plugin_params.end(),
                                [](const std::string& p) { return p.rfind("allow-uncorrelated=", 0) == 0; });
  if (!says) options.argv.push_back("allow-uncorrelated=true");
  options.stderr_path = log_;
  options.stdout_path = log_;
  options.unset_env = nbdkit_unset_environment();
  process_ = std::make_unique<ChildProcess>(ChildProcess::spawn(options));
  // nbdkit writes its pid file once it listens.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (true) {
    struct stat st {};
    if (::stat(pidfile_.c_str(), &st) == 0 && st.st_size > 0) break;
    if (!process_->running()) throw std::runtime_error("nbdkit exited at start: " + log());
    if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("nbdkit did not start: " + log());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

NbdkitServer::~NbdkitServer() {
  stop();
  // A sanitizer report inside the server is a failure of the test that ran it.
  const std::string text = log();
  for (const char* sign : {"AddressSanitizer", "runtime error:", "LeakSanitizer", "ThreadSanitizer"}) {
    if (text.find(sign) != std::string::npos) ADD_FAILURE() << "sanitizer report in nbdkit's log:\n" << text;
  }
}

std::string NbdkitServer::uri(const std::string& export_name) const {
  return fmt::format("nbd+unix:///{}?socket={}", export_name, socket_);
}

std::string NbdkitServer::log() const { return slurp(log_); }

void NbdkitServer::stop() {
  if (!process_) return;
  if (launched_) {
    // A launcher (strace) may ignore SIGTERM and exit only with nbdkit: nbdkit itself is told to stop.
    const pid_t server = static_cast<pid_t>(std::atol(slurp(pidfile_).c_str()));
    if (server > 0 && process_->running()) ::kill(server, SIGTERM);
    process_->stop(std::chrono::seconds(20));
    // Under a sanitizer runtime, nbdkit was seen to hang in its exit once the launcher was gone: never leave it.
    if (server > 0 && ::kill(server, 0) == 0) ::kill(server, SIGKILL);
    return;
  }
  process_->stop(std::chrono::seconds(20));
}

NbdClient::NbdClient(const std::string& socket, const std::string& export_name, bool strict) {
  h_ = nbd_create();
  if (h_ == nullptr) throw nbd_failure("nbd_create");
  if (!strict) nbd_set_strict_mode(h_, 0);
  if (nbd_set_export_name(h_, export_name.c_str()) == -1 || nbd_connect_unix(h_, socket.c_str()) == -1) {
    auto failure = nbd_failure("connect");
    nbd_close(h_);
    h_ = nullptr;
    throw failure;
  }
}

NbdClient::~NbdClient() {
  if (h_) nbd_close(h_);
}

std::optional<std::string> NbdClient::connect_error(const std::string& socket, const std::string& export_name) {
  try {
    NbdClient client(socket, export_name);
    return std::nullopt;
  } catch (const std::runtime_error& e) {
    return std::string(e.what());
  }
}

int64_t NbdClient::size() {
  const int64_t size = nbd_get_size(h_);
  if (size < 0) throw nbd_failure("get_size");
  return size;
}

void NbdClient::write(const std::string& data, uint64_t offset, uint32_t flags) {
  if (nbd_pwrite(h_, data.data(), data.size(), offset, flags) == -1) throw nbd_failure("pwrite");
}

std::string NbdClient::read(size_t length, uint64_t offset) {
  std::string data(length, '\0');
  if (nbd_pread(h_, data.data(), length, offset, 0) == -1) throw nbd_failure("pread");
  return data;
}

int NbdClient::try_write(const std::string& data, uint64_t offset, uint32_t flags) {
  return nbd_pwrite(h_, data.data(), data.size(), offset, flags) == -1 ? nbd_errno_or(EIO) : 0;
}

int NbdClient::try_read(size_t length, uint64_t offset) {
  std::string data(length, '\0');
  return nbd_pread(h_, data.data(), length, offset, 0) == -1 ? nbd_errno_or(EIO) : 0;
}

int NbdClient::try_zero(uint64_t count, uint64_t offset, uint32_t flags) {
  return nbd_zero(h_, count, offset, flags) == -1 ? nbd_errno_or(EIO) : 0;
}

int NbdClient::try_trim(uint64_t count, uint64_t offset, uint32_t flags) {
  return nbd_trim(h_, count, offset, flags) == -1 ? nbd_errno_or(EIO) : 0;
}

int NbdClient::try_flush() { return nbd_flush(h_, 0) == -1 ? nbd_errno_or(EIO) : 0; }

void NbdClient::disconnect() {
  if (!h_) return;
  nbd_shutdown(h_, 0);
  nbd_close(h_);
  h_ = nullptr;
}

OpenWatch::OpenWatch(const std::vector<std::string>& paths) {
  fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd_ < 0) throw std::runtime_error("inotify_init1 failed");
  for (const auto& path : paths) {
    if (inotify_add_watch(fd_, path.c_str(), IN_OPEN) < 0) {
      throw std::runtime_error(fmt::format("cannot watch {}: {}", path, strerror(errno)));
    }
  }
}

OpenWatch::~OpenWatch() {
  if (fd_ >= 0) ::close(fd_);
}

int OpenWatch::opens() {
  alignas(inotify_event) char buffer[4096];
  while (true) {
    const ssize_t r = ::read(fd_, buffer, sizeof buffer);
    if (r <= 0) break;
    for (ssize_t at = 0; at < r;) {
      const auto* event = reinterpret_cast<const inotify_event*>(buffer + at);
      if (event->mask & IN_OPEN) ++count_;
      at += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
    }
  }
  return count_;
}

}  // namespace nbdxm::test
