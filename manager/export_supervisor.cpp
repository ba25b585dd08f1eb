#include "export_supervisor.hpp"

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "nbdxm/error.hpp"
#include "serve_log.hpp"

namespace nbdxm::cli {
namespace {

using namespace std::chrono_literals;

constexpr auto kPidFilePoll = 5ms;  // the pid file usually appears within a millisecond of the launcher's exit
constexpr auto kKillWait = 2s;
constexpr auto kCutInterval = 100ms;

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return "stopped";
}

// The last non-empty line nbdkit wrote before it forked or failed: the reason it gives.
std::string last_line(const std::string& path) {
  std::ifstream in(path);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty()) last = line;
  }
  return last;
}

// The pid in a pid file, once nbdkit has written it completely (it can exist empty for a moment).
std::optional<pid_t> read_pid_file(const std::string& path) {
  std::ifstream in(path);
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (content.empty() || content.back() != '\n') return std::nullopt;
  content.pop_back();
  if (content.empty() || !std::all_of(content.begin(), content.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  return static_cast<pid_t>(std::stol(content));
}

std::chrono::milliseconds backoff(int failures) {
  const auto delay = 100ms * (1 << std::min(failures - 1, 6));
  return std::min<std::chrono::milliseconds>(delay, 5s);
}

}  // namespace

ExportSupervisor::ExportSupervisor(ServerTarget target, const ServerSettings& settings, StoreWrites& writes)
    : target_(std::move(target)), settings_(settings), writes_(writes) {}

bool ExportSupervisor::settled() const {
  return phase_ == Phase::running || phase_ == Phase::stopped || phase_ == Phase::failed;
}

bool ExportSupervisor::finished() const { return phase_ == Phase::stopped || phase_ == Phase::failed; }

std::optional<ProcessIdentity> ExportSupervisor::server() const {
  if (!server_) return std::nullopt;
  return server_->identity();
}

std::string ExportSupervisor::describe() const {
  return fmt::format("export {} (port {})", target_.export_name, target_.port);
}

void ExportSupervisor::start(Clock::time_point now) { launch(now); }

void ExportSupervisor::adopt(ProcessHandle server, bool as_recorded, Clock::time_point now) {
  server_ = std::move(server);
  phase_ = Phase::running;
  running_since_ = now;
  deadline_ = Clock::time_point::max();
  if (!as_recorded) record_running(now);
}

void ExportSupervisor::reactivate(Clock::time_point now) {
  if (phase_ != Phase::running || writes_.waiting_for(target_.export_id)) return;  // recorded once it is running
  if (!owns_listener(server_->identity().pid, target_.port)) return;               // not serving: its exit restarts it
  log_event("{}: is pending again in the store while its server pid {} runs; recording the server again", describe(),
            server_->identity().pid);
  record_running(now);
}

void ExportSupervisor::launch(Clock::time_point now) {
  const std::string pid_file = server_pid_file(settings_.run_dir, target_.export_id);
  const std::string log_file = server_log_file(settings_.run_dir, target_.export_id);
  std::error_code ec;
  std::filesystem::remove(pid_file, ec);
  std::filesystem::remove(log_file, ec);
  SpawnOptions options;
  // nbdkit is started through `setsid --wait`, which stays its parent until it has forked the server. nbdkit's
  // launcher gets a parent-death signal, and its signal handler writes the quit pipe that it shares with the server
  // it just forked: had the manager itself been the parent and died in that window, the server would be left
  // listening without ever accepting (seen: the server spinning in poll). setsid outlives a killed manager.
  options.argv = {"setsid", "--wait"};
  const auto nbdkit_argv = server_argv(settings_, target_);
  options.argv.insert(options.argv.end(), nbdkit_argv.begin(), nbdkit_argv.end());
  options.stdout_path = "/dev/null";
  options.stderr_path = log_file;  // what nbdkit says before it forks (after that it logs to syslog)
  options.new_session = true;      // no terminal signal (Ctrl-C) or process-group signal reaches the server
  options.close_other_fds = true;
  // The server must not talk to systemd as if it were the manager.
  options.unset_env = {"NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID"};
  try {
    launcher_.emplace(ChildProcess::spawn(options));
  } catch (const Error& e) {
    on_failure(e.what(), now);
    return;
  }
  phase_ = Phase::launching;
  deadline_ = now + kLaunchTimeout;
}

void ExportSupervisor::stop(Clock::time_point now) {
  stop_requested_ = true;
  switch (phase_) {
    case Phase::idle:
    case Phase::backoff:
      phase_ = Phase::stopped;
      break;
    case Phase::running:
      terminate_server(now);
      break;
    case Phase::launching:
    case Phase::awaiting_pid:  // stopped as soon as the launch yields its server
    case Phase::stopping:
    case Phase::stopped:
    case Phase::failed:
      break;
  }
}

void ExportSupervisor::release() {
  if (launcher_) launcher_->release();
  launcher_.reset();
  server_.reset();
  phase_ = Phase::stopped;
}

void ExportSupervisor::terminate_server(Clock::time_point now) {
  phase_ = Phase::stopping;
  if (!deliver(SIGTERM, now)) return;
  deadline_ = now + kStopGrace;
  close_connections(now);
}

bool ExportSupervisor::deliver(int signo, Clock::time_point now) {
  const int error = server_->signal(signo);
  if (error == 0) return true;
  if (error == ESRCH) {
    on_server_exit(now);
  } else {
    // Another user's process (the manager's user changed?): nothing this manager may do about it.
    log_event("{}: cannot signal server pid {}: {}; leaving it running", describe(), server_->identity().pid,
              std::strerror(error));
    server_.reset();
    phase_ = Phase::stopped;
  }
  return false;
}

void ExportSupervisor::close_connections(Clock::time_point now) {
  next_cut_ = now + kCutInterval;
  const pid_t pid = server_->identity().pid;
  if (const auto cut = server_->shutdown_connections(target_.port)) {
    if (*cut > 0) log_event("{}: closed {} client connection(s) of server pid {}", describe(), *cut, pid);
    return;
  }
  // Not allowed to close them from here (a system call filter, or no ptrace access): unless it has none, the
  // server would wait for its clients forever.
  if (TcpSocketTable::read().connections(pid, target_.port).value_or(1) > 0) {
    kill_server("has client connections the manager may not close for it (pidfd_getfd denied)", now);
  }
}

void ExportSupervisor::kill_server(const std::string& why, Clock::time_point now) {
  // Stopped first, so that it acknowledges nothing more; then everything it wrote, acknowledged or not, is synced.
  log_event("{}: server pid {} {}; stopping it, syncing what it has open, then SIGKILL", describe(),
            server_->identity().pid, why);
  if (!deliver(SIGSTOP, now)) return;
  server_->sync_open_files();
  if (!deliver(SIGKILL, now)) return;
  killed_ = true;
  deadline_ = now + kKillWait;
}

void ExportSupervisor::advance(Clock::time_point now) {
  switch (phase_) {
    case Phase::launching:
      if (!launcher_->running()) {
        on_launcher_exit(*launcher_->wait(0ms), now);
      } else if (now >= deadline_) {
        launcher_->stop(0ms);
        launcher_.reset();
        on_failure(fmt::format("nbdkit did not start within {} s", kLaunchTimeout.count()), now);
      }
      break;
    case Phase::awaiting_pid:
      check_pid_file(now);
      break;
    case Phase::running:
      if (server_->exited()) on_server_exit(now);
      break;
    case Phase::backoff:
      if (now >= deadline_) launch(now);
      break;
    case Phase::stopping:
      if (server_->exited()) {
        on_server_exit(now);
      } else if (killed_) {
        if (now >= deadline_) {
          log_event("{}: server pid {} survived SIGKILL; giving up on it", describe(), server_->identity().pid);
          server_.reset();
          phase_ = Phase::stopped;
        }
      } else if (now >= deadline_) {
        kill_server(fmt::format("did not exit within {} s of SIGTERM", kStopGrace.count()), now);
      } else if (now >= next_cut_) {
        close_connections(now);  // also those accepted just before SIGTERM took effect
      }
      break;
    case Phase::idle:
    case Phase::stopped:
    case Phase::failed:
      break;
  }
}

void ExportSupervisor::on_launcher_exit(int status, Clock::time_point now) {
  launcher_.reset();
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    phase_ = Phase::awaiting_pid;
    deadline_ = now + kPidFileTimeout;
    check_pid_file(now);
    return;
  }
  std::string said = last_line(server_log_file(settings_.run_dir, target_.export_id));
  on_failure(fmt::format("nbdkit {}{}{}", describe_status(status), said.empty() ? "" : ": ", said), now);
}

void ExportSupervisor::check_pid_file(Clock::time_point now) {
  const std::string pid_file = server_pid_file(settings_.run_dir, target_.export_id);
  if (auto pid = read_pid_file(pid_file)) {
    const auto found = recognise_server(*pid, read_cmdline(*pid), settings_.db_path);
    if (found && found->export_name == target_.export_name && found->port == target_.port &&
        owns_listener(*pid, target_.port)) {
      if (auto handle = ProcessHandle::open(found->process)) {
        on_serving(std::move(*handle), now);
        return;
      }
    }
  }
  if (now >= deadline_) {
    on_failure(fmt::format("nbdkit started, but within {} s its pid file {} did not name a server listening on port "
                           "{} (its log: syslog)",
                           kPidFileTimeout.count(), pid_file, target_.port),
               now);
    return;
  }
}

void ExportSupervisor::on_serving(ProcessHandle server, Clock::time_point now) {
  server_ = std::move(server);
  running_since_ = now;
  deadline_ = Clock::time_point::max();
  if (stop_requested_) {
    terminate_server(now);
    return;
  }
  phase_ = Phase::running;
  log_event("{}: {} server pid {} on {}:{}", describe(), restarting_ ? "restarted" : "started", server_->identity().pid,
            settings_.listen_address, target_.port);
  record_running(now);
}

void ExportSupervisor::record_running(Clock::time_point now) {
  // False when the export is gone already: the manager's next look at the store stops this server.
  writes_.add(
      target_.export_id, fmt::format("{}: recording server pid {}", describe(), server_->identity().pid),
      [id = target_.export_id, created = target_.created_at, process = server_->identity(),
       address = settings_.listen_address, restarted = restarting_](ExportStore& store) {
        store.record_server_running(id, process, address, restarted, created);
      },
      now);
  restarting_ = false;
}

void ExportSupervisor::on_server_exit(Clock::time_point now) {
  const ProcessIdentity gone = server_ ? server_->identity() : ProcessIdentity{};
  // Known only for the manager's own servers (it is their child subreaper), not for those of an earlier manager.
  const auto status = server_ ? server_->reap() : std::nullopt;
  server_.reset();
  if (phase_ == Phase::stopping) {
    phase_ = Phase::stopped;
    log_event("{}: server pid {} stopped", describe(), gone.pid);
    writes_.add(
        target_.export_id, fmt::format("{}: recording the stop of server pid {}", describe(), gone.pid),
        [id = target_.export_id, gone](ExportStore& store) { store.record_server_gone(id, gone, std::nullopt); }, now);
    return;
  }
  if (now - running_since_ >= kStableRun) consecutive_failures_ = 0;
  on_failure(fmt::format("server pid {} {}", gone.pid, status ? describe_status(*status) : "exited unexpectedly"), now,
             gone);
}

void ExportSupervisor::on_failure(const std::string& reason, Clock::time_point now,
                                  const std::optional<ProcessIdentity>& gone) {
  ++consecutive_failures_;
  log_event("{}: {}", describe(), reason);
  writes_.add(
      target_.export_id, fmt::format("{}: recording the failure", describe()),
      [id = target_.export_id, gone, reason](ExportStore& store) { store.record_server_gone(id, gone, reason); }, now);
  if (stop_requested_) {
    phase_ = Phase::stopped;
    return;
  }
  if (consecutive_failures_ >= kMaxFailures) {
    const std::string why = fmt::format("its server failed {} times in a row; last: {}", consecutive_failures_, reason);
    log_event("{}: marking the export failed: {}", describe(), why);
    phase_ = Phase::failed;
    writes_.add(
        target_.export_id, fmt::format("{}: marking the export failed", describe()),
        [id = target_.export_id, created = target_.created_at, why](ExportStore& store) {
          store.fail_export(id, why, created);
        },
        now);
    return;
  }
  restarting_ = true;
  phase_ = Phase::backoff;
  deadline_ = now + backoff(consecutive_failures_);
}

void ExportSupervisor::collect_fds(std::vector<pollfd>& fds) {
  if (phase_ == Phase::launching && launcher_) {
    if (int fd = launcher_->exit_fd(); fd >= 0) fds.push_back({fd, POLLIN, 0});
  }
  if ((phase_ == Phase::running || phase_ == Phase::stopping) && server_) fds.push_back({server_->fd(), POLLIN, 0});
}

ExportSupervisor::Clock::time_point ExportSupervisor::next_deadline() const {
  switch (phase_) {
    case Phase::awaiting_pid:
      return std::min(deadline_, Clock::now() + kPidFilePoll);
    case Phase::stopping:
      return killed_ ? deadline_ : std::min(deadline_, next_cut_);
    case Phase::launching:
    case Phase::backoff:
      return deadline_;
    case Phase::running:
    case Phase::idle:
    case Phase::stopped:
    case Phase::failed:
      break;
  }
  return Clock::time_point::max();
}

}  // namespace nbdxm::cli
