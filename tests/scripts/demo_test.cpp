// scripts/demo as a new user runs it, `scripts/demo DIR | tee demo.log`, stopped with Ctrl-C: the terminal sends
// SIGINT to the whole foreground process group, so tee dies with the script. Everything the demo started must stop
// (the manager and the export's server) and its job must end, also when a second Ctrl-C follows while it stops.
#include <fmt/format.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "manager_harness.hpp"

namespace nbdxm::test {
namespace {

using namespace std::chrono_literals;

std::string text_of(const std::string& path) {
  std::stringstream text;
  text << std::ifstream(path).rdbuf();
  return text.str();
}

class DemoTest : public ::testing::Test {
 protected:
  ~DemoTest() override {
    if (demo_) ::kill(-demo_->pid(), SIGKILL);  // whatever of the pipeline is left, when the test failed
    try {
      Database db = Database::open(db_, Database::Access::read_only);
      ExportStore store(db);
      if (const auto manager = store.running_manager(still_running)) {
        // Checked as running just now: the pid is the manager's (its servers, direct children, go with it).
        ::kill(manager->process.pid, SIGTERM);
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        while (still_running(manager->process) && std::chrono::steady_clock::now() < deadline) {
          std::this_thread::sleep_for(20ms);
        }
        if (still_running(manager->process)) ::kill(manager->process.pid, SIGKILL);
      }
    } catch (const std::exception&) {
      // no store yet: the demo stopped before it started the manager
    }
  }

  // `scripts/demo DIR | tee LOG` in a process group of its own, with this build's binaries and this test's ports;
  // returns once the demo says it is serving.
  void start_demo() {
    SpawnOptions options;
    options.argv = {"bash", "-c", "\"$0\" \"$1\" | tee \"$2\"", NBDXM_DEMO_SCRIPT, demo_dir_, tee_log_};
    options.extra_env = nbdkit_environment();
    options.extra_env.push_back(fmt::format("NBDXM_DEMO_BUILD={}", NBDXM_BUILD_DIR));
    options.extra_env.push_back(fmt::format("NBDXM_DEMO_PORTS={}", ports_.range(8)));
    options.unset_env = nbdkit_unset_environment();
    options.unset_env.push_back("NBDXM_DB");
    options.stdout_path = dir_.file("terminal.out");
    options.stderr_path = terminal_;
    options.new_session = true;  // its pid is its process group's id, as a shell's job
    demo_.emplace(ChildProcess::spawn(options));
    const bool serving = wait_until(
        [&] { return text_of(tee_log_).find("until Ctrl-C") != std::string::npos || !demo_->running(); }, 180s);
    ASSERT_TRUE(serving && demo_->running()) << "the demo did not get to serving:\n"
                                             << text_of(tee_log_) << text_of(terminal_);
    ASSERT_FALSE(servers_of(db_).empty()) << text_of(tee_log_);
    ASSERT_EQ(job_status(), "replicating");
  }

  void ctrl_c() { ASSERT_EQ(::kill(-demo_->pid(), SIGINT), 0); }

  // Whether a process of the demo's process group has `words` (NUL-separated in /proc, '\n' here) in its command.
  bool in_process_group(std::string words) {
    std::replace(words.begin(), words.end(), '\n', '\0');
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
      const pid_t pid = static_cast<pid_t>(std::atoi(entry.path().filename().c_str()));
      if (pid <= 0 || ::getpgid(pid) != demo_->pid()) continue;
      if (text_of(entry.path() / "cmdline").find(words) != std::string::npos) return true;
    }
    return false;
  }

  std::string job_status() {
    Database db = Database::open(db_, Database::Access::read_only);
    ExportStore store(db);
    return store.get_job("demo-job").status;
  }

  // Waits for the pipeline to end, then expects nothing of the demo left running and its job ended.
  void expect_everything_stopped() {
    const auto status = demo_->wait(120s);
    ASSERT_TRUE(status.has_value()) << "the demo did not end after Ctrl-C:\n" << text_of(terminal_);
    // The pipe's reader died with the same Ctrl-C: the user learns that the demo stopped on the terminal itself.
    EXPECT_NE(text_of(terminal_).find("stopped; the store and the volume stay in"), std::string::npos)
        << "the demo did not say it stopped:\n"
        << text_of(terminal_);
    Database db = Database::open(db_, Database::Access::read_only);
    ExportStore store(db);
    EXPECT_FALSE(store.running_manager(still_running).has_value()) << "the manager still runs:\n" << text_of(terminal_);
    EXPECT_TRUE(servers_of(db_).empty()) << "an export server still runs:\n" << text_of(terminal_);
    EXPECT_EQ(store.get_job("demo-job").status, "completed") << text_of(terminal_);
    for (const auto& e : store.list_exports({})) EXPECT_FALSE(e.live()) << e.export_name << " is " << e.status;
  }

  TempDir dir_;
  std::string demo_dir_ = dir_.file("demo");
  std::string db_ = demo_dir_ + "/state.db";
  std::string tee_log_ = dir_.file("demo.log");
  std::string terminal_ = dir_.file("terminal.err");  // what the demo writes to standard error
  PortBlock ports_;
  ServerReaper reaper_{db_};
  std::optional<ChildProcess> demo_;
};

TEST_F(DemoTest, CtrlCThroughTeeStopsEverything) {
  start_demo();
  ctrl_c();
  expect_everything_stopped();
}

TEST_F(DemoTest, ASecondCtrlCWhileStoppingLeavesNothingHalfStopped) {
  start_demo();
  {
    // Holding the store's write lock keeps the cleanup at its first store write (`nbdxm job set-status`, which
    // waits for the lock), so that the second Ctrl-C surely arrives while it stops things: a cleanup that the
    // second Ctrl-C interrupts leaves the job replicating and the manager and the export's server running.
    SQLite::Database blocker(db_, SQLite::OPEN_READWRITE);
    blocker.exec("BEGIN IMMEDIATE");
    ctrl_c();
    ASSERT_TRUE(wait_until([&] { return in_process_group("job\nset-status"); }, 60s)) << text_of(terminal_);
    ctrl_c();
    blocker.exec("ROLLBACK");
  }
  expect_everything_stopped();
}

}  // namespace
}  // namespace nbdxm::test
