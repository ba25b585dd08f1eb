#include "manager_harness.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace nbdxm::test {
namespace {

using namespace std::chrono_literals;

constexpr int kFirstTestPort = 20000;  // below the kernel's ephemeral range (32768 and up)
constexpr int kBlocks = 90;

// Up to n bytes at offset (fewer only at the file's end or on an error).
size_t read_at(int fd, char* buffer, size_t n, uint64_t offset) {
  size_t done = 0;
  while (done < n) {
    const ssize_t got = ::pread(fd, buffer + done, n - done, static_cast<off_t>(offset + done));
    if (got <= 0) break;
    done += static_cast<size_t>(got);
  }
  return done;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string temp_file(const std::string& tag) {
  std::string path = fmt::format("/tmp/nbdxm-manager-test-{}-XXXXXX", tag);
  const int fd = ::mkstemp(path.data());
  if (fd < 0) throw std::runtime_error("mkstemp failed");
  ::close(fd);
  return path;
}

size_t count_of(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

Database initialised(const std::string& path) {
  Database db = Database::create(path);
  db.init();
  return db;
}

}  // namespace

PortBlock::PortBlock() {
  const std::string dir = "/tmp/nbdxm-test-ports";
  std::filesystem::create_directories(dir);
  for (int block = 0; block < kBlocks; ++block) {
    const int low = kFirstTestPort + block * kSize;
    FileDescriptor fd(::open(fmt::format("{}/block-{}.lock", dir, low).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666));
    if (!fd.valid()) continue;
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) {
      lock_ = std::move(fd);
      low_ = low;
      return;
    }
  }
  throw std::runtime_error("no free block of test ports");
}

std::string PortBlock::range(int count) const { return fmt::format("{}-{}", low_, low_ + count - 1); }

int run_program(const std::vector<std::string>& argv, std::string* output) {
  const std::string out = temp_file("out");
  SpawnOptions options;
  options.argv = argv;
  options.stdout_path = out;
  options.stderr_path = out;
  options.extra_env = nbdkit_environment();
  options.unset_env = nbdkit_unset_environment();
  const int code = run_to_completion(options, 300s);
  if (output) *output = slurp(out);
  std::filesystem::remove(out);
  return code;
}

CliResult run_nbdxm(const std::string& db, const std::vector<std::string>& args) {
  const std::string out = temp_file("stdout");
  const std::string err = temp_file("stderr");
  SpawnOptions options;
  options.argv = {NBDXM_BINARY, "--db", db};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  options.stdout_path = out;
  options.stderr_path = err;
  options.extra_env = nbdkit_environment();
  options.unset_env = nbdkit_unset_environment();
  CliResult result;
  result.code = run_to_completion(options, 120s);
  result.out = slurp(out);
  result.err = slurp(err);
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return result;
}

Manager::Manager(std::string db, std::string dir, std::string port_range, std::vector<std::string> extra_args)
    : db_(std::move(db)),
      dir_(std::move(dir)),
      port_range_(std::move(port_range)),
      extra_args_(std::move(extra_args)) {}

Manager::~Manager() {
  if (process_) process_->stop(5s);
}

std::vector<std::string> Manager::argv() const {
  std::vector<std::string> argv{NBDXM_BINARY,
                                "--db",
                                db_,
                                "serve",
                                "--supervisor",
                                "direct",
                                "--listen",
                                "127.0.0.1",
                                "--run-dir",
                                dir_ + "/run",
                                "--plugin",
                                NBDXM_PLUGIN,
                                "--allow-regular-files",
                                "--allow-uncorrelated",
                                "--byid-dir",
                                dir_ + "/by-id"};
  if (std::find(extra_args_.begin(), extra_args_.end(), "--config") == extra_args_.end()) {
    argv.insert(argv.end(), {"--config", ""});  // never the installed /etc/nbdxm/nbdxm.conf
  }
  if (!port_range_.empty()) argv.insert(argv.end(), {"--port-range", port_range_});
  argv.insert(argv.end(), extra_args_.begin(), extra_args_.end());
  argv.insert(argv.begin(), wrapper_.begin(), wrapper_.end());
  return argv;
}

void Manager::launch() {
  std::filesystem::create_directories(dir_);
  SpawnOptions options;
  options.argv = argv();
  options.stderr_path = dir_ + "/manager.log";
  options.stdout_path = dir_ + "/manager.log";
  options.extra_env = nbdkit_environment();
  options.extra_env.insert(options.extra_env.end(), extra_env_.begin(), extra_env_.end());
  options.unset_env = nbdkit_unset_environment();
  process_.emplace(ChildProcess::spawn(options));
  ++starts_;
}

void Manager::start() {
  launch();
  const bool ready = wait_until(
      [&] { return !process_->running() || count_of(log(), "ready after") >= static_cast<size_t>(starts_); }, 30s);
  if (!ready || !process_->running()) throw std::runtime_error("the manager did not start:\n" + log());
}

void Manager::stop() {
  if (process_) process_->stop(10s);
}

void Manager::kill() {
  if (!process_) return;
  ::kill(process_->pid(), SIGKILL);
  process_->wait();
}

bool Manager::running() { return process_ && process_->running(); }

pid_t Manager::pid() const { return process_ ? process_->pid() : -1; }

std::string Manager::log() const { return slurp(dir_ + "/manager.log"); }

std::optional<int> Manager::wait_exit(std::chrono::milliseconds timeout) {
  if (!process_) return std::nullopt;
  return process_->wait(timeout);
}

std::vector<ServerProcess> servers_of(const std::string& db) {
  const std::string store_arg = "db=" + db;
  std::vector<ServerProcess> result;
  for (pid_t pid : list_processes()) {
    const auto argv = read_cmdline(pid);
    if (argv.empty() || std::filesystem::path(argv[0]).filename() != "nbdkit") continue;
    if (std::find(argv.begin(), argv.end(), store_arg) == argv.end()) continue;
    ServerProcess server;
    for (const auto& arg : argv) {
      if (arg.starts_with("export=")) server.export_name = arg.substr(7);
    }
    server.port = listening_port(pid);
    if (auto identity = identify_process(pid)) {
      server.process = *identity;
      result.push_back(server);
    }
  }
  return result;
}

int listening_port(pid_t pid) {
  std::error_code ec;
  const std::string link =
      std::filesystem::read_symlink(fmt::format("/proc/{}/fd/3", pid), ec).string();  // socket:[INODE]
  if (ec || !link.starts_with("socket:[")) return 0;
  const std::string inode = link.substr(8, link.size() - 9);
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::istringstream in(slurp(table));
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string sl, local, remote, state, queues, timer, retransmits, uid, timeout, ino;
      fields >> sl >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> ino;
      if (ino == inode && state == "0A") return std::stoi(local.substr(local.rfind(':') + 1), nullptr, 16);
    }
  }
  return 0;
}

ServerReaper::~ServerReaper() {
  // The direct backend's servers go with their manager; these are left over from a test that failed half-way.
  std::vector<ProcessIdentity> signalled;
  for (const auto& server : servers_of(db_)) {
    if (::kill(server.process.pid, SIGTERM) == 0) signalled.push_back(server.process);
  }
  for (const auto& process : signalled) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (still_running(process) && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(10ms);
    if (still_running(process)) ::kill(process.pid, SIGKILL);
  }
}

TcpClient::TcpClient(int port, const std::string& export_name) {
  h_ = nbd_create();
  if (h_ == nullptr) throw std::runtime_error(nbd_get_error());
  if (nbd_set_export_name(h_, export_name.c_str()) == -1 ||
      nbd_connect_tcp(h_, "127.0.0.1", std::to_string(port).c_str()) == -1) {
    const std::string error = nbd_get_error();
    nbd_close(h_);
    h_ = nullptr;
    throw std::runtime_error(error);
  }
}

TcpClient::~TcpClient() {
  if (h_) nbd_close(h_);
}

std::optional<std::string> TcpClient::connect_error(int port, const std::string& export_name) {
  try {
    TcpClient client(port, export_name);
    return std::nullopt;
  } catch (const std::exception& e) {
    return std::string(e.what());
  }
}

int64_t TcpClient::size() { return nbd_get_size(h_); }

void TcpClient::write(const std::string& data, uint64_t offset) {
  if (try_write(data, offset) != 0) throw std::runtime_error(std::string("write failed: ") + nbd_get_error());
}

int TcpClient::try_write(const std::string& data, uint64_t offset) {
  if (nbd_pwrite(h_, data.data(), data.size(), offset, 0) == -1) {
    const int e = nbd_get_errno();
    return e == 0 ? EIO : e;
  }
  return 0;
}

std::string TcpClient::read(size_t length, uint64_t offset) {
  std::string data(length, '\0');
  if (nbd_pread(h_, data.data(), length, offset, 0) == -1) {
    throw std::runtime_error(std::string("read failed: ") + nbd_get_error());
  }
  return data;
}

void TcpClient::disconnect() {
  nbd_shutdown(h_, 0);
  nbd_close(h_);
  h_ = nullptr;
}

std::string pattern(size_t length, uint32_t seed) {
  // Every byte of each draw: one draw per byte cost seconds per 64 MiB in the -O0 ASan build.
  std::mt19937 generator(seed);
  std::string data(length, '\0');
  for (size_t i = 0; i < length; i += sizeof(uint32_t)) {
    const auto word = static_cast<uint32_t>(generator());
    std::memcpy(data.data() + i, &word, std::min(sizeof word, length - i));
  }
  return data;
}

std::string read_file(const std::string& path, uint64_t offset, size_t length) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  if (length == SIZE_MAX) return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  std::string data(length, '\0');
  in.read(data.data(), static_cast<std::streamsize>(length));
  data.resize(static_cast<size_t>(in.gcount()));
  return data;
}

void write_file(const std::string& path, const std::string& data, uint64_t offset) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0 ||
      ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset)) != static_cast<ssize_t>(data.size())) {
    throw std::runtime_error("cannot write " + path);
  }
  ::close(fd);
}

bool files_equal(const std::string& a, const std::string& b, uint64_t length) {
  // Two buffers for all the chunks: a fresh zeroed string per chunk cost most of a 1 GiB comparison's CPU.
  constexpr size_t kChunk = 4 * kMiB;
  const FileDescriptor fd_a(::open(a.c_str(), O_RDONLY | O_CLOEXEC));
  const FileDescriptor fd_b(::open(b.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd_a.get() < 0 || fd_b.get() < 0) return false;
  std::vector<char> chunk_a(kChunk);
  std::vector<char> chunk_b(kChunk);
  for (uint64_t offset = 0; offset < length; offset += kChunk) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, length - offset));
    const size_t got_a = read_at(fd_a.get(), chunk_a.data(), n, offset);
    if (got_a != read_at(fd_b.get(), chunk_b.data(), n, offset)) return false;
    if (std::memcmp(chunk_a.data(), chunk_b.data(), got_a) != 0) return false;
    if (got_a < n) return true;  // both files end here
  }
  return true;
}

bool port_bindable(int port) {
  FileDescriptor s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return ::bind(s.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
}

ManagerTest::ManagerTest()
    : db_path_(dir_.file("state.db")),
      db_(initialised(db_path_)),
      store_(db_),
      reaper_(db_path_),
      manager_(db_path_, dir_.path(), ports_.range()) {
  std::filesystem::create_directories(dir_.file("by-id"));
}

ManagerTest::Volume ManagerTest::add_volume(const std::string& job_id, const std::string& disk_id, int64_t size_gb) {
  const int n = next_volume_++;
  Volume volume{job_id, disk_id, fmt::format("{:08x}-0000-4000-8000-{:012x}", n, n),
                dir_.file(fmt::format("vol-{}.img", n))};
  if (!store_.find_job(job_id)) store_.add_job(job_id, "vm-" + job_id, "VM " + job_id);
  create_volume_file(volume.path, size_gb * kGiB);
  NewMapping mapping = new_mapping(volume.uuid, volume.path, size_gb * kGiB);
  mapping.requires_device_correlation = false;
  store_.add_mapping(mapping);
  store_.add_disk(new_disk(job_id, disk_id, size_gb));
  store_.link_disk(job_id, disk_id, volume.uuid);
  return volume;
}

CliResult ManagerTest::create(const Volume& volume, const std::vector<std::string>& extra) {
  std::vector<std::string> args{"export", "create", "--job", volume.job_id, "--disk-id", volume.disk_id};
  args.insert(args.end(), extra.begin(), extra.end());
  return nbdxm(args);
}

NbdExport ManagerTest::export_of(const Volume& volume) {
  ExportFilter filter;
  filter.job_id = volume.job_id;
  std::optional<NbdExport> found;
  for (const auto& e : store_.list_exports(filter)) {
    if (e.disk_id == volume.disk_id) found = e;  // the newest
  }
  if (!found) throw std::runtime_error("no export of disk " + volume.disk_id);
  return *found;
}

std::vector<ServerProcess> ManagerTest::servers_for(const std::string& export_name) {
  std::vector<ServerProcess> result;
  for (auto& s : servers_of(db_path_)) {
    if (s.export_name == export_name) result.push_back(std::move(s));
  }
  return result;
}

std::optional<ProcessIdentity> ManagerTest::server_of(const NbdExport& e) {
  const auto record = store_.find_export_server(e.id);
  if (!record || !record->running()) return std::nullopt;
  for (const auto& s : servers_for(e.export_name)) {
    if (s.port == e.port) return s.process;
  }
  return std::nullopt;
}

}  // namespace nbdxm::test
