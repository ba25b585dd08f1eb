#include "store_test_support.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include <SQLiteCpp/Statement.h>
#include <SQLiteCpp/Transaction.h>
#include <filesystem>
#include <fstream>
#include <regex>
#include <stdexcept>
#include <thread>

#include "nbdxm/child_process.hpp"
#include "nbdxm/schema.hpp"

namespace nbdxm::test {

bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return done();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}
namespace {

Database create_store(const std::string& path) {
  Database db = Database::create(path);
  db.init();
  return db;
}

std::string row_text(SQLite::Statement& q) {
  std::string text;
  for (int i = 0; i < q.getColumnCount(); ++i) {
    const auto column = q.getColumn(i);
    text += fmt::format("|{}:{}", column.getType(), column.isNull() ? "NULL" : column.getString());
  }
  return text;
}

}  // namespace

TempDir::TempDir(const std::string& parent) {
  // Canonical, so that paths made from it are normalized absolute paths (what an 'oma' device path must be).
  const auto base = std::filesystem::weakly_canonical(parent.empty() ? std::filesystem::temp_directory_path()
                                                                     : std::filesystem::path(parent));
  std::string pattern = (base / "nbdxm-test-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + pattern);
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string dump(SQLite::Database& db) {
  std::string text = fmt::format("user_version {}\n", db.execAndGet("PRAGMA user_version").getInt());
  std::vector<std::string> tables;
  SQLite::Statement objects(db, "SELECT type, name, coalesce(sql, '') FROM sqlite_schema ORDER BY type, name");
  while (objects.executeStep()) {
    text += fmt::format("{} {}: {}\n", objects.getColumn(0).getString(), objects.getColumn(1).getString(),
                        objects.getColumn(2).getString());
    if (objects.getColumn(0).getString() == "table") tables.push_back(objects.getColumn(1).getString());
  }
  for (const auto& table : tables) {
    SQLite::Statement rows(db, fmt::format("SELECT * FROM \"{}\" ORDER BY rowid", table));
    while (rows.executeStep()) text += table + row_text(rows) + "\n";
  }
  return text;
}

std::string dump_file(const std::string& path) {
  SQLite::Database db(path, SQLite::OPEN_READONLY);
  return dump(db);
}

void create_volume_file(const std::string& path, int64_t size) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0 || ::ftruncate(fd, size) != 0) throw std::runtime_error("cannot create volume file " + path);
  ::close(fd);
}

namespace {

// Runs losetup; its standard output, trimmed, in `output`.
int losetup(const std::vector<std::string>& args, std::string* output = nullptr) {
  TempDir dir;
  SpawnOptions options;
  options.argv = {"losetup"};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  options.stdout_path = dir.file("output");
  options.stderr_path = dir.file("output");
  const int code = run_to_completion(options, std::chrono::seconds(60));
  if (output != nullptr) {
    std::ifstream in(dir.file("output"));
    std::getline(in, *output);
  }
  return code;
}

}  // namespace

std::optional<std::string> LoopDevice::unavailable_reason() {
  if (::geteuid() != 0) return "loop devices need root";
  if (::access("/dev/loop-control", R_OK | W_OK) != 0) return "/dev/loop-control is not available";
  TempDir dir;
  create_volume_file(dir.file("probe"), 1 << 20);
  std::string output;
  if (losetup({"-f", "--show", dir.file("probe")}, &output) != 0) return "losetup failed: " + output;
  losetup({"-d", output});
  return std::nullopt;
}

LoopDevice::LoopDevice(const std::string& backing_file, uint32_t sector_size, bool partitions) {
  std::vector<std::string> args{"-f", "--show", "--sector-size", std::to_string(sector_size)};
  if (partitions) args.push_back("-P");
  args.push_back(backing_file);
  std::string output;
  if (losetup(args, &output) != 0) {
    throw std::runtime_error("losetup failed: " + output);
  }
  path_ = output;
}

uint64_t LoopDevice::flushes_completed() const {
  const std::string stat_path = "/sys/block/" + std::filesystem::path(path_).filename().string() + "/stat";
  std::ifstream fields(stat_path);
  std::vector<uint64_t> values;
  for (uint64_t value = 0; fields >> value;) values.push_back(value);
  if (values.size() < 16) throw std::runtime_error(stat_path + " has no flush counts (Linux 5.5 or later has them)");
  return values[15];
}

LoopDevice::~LoopDevice() {
  if (!path_.empty()) losetup({"-d", path_});
}

NewMapping new_mapping(const std::string& volume_uuid, const std::string& device_path, int64_t size,
                       const std::string& mode) {
  NewMapping mapping;
  mapping.volume_uuid = volume_uuid;
  mapping.volume_id = 100;
  mapping.vm_id = mode == "oma" ? "appliance-1" : "vm-9";
  mapping.device_path = device_path;
  mapping.size = size;
  mapping.operation_mode = mode;
  return mapping;
}

NewDisk new_disk(const std::string& job_id, const std::string& disk_id, int64_t size_gb) {
  NewDisk disk;
  disk.job_id = job_id;
  disk.disk_id = disk_id;
  disk.vm_dk_path = fmt::format("[datastore1] {}/{}.vmdk", job_id, disk_id);
  disk.size_gb = size_gb;
  return disk;
}

std::string expect_refused(Database& db, const std::string& sql) {
  const std::string before = dump(db.sql());
  std::string message;
  try {
    db.sql().exec(sql);
    ADD_FAILURE() << "the store accepted: " << sql;
  } catch (const SQLite::Exception& e) {
    message = e.what();
  }
  EXPECT_EQ(before, dump(db.sql())) << "a refused write changed the store: " << sql;
  return message;
}

void exec_without_trigger(Database& db, const std::string& trigger, const std::string& sql) {
  const std::string definition =
      db.sql()
          .execAndGet(fmt::format("SELECT sql FROM sqlite_schema WHERE type = 'trigger' AND name = '{}'", trigger))
          .getString();
  db.sql().exec(fmt::format("DROP TRIGGER {}", trigger));
  db.sql().exec(sql);
  db.sql().exec(definition);
}

void exec_as_older_writer(Database& db, const std::string& sql) {
  static const std::regex trigger_name(R"(CREATE TRIGGER (\w+))");
  const std::string version3 = schema::steps().at(2).sql;    // a copy: steps() returns a temporary
  std::vector<std::pair<std::string, std::string>> dropped;  // name, definition
  for (std::sregex_iterator it(version3.begin(), version3.end(), trigger_name), end; it != end; ++it) {
    const std::string name = (*it)[1].str();
    dropped.emplace_back(
        name, db.sql()
                  .execAndGet(fmt::format("SELECT sql FROM sqlite_schema WHERE type = 'trigger' AND name = '{}'", name))
                  .getString());
    db.sql().exec(fmt::format("DROP TRIGGER {}", name));
  }
  db.sql().exec("PRAGMA foreign_keys = OFF");
  db.sql().exec(sql);
  db.sql().exec("PRAGMA foreign_keys = ON");
  for (const auto& [name, definition] : dropped) db.sql().exec(definition);
}

void create_store_at_version(const std::string& path, int version) {
  SQLite::Database db(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
  SQLite::Transaction tx(db);
  for (const auto& step : schema::steps()) {
    if (step.version <= version) db.exec(step.sql);
  }
  db.exec(fmt::format("PRAGMA user_version = {}", version));
  tx.commit();
}

void add_standard_rows(ExportStore& store, const TempDir& dir) {
  // Setting up is not what is tested: skip the fsync of each commit, then give the test the store's usual setting.
  SQLite::Database& sql = store.database().sql();
  sql.exec("PRAGMA synchronous = OFF");
  store.add_job("j1", "vm-1", "web01");
  store.set_job_status("j1", "replicating");
  store.add_job("j2", "vm-2", "db01");
  const std::vector<std::pair<std::string, int64_t>> oma{{kVolume1, 10}, {kVolume2, 20}, {kVolume3, 30}};
  const char* names[] = {"vdb", "vdc", "vdd"};
  for (size_t i = 0; i < oma.size(); ++i) {
    const std::string device = dir.file(names[i]);
    create_volume_file(device, oma[i].second * kGiB);
    NewMapping mapping = new_mapping(oma[i].first, device, oma[i].second * kGiB);
    mapping.volume_id = 100 + static_cast<int64_t>(i);
    store.add_mapping(mapping);
  }
  NewMapping failover = new_mapping(kVolume4, "remote", 40 * kGiB, "failover");
  failover.volume_id = 103;
  failover.requires_device_correlation = false;
  store.add_mapping(failover);
  NewDisk d1 = new_disk("j1", "d1", 5);
  d1.unit_number = 0;
  store.add_disk(d1);
  store.add_disk(new_disk("j1", "d2", 10));
  store.add_disk(new_disk("j2", "d3", 20));
  store.link_disk("j1", "d1", kVolume1);
  store.link_disk("j2", "d3", kVolume2);
  store.add_export("j1", "d1", "e1-old", 10809, "pending");
  store.set_export_status("e1-old", "revoked", std::string("replaced"));
  store.add_export("j1", "d1", "e1", 10809, "active");
  store.add_export("j2", "d3", "e3", 10810, "pending");
  sql.exec("PRAGMA synchronous = FULL");
}

StoreTest::StoreTest() : path_(dir_.file("state.db")), db_(create_store(path_)), store_(db_) {}

std::vector<std::string> nbdkit_environment() {
  std::vector<std::string> env;
#ifdef NBDXM_SANITIZER_PRELOAD
  env.push_back("LD_PRELOAD=" NBDXM_SANITIZER_PRELOAD);
  env.push_back("ASAN_OPTIONS=detect_leaks=0:abort_on_error=0");
  env.push_back("UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1");
  env.push_back("TSAN_OPTIONS=second_deadlock_stack=1");  // reports go to nbdkit's log, where tests look for them
#endif
  return env;
}

const std::vector<std::string>& nbdkit_unset_environment() {
  static const std::vector<std::string> names = {"LD_PRELOAD",    "ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS",
                                                 "NOTIFY_SOCKET", "NBDXM_DB",     "NBDXM_CONFIG"};
  return names;
}

}  // namespace nbdxm::test
