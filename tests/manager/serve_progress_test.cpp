// Progress measured on the servers, through the real manager, plugin and clients: the manager folds each export's
// counter file into the store (export_counters and the export's vm_disk: bytes_synced, sync_progress_percent,
// sync_status), `nbdxm export list` shows it and `nbdxm export watch` draws it, both from the store alone. Every wait
// is for the event, with a generous bound: nothing here asserts on timing.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <regex>

#include "manager_harness.hpp"

namespace nbdxm::test {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

constexpr int64_t kGiB = int64_t{1} << 30;

std::string uri_of(const NbdExport& e) { return fmt::format("nbd://127.0.0.1:{}/{}", e.port, e.export_name); }

// A tmux server of the test's own (its own socket: other sessions on the machine are not touched), killed with its
// sessions when destroyed.
class Tmux {
 public:
  explicit Tmux(std::string socket) : socket_(std::move(socket)) {}
  ~Tmux() { run_program({"tmux", "-S", socket_, "kill-server"}); }
  Tmux(const Tmux&) = delete;
  Tmux& operator=(const Tmux&) = delete;

  // A detached session running `command` in a 200x50 terminal.
  void start(const std::string& session, const std::string& command) {
    std::string output;
    if (run_program({"tmux", "-S", socket_, "new-session", "-d", "-s", session, "-x", "200", "-y", "50", command},
                    &output) != 0) {
      throw std::runtime_error("tmux new-session: " + output);
    }
  }
  std::string screen(const std::string& session) {
    std::string output;
    run_program({"tmux", "-S", socket_, "capture-pane", "-p", "-t", session}, &output);
    return output;
  }

 private:
  std::string socket_;
};

// The percent the watch's bar of `name` shows on `screen`, if it shows one.
std::optional<double> shown_percent(const std::string& screen, const std::string& name) {
  const std::regex line(name + R"( +\[[#-]+\] +([0-9.]+)%)");
  std::smatch match;
  if (!std::regex_search(screen, match, line)) return std::nullopt;
  return std::stod(match[1].str());
}

class ServeProgressTest : public ManagerTest {
 protected:
  NbdExport created(const Volume& volume) {
    const CliResult result = create(volume);
    if (result.code != 0) throw std::runtime_error("export create failed: " + result.err);
    return export_of(volume);
  }
  // The counters of the export's current life in the store, if the manager has written them.
  std::optional<ExportCounterRecord> counters(const NbdExport& e) {
    for (const auto& c : store_.current_export_counters()) {
      if (c.export_id == e.id) return c;
    }
    return std::nullopt;
  }
  // Waits until the store's counters of the export satisfy `done`; returns the last ones read.
  ExportCounterRecord wait_counters(const NbdExport& e, const std::function<bool(const ExportCounterRecord&)>& done) {
    ExportCounterRecord last;
    const bool reached = wait_until(
        [&] {
          const auto c = counters(e);
          if (c) last = *c;
          return c && done(*c);
        },
        30s);
    EXPECT_TRUE(reached) << "counters in the store: bytes_written " << last.bytes_written << ", coverage "
                         << last.coverage_bytes << ", rate " << last.write_rate_bytes_per_second << "\n"
                         << manager_.log();
    return last;
  }
  VmDisk disk_of(const Volume& volume) { return store_.get_disk(volume.job_id, volume.disk_id); }
  Json listed(const NbdExport& e) {
    const CliResult result = nbdxm({"--json", "export", "list"});
    if (result.code != 0) throw std::runtime_error("export list failed: " + result.err);
    for (const auto& row : Json::parse(result.out)) {
      if (row["export_name"] == e.export_name) return row;
    }
    throw std::runtime_error("export list does not list " + e.export_name + ": " + result.out);
  }
};

TEST_F(ServeProgressTest, TheSameMiBWrittenTenTimesCoversOneMiB) {
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  const NbdExport e = created(volume);
  {
    TcpClient client(e.port, e.export_name);
    for (int i = 0; i < 10; ++i) client.write(pattern(kMiB, i), 0);
  }
  const auto c = wait_counters(e, [](const auto& now) { return now.bytes_written == 10 * kMiB; });
  EXPECT_EQ(c.coverage_bytes, kMiB);
  EXPECT_EQ(c.requests[1], 10);  // write
  EXPECT_EQ(c.volume_size, kGiB);
  EXPECT_TRUE(c.last_write_at.has_value());
  const VmDisk disk = disk_of(volume);
  EXPECT_EQ(disk.bytes_synced, 10 * kMiB);                     // bytes written in this job, rewrites included
  EXPECT_DOUBLE_EQ(disk.sync_progress_percent, 100.0 / 1024);  // what it covers of the disk: 1 MiB of 1 GiB
  EXPECT_EQ(disk.sync_status, "syncing");
}

// The disk's size is whole GiB and its volume at least as large, so the smallest volume that can be exported is
// 1 GiB: nbdcopy copies a sparse 1 GiB source holding 64 MiB of data (the rest it zeroes).
TEST_F(ServeProgressTest, ACopyOfTheWholeVolumeThroughNbdcopyReaches100Percent) {
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  const NbdExport e = created(volume);
  const std::string source = dir_.file("source.img");
  create_volume_file(source, kGiB);
  for (int i = 0; i < 16; ++i) write_file(source, pattern(4 * kMiB, static_cast<uint32_t>(i)), i * 64 * kMiB);
  std::string output;
  ASSERT_EQ(run_program({"nbdcopy", source, uri_of(e)}, &output), 0) << output;

  VmDisk disk;
  EXPECT_TRUE(wait_until(
      [&] {
        disk = disk_of(volume);
        return disk.sync_progress_percent == 100.0;
      },
      30s))
      << "sync_progress_percent " << disk.sync_progress_percent << "\n"
      << manager_.log();
  const auto c = wait_counters(e, [](const auto& now) { return now.connections_open == 0; });
  EXPECT_EQ(c.coverage_bytes, kGiB);
  EXPECT_EQ(c.bytes_written + c.bytes_zeroed, kGiB);  // each byte once: written (data) or zeroed (holes)
  EXPECT_GT(c.bytes_zeroed, 0);
  EXPECT_EQ(disk_of(volume).bytes_synced, kGiB);
  EXPECT_EQ(disk.sync_status, "syncing");  // finished is the control plane's to say
  EXPECT_EQ(listed(e)["progress_percent"], 100.0);
  EXPECT_TRUE(files_equal(source, volume.path, kGiB));
}

TEST_F(ServeProgressTest, TwoConnectionsWritingDisjointHalvesAddUp) {
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  const NbdExport e = created(volume);
  TcpClient first(e.port, e.export_name);
  TcpClient second(e.port, e.export_name);
  constexpr int64_t kHalf = 512 * kMiB;
  constexpr int64_t kEach = 32 * kMiB;  // of each half
  // The first connection's writes are in the store before the second one writes: the second must add to them.
  for (int64_t offset = 0; offset < kEach; offset += 4 * kMiB) first.write(pattern(4 * kMiB, 1), offset);
  wait_counters(e, [](const auto& now) { return now.bytes_written == kEach; });
  for (int64_t offset = 0; offset < kEach; offset += 4 * kMiB) second.write(pattern(4 * kMiB, 2), kHalf + offset);
  const auto c = wait_counters(e, [](const auto& now) { return now.bytes_written == 2 * kEach; });
  EXPECT_EQ(c.coverage_bytes, 2 * kEach);
  EXPECT_EQ(c.connections_open, 2);
  EXPECT_TRUE(wait_until([&] { return disk_of(volume).bytes_synced == 2 * kEach; }, 30s))
      << "bytes_synced " << disk_of(volume).bytes_synced;
  EXPECT_DOUBLE_EQ(disk_of(volume).sync_progress_percent, 100.0 * 2 * kEach / kGiB);
}

TEST_F(ServeProgressTest, ExportListGivesProgressWriteRateAndLastWrite) {
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  const NbdExport e = created(volume);
  TcpClient client(e.port, e.export_name);
  // Its counters are in the store (the connection counted) before it writes, so the rate has a sample before it.
  wait_counters(e, [](const auto& now) { return now.connections_open == 1; });
  for (int i = 0; i < 8; ++i) client.write(pattern(4 * kMiB, i), static_cast<uint64_t>(i) * 4 * kMiB);
  Json row;
  EXPECT_TRUE(wait_until(
      [&] {
        row = listed(e);
        return row["bytes_written"] == 32 * kMiB && row["write_mib_per_s"].get<double>() > 0;
      },
      30s))
      << row.dump(2);
  EXPECT_EQ(row["progress_percent"], 3.1);  // 32 MiB of 1 GiB, one decimal
  EXPECT_EQ(row["coverage_bytes"], 32 * kMiB);
  EXPECT_EQ(row["connections_open"], 1);
  ASSERT_TRUE(row["last_write_at"].is_string()) << row.dump(2);
  EXPECT_EQ(row["last_write_at"].get<std::string>().size(), std::string("2026-11-27T23:12:00.123Z").size());
  // No more writes: the rate over the last 10 s falls back to 0.
  EXPECT_TRUE(wait_until([&] { return listed(e)["write_mib_per_s"] == 0.0; }, 30s)) << listed(e).dump(2);

  const CliResult text = nbdxm({"export", "list"});
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_NE(text.out.find("progress_percent"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find(" 3.1 "), std::string::npos) << text.out;
  EXPECT_NE(text.out.find(row["last_write_at"].get<std::string>()), std::string::npos) << text.out;
}

TEST_F(ServeProgressTest, WatchInATerminalShowsTheBarAdvanceDuringACopyAndExitsWhenRevoked) {
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  const NbdExport e = created(volume);
  // A copy slow enough to watch: nbdcopy reads a 1 GiB pattern from an nbdkit whose every read takes 0.2 s.
  SpawnOptions copy;
  copy.argv = {"nbdcopy",      "--connections=1",
               "--requests=1", "--request-size=4194304",
               "--",           "[",
               "nbdkit",       "--exit-with-parent",
               "-r",           "--filter=delay",
               "pattern",      "1G",
               "rdelay=200ms", "]",
               uri_of(e)};
  copy.stdout_path = dir_.file("nbdcopy.log");
  copy.stderr_path = dir_.file("nbdcopy.log");
  ChildProcess nbdcopy = ChildProcess::spawn(copy);

  Tmux tmux(dir_.file("tmux.sock"));
  tmux.start("watch", fmt::format("{} --db {} export watch {}; echo watch-exited-$?; sleep 600", NBDXM_BINARY, db_path_,
                                  e.export_name));
  std::string screen;
  std::optional<double> first;
  EXPECT_TRUE(wait_until(
      [&] {
        screen = tmux.screen("watch");
        first = shown_percent(screen, e.export_name);
        return first && *first > 0;
      },
      30s))
      << screen << manager_.log();
  ASSERT_TRUE(first);
  std::optional<double> later;
  EXPECT_TRUE(wait_until(
      [&] {
        screen = tmux.screen("watch");
        later = shown_percent(screen, e.export_name);
        return later && *later > *first;
      },
      30s))
      << screen;
  ASSERT_TRUE(later);
  EXPECT_LT(*later, 100.0) << "the copy should still run";
  EXPECT_NE(screen.find("active"), std::string::npos) << screen;
  EXPECT_NE(screen.find(" conn "), std::string::npos) << screen;
  EXPECT_TRUE(nbdcopy.running()) << read_file(dir_.file("nbdcopy.log"));

  const CliResult revoked = nbdxm({"export", "revoke", e.export_name});
  EXPECT_EQ(revoked.code, 0) << revoked.err;
  EXPECT_TRUE(wait_until(
      [&] {
        screen = tmux.screen("watch");
        return screen.find("watch-exited-0") != std::string::npos;
      },
      30s))
      << screen;
  EXPECT_NE(screen.find("revoked"), std::string::npos) << screen;
  nbdcopy.stop(5s);  // cut off by the revoke; stopped here if it still waits
}

TEST_F(ServeProgressTest, WatchJsonGivesOneLinePerRefreshAndRefusesBadInput) {
  manager_.start();
  const auto volume = add_volume("job-1", "disk-1");
  const NbdExport e = created(volume);
  {
    TcpClient client(e.port, e.export_name);
    client.write(pattern(kMiB, 1), 0);
  }
  wait_counters(e, [](const auto& now) { return now.bytes_written == kMiB && now.connections_open == 0; });
  ASSERT_EQ(nbdxm({"job", "set-status", "job-1", "completed"}).code, 0);  // its export is revoked
  const CliResult watched = nbdxm({"--json", "export", "watch", "--job", "job-1"});
  ASSERT_EQ(watched.code, 0) << watched.err;
  const Json frame = Json::parse(watched.out.substr(0, watched.out.find('\n')));
  EXPECT_TRUE(frame["ended"].get<bool>()) << watched.out;
  ASSERT_EQ(frame["exports"].size(), 1u) << watched.out;
  EXPECT_EQ(frame["exports"][0]["status"], "revoked");
  EXPECT_EQ(frame["exports"][0]["bytes_written"], kMiB);
  EXPECT_EQ(frame["exports"][0]["progress_percent"], 0.1);

  EXPECT_EQ(nbdxm({"export", "watch", e.export_name, "--job", "job-1"}).code, 2);
  EXPECT_EQ(nbdxm({"export", "watch", "--interval", "0"}).code, 2);
  const CliResult missing = nbdxm({"export", "watch", "no-such-export"});
  EXPECT_EQ(missing.code, 3);
  EXPECT_NE(missing.err.find("no-such-export"), std::string::npos) << missing.err;
}

}  // namespace
}  // namespace nbdxm::test
