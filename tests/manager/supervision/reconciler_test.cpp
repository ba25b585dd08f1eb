// The reconciler against a scripted supervisor (fake_supervisor.hpp) and a real SQLite store: what it asks the
// backend to serve, stop and replace, and what it records in the store for each event the backend reports.
#include "reconciler.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "fake_supervisor.hpp"
#include "manager_harness.hpp"
#include "nbdxm/port_allocator.hpp"
#include "server_command.hpp"
#include "store_lock_holder.hpp"

namespace nbdxm::test {
namespace {

using supervision::Reconciler;
using supervision::RunningServer;
using supervision::ServerEvent;
using supervision::ServerSettings;
using supervision::ServerTarget;

// Counts the statements that read the live exports (a look's read of the export_devices view) on a connection, as
// SQLite itself traces them.
class ExportReads {
 public:
  explicit ExportReads(Database& db) : handle_(db.sql().getHandle()) {
    sqlite3_trace_v2(handle_, SQLITE_TRACE_STMT, &ExportReads::on_statement, this);
  }
  ~ExportReads() { sqlite3_trace_v2(handle_, 0, nullptr, nullptr); }
  ExportReads(const ExportReads&) = delete;
  ExportReads& operator=(const ExportReads&) = delete;
  int count() const { return count_; }

 private:
  static int on_statement(unsigned, void* self, void* statement, void*) {
    const char* sql = sqlite3_sql(static_cast<sqlite3_stmt*>(statement));
    if (sql != nullptr && std::strstr(sql, "FROM export_devices") != nullptr) ++static_cast<ExportReads*>(self)->count_;
    return 0;
  }
  sqlite3* handle_;
  int count_ = 0;
};

class ReconcilerTest : public ManagerTest {
 protected:
  ReconcilerTest() {
    settings_.nbdkit = "nbdkit";
    settings_.plugin = "nbdxm";
    settings_.db_path = db_path_;
    settings_.listen_address = "127.0.0.1";
    settings_.run_dir = dir_.file("run");
    settings_.byid_dir = "/dev/disk/by-id";
  }

  NbdExport add_export(const std::string& disk_id, const std::string& status = "pending") {
    const auto volume = add_volume("job-1", disk_id);
    NewExport request{"job-1", disk_id, std::nullopt, std::nullopt};
    const auto e = store_.create_export(request, PortAllocator(port_range(), "127.0.0.1"));
    if (status != "pending") store_.set_export_status(e.export_name, status);
    return store_.get_export(e.export_name);
  }
  PortRange port_range() const { return PortRange{ports_.low(), ports_.high()}; }
  static ServerTarget target_of(const NbdExport& e) { return {e.id, e.export_name, e.port, e.created_at, "", ""}; }
  Reconciler& reconciler() {
    if (!reconciler_) reconciler_ = std::make_unique<Reconciler>(settings_, port_range(), store_, fake_);
    return *reconciler_;
  }
  // One turn of the manager's loop: a look at the store and the backend's events recorded.
  void turn() {
    const auto now = std::chrono::steady_clock::now();
    reconciler().look(now);
    reconciler().advance(now);
    reconciler().advance(now);  // the writes an event queued, and the events a look caused
  }
  void begin() {
    const auto now = std::chrono::steady_clock::now();
    reconciler().begin(now);
    reconciler().advance(now);
  }
  bool any_stale_problem() {
    const auto problems = store_.check();
    return std::any_of(problems.begin(), problems.end(), [](const auto& p) { return p.rule == "server_settings"; });
  }

  ServerSettings settings_;
  FakeSupervisor fake_;
  std::unique_ptr<Reconciler> reconciler_;
};

TEST_F(ReconcilerTest, ALiveExportIsServedOnceWithItsSpecAndRecordedActive) {
  const NbdExport e = add_export("disk-1");
  begin();
  ASSERT_EQ(fake_.served.size(), 1u);
  EXPECT_EQ(fake_.served[0], target_of(e));
  const auto spec = supervision::read_server_spec(supervision::server_spec_path(settings_, target_of(e)));
  EXPECT_EQ(spec.settings, settings_);
  EXPECT_EQ(spec.devices, std::vector<std::string>{e.device_path});
  EXPECT_EQ(store_.get_export(e.export_name).status, "active");
  const auto record = store_.find_export_server(e.id);
  ASSERT_TRUE(record && record->running());
  EXPECT_EQ(record->supervisor, "systemd");
  EXPECT_EQ(record->unit, FakeSupervisor::unit_of(target_of(e)));
  turn();
  EXPECT_EQ(fake_.times_served(target_of(e)), 1);  // no second start
}

// The manager's loop counts served exports (its ready line, READY=1) right after begin(): what the backend reported
// while begin() started the servers must be taken in by then, not at the loop's first turn.
TEST_F(ReconcilerTest, BeginTakesInWhatTheBackendReportedWhileItStartedTheServers) {
  const NbdExport first = add_export("disk-1");
  const NbdExport second = add_export("disk-2");
  reconciler().begin(std::chrono::steady_clock::now());  // no advance() after it: the loop counts next
  EXPECT_EQ(fake_.served.size(), 2u);
  for (const auto* e : {&first, &second}) {
    EXPECT_EQ(store_.get_export(e->export_name).status, "active") << e->export_name;
    const auto record = store_.find_export_server(e->id);
    EXPECT_TRUE(record && record->running()) << e->export_name;
  }
}

TEST_F(ReconcilerTest, RevokingOrEndingTheJobStopsTheServerAndTheStopIsRecorded) {
  const NbdExport revoked = add_export("disk-1");
  begin();
  store_.revoke_exports({revoked.export_name, std::nullopt, std::nullopt}, "test");
  turn();
  ASSERT_EQ(fake_.stopped.size(), 1u);
  EXPECT_EQ(fake_.stopped[0], target_of(revoked));
  EXPECT_TRUE(store_.find_export_server(revoked.id)->running());  // until the backend says it is stopped
  fake_.emit({ServerEvent::Kind::stopped, target_of(revoked), "", ""});
  turn();
  EXPECT_FALSE(store_.find_export_server(revoked.id)->running());

  const NbdExport ended = add_export("disk-2");
  turn();
  store_.set_job_status("job-1", "completed");
  turn();
  ASSERT_EQ(fake_.stopped.size(), 2u);
  EXPECT_EQ(fake_.stopped[1], target_of(ended));
}

// Every commit syncs the store's -wal file (about 5 ms here): the events of one step of the loop (1,000 servers
// started at a restart under `direct`, or stopped by revoking their job) are recorded in one commit, each as before.
TEST_F(ReconcilerTest, TheEventsOfOneStepAreRecordedInOneCommit) {
  std::vector<NbdExport> exports;
  for (int i = 0; i < 20; ++i) exports.push_back(add_export(fmt::format("disk-{}", i)));
  int commits = 0;
  sqlite3_commit_hook(
      store_.database().sql().getHandle(),
      [](void* count) {
        ++*static_cast<int*>(count);
        return 0;
      },
      &commits);
  struct Unhook {
    sqlite3* db;
    ~Unhook() { sqlite3_commit_hook(db, nullptr, nullptr); }
  } unhook{store_.database().sql().getHandle()};

  begin();
  EXPECT_EQ(fake_.served.size(), exports.size());
  for (const auto& e : exports) {
    EXPECT_EQ(store_.get_export(e.export_name).status, "active");
    EXPECT_TRUE(store_.find_export_server(e.id)->running());
  }
  EXPECT_EQ(commits, 1) << "the servers were recorded in " << commits << " commits";

  store_.revoke_exports({std::nullopt, "job-1", std::nullopt}, "test");
  turn();
  ASSERT_EQ(fake_.stopped.size(), exports.size());
  for (const auto& e : exports) fake_.emit({ServerEvent::Kind::stopped, target_of(e), "", ""});
  commits = 0;
  turn();
  for (const auto& e : exports) EXPECT_FALSE(store_.find_export_server(e.id)->running());
  EXPECT_EQ(commits, 1) << "the stops were recorded in " << commits << " commits";
}

TEST_F(ReconcilerTest, AStopWhoseDeviceSyncFailedIsRecordedWithItsReason) {
  const NbdExport e = add_export("disk-1");
  begin();
  store_.revoke_exports({e.export_name, std::nullopt, std::nullopt}, "test");
  turn();
  ASSERT_EQ(fake_.stopped.size(), 1u);
  const std::string reason = "nbdxm-export@127.0.0.1:1.service stopped with result exit-code: see journalctl";
  fake_.emit({ServerEvent::Kind::stopped, target_of(e), reason, ""});
  turn();
  const auto record = store_.find_export_server(e.id);
  EXPECT_FALSE(record->running());
  EXPECT_EQ(record->last_failure, reason);
}

TEST_F(ReconcilerTest, AnAdoptedServerIsTakenOverNotStartedTwiceAndOneWithoutItsExportIsStopped) {
  const NbdExport kept = add_export("disk-1", "active");
  const NbdExport revoked = add_export("disk-2", "revoked");
  fake_.running = {
      RunningServer{target_of(kept), settings_, FakeSupervisor::unit_of(target_of(kept)), kept.device_path},
      RunningServer{target_of(revoked), settings_, FakeSupervisor::unit_of(target_of(revoked)), revoked.device_path}};
  begin();
  turn();
  EXPECT_EQ(fake_.times_served(target_of(kept)), 1);
  EXPECT_EQ(fake_.times_served(target_of(revoked)), 0);
  EXPECT_TRUE(fake_.replaced.empty());
  ASSERT_EQ(fake_.stopped.size(), 1u);
  EXPECT_EQ(fake_.stopped[0], target_of(revoked));
  EXPECT_EQ(store_.find_export_server(kept.id)->unit, FakeSupervisor::unit_of(target_of(kept)));
}

TEST_F(ReconcilerTest, AnUnavailablePortMovesTheExportToAFreePortWhereItIsServed) {
  fake_.serve_at_once = false;
  const NbdExport e = add_export("disk-1");
  begin();
  fake_.emit({ServerEvent::Kind::port_unavailable, target_of(e), "cannot listen: Address already in use", ""});
  turn();
  const NbdExport moved = store_.get_export(e.export_name);
  EXPECT_NE(moved.port, e.port);
  EXPECT_TRUE(port_range().contains(moved.port));
  EXPECT_EQ(moved.status, "pending");
  ASSERT_TRUE(reconciler().look_wanted() || fake_.times_served(target_of(moved)) == 1);
  turn();
  EXPECT_EQ(fake_.times_served(target_of(moved)), 1);
  EXPECT_TRUE(fake_.stopped.empty());  // the backend forgot the old port itself
}

TEST_F(ReconcilerTest, ABackendThatGivesUpMarksTheExportFailedWithTheReason) {
  fake_.serve_at_once = false;
  const NbdExport e = add_export("disk-1");
  begin();
  fake_.emit({ServerEvent::Kind::gave_up, target_of(e), "its server failed 5 times in a row; last: exit 1", ""});
  turn();
  const NbdExport failed = store_.get_export(e.export_name);
  EXPECT_EQ(failed.status, "failed");
  EXPECT_EQ(failed.status_reason, "its server failed 5 times in a row; last: exit 1");
  EXPECT_EQ(store_.find_export_server(e.id)->last_failure, "its server failed 5 times in a row; last: exit 1");
  turn();
  EXPECT_EQ(fake_.times_served(target_of(e)), 1);  // not started again
  // Stopped: the backend may still hold its units and its instance.
  ASSERT_EQ(fake_.stopped.size(), 1u);
  EXPECT_EQ(fake_.stopped[0], target_of(e));
  fake_.emit({ServerEvent::Kind::stopped, target_of(e), "", ""});
  turn();
  EXPECT_EQ(store_.find_export_server(e.id)->last_failure, "its server failed 5 times in a row; last: exit 1");
}

TEST_F(ReconcilerTest, AFailedExportMadeLiveAgainIsStoppedAndServedAnewKeepingTheNewServer) {
  fake_.serve_at_once = false;
  const NbdExport e = add_export("disk-1");
  begin();
  fake_.emit({ServerEvent::Kind::gave_up, target_of(e), "its server failed 5 times in a row; last: exit 1", ""});
  turn();
  ASSERT_EQ(store_.get_export(e.export_name).status, "failed");
  store_.set_export_status(e.export_name, "pending");  // another writer makes it live again
  fake_.serve_at_once = true;
  turn();
  ASSERT_EQ(fake_.stopped.size(), 1u);
  EXPECT_EQ(fake_.stopped[0], target_of(e));
  EXPECT_EQ(fake_.times_served(target_of(e)), 2);
  EXPECT_EQ(store_.get_export(e.export_name).status, "active");
  // The old server's stop arrives after the new one serves: the new one's record and spec stay.
  fake_.emit({ServerEvent::Kind::stopped, target_of(e), "", ""});
  turn();
  EXPECT_TRUE(store_.find_export_server(e.id)->running());
  EXPECT_TRUE(std::filesystem::exists(supervision::server_spec_path(settings_, target_of(e))));
  turn();
  EXPECT_EQ(fake_.times_served(target_of(e)), 2);
}

TEST_F(ReconcilerTest, ARestartIsCountedWithItsReason) {
  const NbdExport e = add_export("disk-1");
  begin();
  fake_.emit({ServerEvent::Kind::restarted, target_of(e), "server pid 42 was killed by signal 9 (Killed)", ""});
  turn();
  const auto record = store_.find_export_server(e.id);
  EXPECT_EQ(record->restart_count, 1);
  EXPECT_EQ(record->last_failure, "server pid 42 was killed by signal 9 (Killed)");
}

TEST_F(ReconcilerTest, ItCountsRestartsGiveUpsAndFailedLooksAtTheStoreForMetrics) {
  const auto counters = std::make_shared<supervision::ManagerCounters>();
  reconciler_ = std::make_unique<Reconciler>(settings_, port_range(), store_, fake_, counters);
  const NbdExport a = add_export("disk-1");
  const NbdExport b = add_export("disk-2");
  begin();
  fake_.emit({ServerEvent::Kind::restarted, target_of(a), "server pid 42 was killed by signal 9 (Killed)", ""});
  turn();
  EXPECT_EQ(counters->server_restarts.load(), 1u);
  fake_.emit({ServerEvent::Kind::gave_up, target_of(b), "its server failed 5 times in a row; last: exit 1", ""});
  turn();
  EXPECT_EQ(counters->servers_given_up.load(), 1u);
  EXPECT_EQ(counters->store_reads_failed.load(), 0u);
  store_.database().set_busy_timeout(std::chrono::milliseconds(100));  // as the loop's own wait
  {
    StoreLockHolder holder(dir_, db_path_, StoreLockHolder::Lock::recovery, std::chrono::seconds(60));
    reconciler().look(std::chrono::steady_clock::now());  // readers wait for a recovery: the look fails
  }
  EXPECT_EQ(counters->store_reads_failed.load(), 1u);
  EXPECT_EQ(counters->store_writes_refused.load(), 0u);
}

TEST_F(ReconcilerTest, ASettingsChangeThatNarrowsAccessReplacesTheServerAtOnce) {
  const NbdExport e = add_export("disk-1", "active");
  ServerSettings older = settings_;
  older.allow_regular_files = true;  // turned off since: narrows access
  fake_.running = {RunningServer{target_of(e), older, FakeSupervisor::unit_of(target_of(e)), e.device_path}};
  fake_.clients_on_port[e.port] = 2;
  begin();
  ASSERT_EQ(fake_.replaced.size(), 1u);
  EXPECT_EQ(fake_.replaced[0], target_of(e));
  const auto spec = supervision::read_server_spec(supervision::server_spec_path(settings_, target_of(e)));
  EXPECT_EQ(spec.settings, settings_);  // what the replacement runs with
  turn();
  EXPECT_FALSE(store_.find_export_server(e.id)->settings_stale.has_value());
  EXPECT_FALSE(any_stale_problem());
}

TEST_F(ReconcilerTest, AWideningSettingsChangeIsReportedAndReplacesTheServerOnlyOnceItHasNoClient) {
  const NbdExport e = add_export("disk-1", "active");
  ServerSettings older = settings_;
  older.max_connections = 8;  // raised to 16 since: widens
  older.server_threads = 2;
  fake_.running = {RunningServer{target_of(e), older, FakeSupervisor::unit_of(target_of(e)), e.device_path}};
  fake_.clients_on_port[e.port] = 2;
  begin();
  turn();
  EXPECT_TRUE(fake_.replaced.empty());
  const auto stale = store_.find_export_server(e.id)->settings_stale;
  ASSERT_TRUE(stale.has_value());
  EXPECT_NE(stale->find("max-connections 8 -> 16"), std::string::npos) << *stale;
  EXPECT_TRUE(any_stale_problem());
  const auto spec = supervision::read_server_spec(supervision::server_spec_path(settings_, target_of(e)));
  EXPECT_EQ(spec.settings, older);  // a restart by the backend meanwhile keeps what the server runs with

  fake_.clients_on_port[e.port] = 0;
  turn();
  ASSERT_EQ(fake_.replaced.size(), 1u);
  turn();
  EXPECT_FALSE(store_.find_export_server(e.id)->settings_stale.has_value());
  EXPECT_FALSE(any_stale_problem());
}

TEST_F(ReconcilerTest, ASpecOfAnotherVersionKeepsItsDevicesToSyncWhenTheServerIsStartedAnew) {
  const NbdExport e = add_export("disk-1");
  const std::string path = supervision::server_spec_path(settings_, target_of(e));
  const std::string earlier = dir_.file("earlier.img");
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  {
    // Written by another version: a key this one does not know, and settings keys it lacks.
    std::ofstream spec(path);
    spec << R"({"format": 7, "settings": {"nbdkit": "nbdkit", "zone": "a"}, "devices": [")" << earlier << R"("]})"
         << '\n';
  }
  EXPECT_EQ(supervision::read_server_spec_devices(path), std::vector<std::string>{earlier});
  const auto old_spec = supervision::read_server_spec(path);
  EXPECT_EQ(old_spec.settings.nbdkit, "nbdkit");
  EXPECT_EQ(old_spec.settings.max_connections, ServerSettings{}.max_connections);  // missing: the default
  begin();
  const auto spec = supervision::read_server_spec(path);
  EXPECT_EQ(spec.settings, settings_);
  EXPECT_EQ(spec.devices, (std::vector<std::string>{earlier, e.device_path}));  // the earlier server's still synced
}

TEST_F(ReconcilerTest, ANewDevicePathIsAddedToTheSpecSoThatTheStopSyncsBoth) {
  const NbdExport e = add_export("disk-1");
  begin();
  const std::string moved = dir_.file("moved.img");
  create_volume_file(moved, kGiB);
  store_.set_mapping_path(store_.get_export(e.export_name).volume_uuid, moved);
  turn();
  const auto spec = supervision::read_server_spec(supervision::server_spec_path(settings_, target_of(e)));
  EXPECT_EQ(spec.devices, (std::vector<std::string>{e.device_path, moved}));
  EXPECT_EQ(spec.device, moved);  // the one its server may open from now on
}

TEST_F(ReconcilerTest, AMovedMappingIsToldToTheSupervisorOnceSoThatTheServerMayOpenOnlyTheNewDevice) {
  const NbdExport e = add_export("disk-1");
  begin();
  turn();
  EXPECT_TRUE(fake_.device_changes.empty());  // a start reads its device from the spec
  const std::string moved = dir_.file("moved.img");
  create_volume_file(moved, kGiB);
  store_.set_mapping_path(store_.get_export(e.export_name).volume_uuid, moved);
  turn();
  turn();
  EXPECT_EQ(fake_.device_changes, std::vector<supervision::ServerTarget>{target_of(e)});
  store_.set_mapping_path(store_.get_export(e.export_name).volume_uuid, e.device_path);  // and back
  turn();
  EXPECT_EQ(fake_.device_changes.size(), 2u);
  EXPECT_EQ(supervision::read_server_spec(supervision::server_spec_path(settings_, target_of(e))).device,
            e.device_path);
}

// A unit may open only the node its export's device path resolves to: when the path's link appears only after the
// export is served (udev makes /dev/disk/by-id links when it gets to it), or is moved to another node, the
// supervisor is told again though the store's path is unchanged.
TEST_F(ReconcilerTest, ADevicePathThatResolvesToAnotherNodeIsToldToTheSupervisor) {
  const NbdExport e = add_export("disk-1", "active");
  const std::string link = dir_.file("by-id/virtio-volume");  // not made yet
  store_.set_mapping_path(e.volume_uuid, link);
  begin();
  turn();
  EXPECT_TRUE(fake_.device_changes.empty());
  std::filesystem::create_directory(dir_.file("by-id"));
  std::filesystem::create_symlink(e.device_path, link);  // udev made it
  turn();
  EXPECT_EQ(fake_.device_changes, std::vector<supervision::ServerTarget>{target_of(e)});
  turn();
  EXPECT_EQ(fake_.device_changes.size(), 1u);  // told once per change
  const std::string other = dir_.file("other.img");
  create_volume_file(other, kGiB);
  std::filesystem::remove(link);
  std::filesystem::create_symlink(other, link);  // the volume attached again under another node
  turn();
  EXPECT_EQ(fake_.device_changes.size(), 2u);
}

TEST_F(ReconcilerTest, AnAdoptedServerWhoseMappingMovedMeanwhileIsToldItsNewDevice) {
  const NbdExport moved = add_export("disk-1", "active");
  const NbdExport unmoved = add_export("disk-2", "active");
  fake_.running = {
      RunningServer{target_of(moved), settings_, FakeSupervisor::unit_of(target_of(moved)),
                    dir_.file("where-it-was.img")},
      RunningServer{target_of(unmoved), settings_, FakeSupervisor::unit_of(target_of(unmoved)), unmoved.device_path}};
  begin();
  turn();
  EXPECT_EQ(fake_.device_changes, std::vector<supervision::ServerTarget>{target_of(moved)});
}

TEST_F(ReconcilerTest, AnotherWriterTurningTlsOnReplacesTheServerAtOnceWithAKeyThatGoesWithTheExport) {
  const NbdExport e = add_export("disk-1");
  fake_.clients_on_port[e.port] = 2;
  begin();
  db_.sql().exec(fmt::format("UPDATE nbd_exports SET tls = 1 WHERE id = {}", e.id));
  turn();
  ASSERT_EQ(fake_.replaced.size(), 1u);  // at once, clients or not: TLS on narrows access
  const auto spec = supervision::read_server_spec(supervision::server_spec_path(settings_, target_of(e)));
  EXPECT_TRUE(spec.settings.tls);
  const std::string key = supervision::tls_psk_path(db_path_, target_of(e));
  struct stat st {};
  ASSERT_EQ(::stat(key.c_str(), &st), 0) << key;
  EXPECT_EQ(st.st_mode & 07777, 0600u);

  store_.revoke_exports({e.export_name, std::nullopt, std::nullopt}, "test");
  turn();
  fake_.emit({ServerEvent::Kind::stopped, target_of(e), "", ""});
  turn();
  EXPECT_FALSE(std::filesystem::exists(key));
}

TEST_F(ReconcilerTest, AnAllowlistThatOnlyGrowsWaitsUntilTheServerHasNoClient) {
  const NbdExport e = add_export("disk-1");
  db_.sql().exec(fmt::format("UPDATE nbd_exports SET allow_from = '127.0.0.1/32' WHERE id = {}", e.id));
  fake_.clients_on_port[e.port] = 2;
  begin();
  db_.sql().exec(fmt::format("UPDATE nbd_exports SET allow_from = '127.0.0.1/32,10.0.0.0/8' WHERE id = {}", e.id));
  turn();
  EXPECT_TRUE(fake_.replaced.empty());
  const auto stale = store_.find_export_server(e.id)->settings_stale;
  ASSERT_TRUE(stale.has_value());
  EXPECT_EQ(*stale, "allow-from 127.0.0.1/32 -> 127.0.0.1/32,10.0.0.0/8");
  fake_.clients_on_port[e.port] = 0;
  turn();
  ASSERT_EQ(fake_.replaced.size(), 1u);

  // Dropping a network narrows: replaced at once.
  fake_.clients_on_port[e.port] = 2;
  db_.sql().exec(fmt::format("UPDATE nbd_exports SET allow_from = '10.0.0.0/8' WHERE id = {}", e.id));
  turn();
  EXPECT_EQ(fake_.replaced.size(), 2u);
  EXPECT_EQ(supervision::read_server_spec(supervision::server_spec_path(settings_, target_of(e))).settings.allow_from,
            "10.0.0.0/8");
}

TEST_F(ReconcilerTest, AnAccessChangeDuringAReplacementReplacesTheServerAgainOnceItServes) {
  const NbdExport e = add_export("disk-1");
  fake_.clients_on_port[e.port] = 2;
  begin();
  fake_.serve_at_once = false;  // the replacement below stays in flight until `serving` is emitted
  db_.sql().exec(fmt::format("UPDATE nbd_exports SET allow_from = '10.0.0.0/8' WHERE id = {}", e.id));
  turn();
  ASSERT_EQ(fake_.replaced.size(), 1u);
  db_.sql().exec(fmt::format("UPDATE nbd_exports SET tls = 1 WHERE id = {}", e.id));
  turn();
  EXPECT_EQ(fake_.replaced.size(), 1u);  // one replacement at a time
  fake_.emit({ServerEvent::Kind::serving, target_of(e), "", ""});
  turn();
  ASSERT_EQ(fake_.replaced.size(), 2u);  // the server that came up runs without TLS: replaced at once
  EXPECT_TRUE(supervision::read_server_spec(supervision::server_spec_path(settings_, target_of(e))).settings.tls);
}

// A manager restarted while its shared server runs on (under systemd) adopts it with what it served, from its spec:
// a live export stays recorded served and keeps every device it was mapped to (all synced at its end); one that
// ended while no manager ran is ended: its devices are synced (here a FIFO, whose fdatasync fails: the failure is
// charged to it) and it leaves the spec.
TEST_F(ReconcilerTest, AnAdoptedSharedServerKeepsWhatItServedAndEndsTheExportsThatEndedMeanwhile) {
  const auto add_shared = [&](const std::string& disk_id) {
    const auto volume = add_volume("job-1", disk_id);
    NewExport request{"job-1", disk_id, std::nullopt, std::nullopt, "on-close", "shared"};
    const auto e = store_.create_export(request, PortAllocator(port_range(), "127.0.0.1"));
    return std::make_pair(volume, store_.get_export(e.export_name));
  };
  const auto [kept_volume, kept] = add_shared("disk-1");
  const auto [ended_volume, ended] = add_shared("disk-2");
  const std::string fifo = dir_.file("unsyncable");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  store_.set_mapping_path(ended_volume.uuid, fifo);
  ServerTarget shared;
  shared.export_name = supervision::kSharedServerName;
  shared.port = ports_.high();
  shared.address = "127.0.0.1";
  ServerSettings shared_settings = settings_;
  shared_settings.shared = true;
  const std::string spec_path = supervision::server_spec_path(shared_settings, shared);

  reconciler().serve_shared(shared);
  begin();
  turn();
  ASSERT_TRUE(store_.find_export_server(kept.id)->running());
  ASSERT_TRUE(store_.find_export_server(ended.id)->running());
  const std::string moved = dir_.file("moved.img");
  create_volume_file(moved, kept.size);
  store_.set_mapping_path(kept_volume.uuid, moved);
  turn();
  reconciler_.reset();  // the manager dies; its shared server runs on
  store_.set_export_status(ended.export_name, "revoked");

  fake_.running = {RunningServer{shared, shared_settings, "nbdxm-shared.service", ""}};
  reconciler().serve_shared(shared);
  begin();
  turn();
  turn();
  const auto spec = supervision::read_server_spec(spec_path);
  EXPECT_EQ(spec.devices, (std::vector<std::string>{kept.device_path, moved}));
  EXPECT_TRUE(store_.find_export_server(kept.id)->running());
  EXPECT_FALSE(store_.find_export_server(ended.id)->running());
  const auto failures = store_.durability_failures(true);
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0].export_id, ended.id);
  EXPECT_NE(failures[0].reason.find(fifo + ": fdatasync"), std::string::npos) << failures[0].reason;
}

// The loop's check reads the live exports only when the store changed, so that an idle manager costs as little with
// 1,000 live exports as with one; a commit of another connection (an appliance service's raw SQL) is looked at.
TEST_F(ReconcilerTest, TheLoopsCheckReadsTheExportsOnlyAfterAnotherConnectionCommitted) {
  const NbdExport e = add_export("disk-1");
  begin();
  turn();
  ASSERT_EQ(store_.get_export(e.export_name).status, "active");
  auto now = std::chrono::steady_clock::now();
  reconciler().check(now);  // what the turn left to do, if anything
  reconciler().advance(now);
  {
    const ExportReads reads(db_);
    for (int k = 0; k < 3; ++k) {
      now += Reconciler::kResync;  // the checks of what no commit announces come due too
      reconciler().check(now);
      reconciler().advance(now);
    }
    EXPECT_EQ(reads.count(), 0);
    Database other = Database::open(db_path_, Database::Access::read_write);
    other.sql().exec(fmt::format("UPDATE nbd_exports SET status = 'revoked' WHERE id = {}", e.id));
    reconciler().check(now);
    EXPECT_GT(reads.count(), 0);
  }
  ASSERT_EQ(fake_.stopped.size(), 1u);
  EXPECT_EQ(fake_.stopped[0], target_of(e));
}

// A commit of the manager's own connection leaves data_version as it is: the export failure it records is followed by
// the stop of the export's server at the next check all the same.
TEST_F(ReconcilerTest, AFailureTheManagerRecordedIsFollowedByTheStopAtTheNextCheck) {
  fake_.serve_at_once = false;
  const NbdExport e = add_export("disk-1");
  begin();
  const auto now = std::chrono::steady_clock::now();
  reconciler().check(now);
  reconciler().advance(now);
  fake_.emit({ServerEvent::Kind::gave_up, target_of(e), "its server failed 5 times in a row; last: exit 1", ""});
  reconciler().advance(now);
  ASSERT_EQ(store_.get_export(e.export_name).status, "failed");
  EXPECT_TRUE(fake_.stopped.empty());
  reconciler().check(now);
  ASSERT_EQ(fake_.stopped.size(), 1u);
  EXPECT_EQ(fake_.stopped[0], target_of(e));
}

// udev makes and moves /dev/disk/by-id links without a commit to the store: the loop's check follows them (from the
// link directory's time, without resolving every path while nothing changed).
TEST_F(ReconcilerTest, ALinkMadeOrMovedWithoutACommitIsFollowedByTheLoopsCheck) {
  const NbdExport e = add_export("disk-1", "active");
  const std::string by_id = dir_.file("by-id");
  std::filesystem::create_directory(by_id);
  const std::string link = by_id + "/virtio-volume";  // not made yet
  store_.set_mapping_path(e.volume_uuid, link);
  // Changed long ago: only a change from here on makes the directory look changed.
  std::filesystem::last_write_time(by_id, std::filesystem::file_time_type::clock::now() - std::chrono::hours(1));
  begin();
  auto now = std::chrono::steady_clock::now();
  reconciler().check(now);
  reconciler().advance(now);
  EXPECT_TRUE(fake_.device_changes.empty());
  std::filesystem::create_symlink(e.device_path, link);  // udev made it
  now += Reconciler::kResync;
  reconciler().check(now);
  EXPECT_EQ(fake_.device_changes, std::vector<supervision::ServerTarget>{target_of(e)});
  const std::string other = dir_.file("other.img");
  create_volume_file(other, kGiB);
  std::filesystem::remove(link);
  std::filesystem::create_symlink(other, link);  // the volume attached again under another node
  now += Reconciler::kResync;
  reconciler().check(now);
  EXPECT_EQ(fake_.device_changes.size(), 2u);

  // While the directory's time says that nothing changed, no path is resolved: a move made to look as if nothing
  // had changed (the time put back) goes unseen, as it would if the checks resolved every path.
  const auto long_ago = std::filesystem::file_time_type::clock::now() - std::chrono::hours(1);
  std::filesystem::last_write_time(by_id, long_ago);
  now += Reconciler::kResync;
  reconciler().check(now);  // sees the time put back
  ASSERT_EQ(fake_.device_changes.size(), 2u);
  std::filesystem::remove(link);
  std::filesystem::create_symlink(e.device_path, link);
  std::filesystem::last_write_time(by_id, long_ago);
  now += Reconciler::kResync;
  reconciler().check(now);
  EXPECT_EQ(fake_.device_changes.size(), 2u);
}

}  // namespace
}  // namespace nbdxm::test
