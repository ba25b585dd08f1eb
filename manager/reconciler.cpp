#include "reconciler.hpp"

#include <poll.h>
#include <sys/signalfd.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "serve_log.hpp"

namespace nbdxm::cli {
namespace {

using namespace std::chrono_literals;

constexpr auto kReadyAtLatest = 10s;  // READY=1 even if some server is still on its way (back-off)

int poll_timeout_ms(std::chrono::steady_clock::time_point now, std::chrono::steady_clock::time_point deadline) {
  if (deadline <= now) return 0;
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
  return static_cast<int>(std::min<int64_t>(ms, 60'000));
}

int64_t elapsed_ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

Reconciler::Reconciler(const ServerSettings& settings, ExportStore& store)
    : settings_(settings), store_(store), writes_(store) {}

Reconciler::~Reconciler() {
  for (auto& [id, supervisor] : supervisors_) supervisor->release();
  for (auto& supervisor : retiring_) supervisor->release();
}

int Reconciler::run(int signal_fd) {
  const auto started = Clock::now();
  adopt(started);
  const int adopted = static_cast<int>(supervisors_.size());
  const std::unique_ptr<StoreChangeSignal> store_signal = watch_store_changes(
      settings_.db_path, StoreCheckPace{}.interval, [](const std::string& line) { log_event("{}", line); });
  StoreCheckSchedule schedule(StoreCheckPace{}, store_signal != nullptr, started);
  data_version_ = store_.database().data_version();
  sync(started);
  store_.database().set_busy_timeout(kStoreWait);  // from here on the loop must not wait long
  auto next_resync = started + kResync;
  bool ready = false;
  for (;;) {
    auto now = Clock::now();
    if (!ready && (settled() || now - started >= kReadyAtLatest)) {
      const auto c = counts();
      log_event("ready after {} ms: {} exports served ({} adopted), {} starting, {} failed", elapsed_ms(started),
                c.serving, adopted, c.starting, c.failed);
      sd_notify(0, "READY=1");
      ready = true;
      report_status(true);
    }

    const bool listening = schedule.listening(now);  // see StoreCheckSchedule
    std::vector<pollfd> fds{{signal_fd, POLLIN, 0}, {listening ? store_signal->fd() : -1, POLLIN, 0}};
    auto deadline = std::min({schedule.next_check(now), next_resync, writes_.next_deadline()});
    if (store_failing_since_) deadline = std::min(deadline, now + kStoreRetry);
    for (auto& [id, supervisor] : supervisors_) {
      supervisor->collect_fds(fds);
      deadline = std::min(deadline, supervisor->next_deadline());
    }
    for (auto& supervisor : retiring_) {
      supervisor->collect_fds(fds);
      deadline = std::min(deadline, supervisor->next_deadline());
    }
    if (::poll(fds.data(), fds.size(), poll_timeout_ms(now, deadline)) < 0 && errno != EINTR) {
      throw std::runtime_error(fmt::format("poll: {}", std::strerror(errno)));
    }
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo info{};
      if (::read(signal_fd, &info, sizeof info) == sizeof info) {
        log_event("received {}; stopping the manager", strsignal(static_cast<int>(info.ssi_signo)));
      }
      store_.database().set_busy_timeout(Database::kBusyTimeout);  // exiting: a write may wait as a command's does
      writes_.flush();
      return static_cast<int>(std::count_if(supervisors_.begin(), supervisors_.end(),
                                            [](const auto& entry) { return entry.second->server().has_value(); }));
    }

    now = Clock::now();
    const bool due = now >= schedule.next_check(now);
    if (store_signal && ((fds[1].revents & POLLIN) || due) && store_signal->drain()) schedule.store_written(now);
    try {
      // Checked at every wakeup, not only when due: data_version is a read of shared memory, and a server that
      // exited may be one that the store no longer wants.
      const int64_t version = store_.database().data_version();
      schedule.checked(now);
      if (version != data_version_ || now >= next_resync || store_failing_since_) {
        sync(now);
        data_version_ = version;  // only once the store has been looked at
        next_resync = now + kResync;
      }
      if (store_failing_since_) {
        log_event("the store can be read again after {} ms", elapsed_ms(*store_failing_since_));
        store_failing_since_.reset();
      }
    } catch (const std::exception& e) {
      // A locked or briefly unreadable store must not take the manager (or any server) down, nor stall the servers
      // it keeps: they are still advanced below, and the store is tried again kStoreRetry later.
      if (!store_failing_since_) {
        log_event("cannot read the store (will retry every {} ms): {}", kStoreRetry.count(), e.what());
        store_failing_since_ = now;
      }
    }
    advance(now);
    writes_.retry(Clock::now());
    report_status(false);
  }
}

// The servers of the store in /proc, once no launch of an earlier manager is still in progress: a launcher holds
// the listening socket until it has forked the server, and is not the server.
std::vector<FoundServer> Reconciler::running_servers() const {
  const auto deadline = Clock::now() + ExportSupervisor::kLaunchTimeout;
  for (;;) {
    auto found = find_servers(settings_.db_path);
    const bool launching = std::any_of(found.begin(), found.end(), [](const auto& f) { return f.launcher; });
    if (!launching || Clock::now() >= deadline) {
      std::erase_if(found, [](const auto& f) { return f.launcher; });
      return found;
    }
    std::this_thread::sleep_for(10ms);
  }
}

void Reconciler::adopt(Clock::time_point now) {
  const auto found = running_servers();
  if (found.empty()) return;
  const auto sockets = TcpSocketTable::read();
  std::map<int64_t, ExportServer> recorded;
  for (auto& server : store_.list_export_servers()) recorded.emplace(server.export_id, server);
  std::vector<bool> used(found.size(), false);

  for (const auto& e : store_.live_exports()) {
    for (size_t i = 0; i < found.size(); ++i) {
      const FoundServer& f = found[i];
      if (used[i] || f.export_name != e.export_name || f.port != e.port) continue;
      if (!sockets.listening(f.process.pid, e.port)) continue;
      auto handle = ProcessHandle::open(f.process);
      if (!handle) continue;
      used[i] = true;
      const auto record = recorded.find(e.id);
      const bool as_recorded = record != recorded.end() && record->second.process == f.process;
      auto supervisor = std::make_unique<ExportSupervisor>(ServerTarget{e.id, e.export_name, e.port, e.created_at},
                                                           settings_, writes_);
      supervisor->adopt(std::move(*handle), as_recorded && e.status != "pending", now);
      log_event("export {} (port {}): adopted server pid {} ({})", e.export_name, e.port, f.process.pid,
                as_recorded ? "pid, start time and command line as recorded"
                            : "found by its command line and listening socket; its start had not been recorded");
      supervisors_[e.id] = std::move(supervisor);
      break;
    }
  }
  for (size_t i = 0; i < found.size(); ++i) {
    if (used[i]) continue;
    const FoundServer& f = found[i];
    auto handle = ProcessHandle::open(f.process);
    if (!handle) continue;
    log_event("server pid {} (export {}, port {}) serves no live export there: stopping it", f.process.pid,
              f.export_name, f.port);
    auto supervisor =
        std::make_unique<ExportSupervisor>(ServerTarget{0, f.export_name, f.port, ""}, settings_, writes_);
    supervisor->adopt(std::move(*handle), true, now);
    retire(std::move(supervisor), now);
  }
}

void Reconciler::sync(Clock::time_point now) {
  std::map<int64_t, NbdExport> desired;
  for (auto& e : store_.live_exports()) desired.emplace(e.id, std::move(e));

  for (auto it = supervisors_.begin(); it != supervisors_.end();) {
    ExportSupervisor& supervisor = *it->second;
    const auto want = desired.find(it->first);
    if (want != desired.end() && keeps_serving(supervisor, want->second)) {
      if (want->second.status == "pending") supervisor.reactivate(now);
      ++it;
      continue;
    }
    if (want != desired.end() && supervisor.finished()) {
      log_event("export {} (port {}) is {} again: starting it anew", want->second.export_name, want->second.port,
                want->second.status);
    } else if (supervisor.server()) {
      log_event("export {} (port {}) is {}: stopping its server pid {}", supervisor.target().export_name,
                supervisor.target().port,
                want == desired.end() ? "no longer live" : "now on another port or name, or created anew",
                supervisor.server()->pid);
    }
    retire(std::move(it->second), now);
    it = supervisors_.erase(it);
  }
  for (const auto& [id, e] : desired) {
    if (supervisors_.contains(id)) continue;
    auto supervisor =
        std::make_unique<ExportSupervisor>(ServerTarget{e.id, e.export_name, e.port, e.created_at}, settings_, writes_);
    supervisor->start(now);
    supervisors_.emplace(id, std::move(supervisor));
  }
}

bool Reconciler::keeps_serving(const ExportSupervisor& supervisor, const NbdExport& e) const {
  const ServerTarget wanted{e.id, e.export_name, e.port, e.created_at};
  if (!(supervisor.target() == wanted)) return false;  // another name or port, or the row was created anew
  // A supervisor that gave up leaves the export live only until its record of the failure is written; once it is,
  // a live export means another writer made it live again.
  return !supervisor.finished() || writes_.waiting_for(e.id);
}

void Reconciler::advance(Clock::time_point now) {
  for (auto& [id, supervisor] : supervisors_) supervisor->advance(now);
  for (auto& supervisor : retiring_) supervisor->advance(now);
  std::erase_if(retiring_, [](const auto& supervisor) { return supervisor->finished(); });
}

void Reconciler::retire(std::unique_ptr<ExportSupervisor> supervisor, Clock::time_point now) {
  supervisor->stop(now);
  if (!supervisor->finished()) retiring_.push_back(std::move(supervisor));
}

bool Reconciler::settled() const {
  return std::all_of(supervisors_.begin(), supervisors_.end(),
                     [](const auto& entry) { return entry.second->settled(); });
}

Reconciler::Counts Reconciler::counts() const {
  Counts c;
  for (const auto& [id, supervisor] : supervisors_) {
    switch (supervisor->phase()) {
      case ExportSupervisor::Phase::running:
        ++c.serving;
        break;
      case ExportSupervisor::Phase::failed:
        ++c.failed;
        break;
      case ExportSupervisor::Phase::stopping:
      case ExportSupervisor::Phase::stopped:
        ++c.stopping;
        break;
      default:
        ++c.starting;
    }
  }
  c.stopping += static_cast<int>(retiring_.size());
  return c;
}

void Reconciler::report_status(bool force) {
  const auto c = counts();
  std::string status = fmt::format("serving {} exports on {}", c.serving, settings_.listen_address);
  if (c.starting > 0) status += fmt::format(", {} starting", c.starting);
  if (c.stopping > 0) status += fmt::format(", {} stopping", c.stopping);
  if (c.failed > 0) status += fmt::format(", {} failed", c.failed);
  if (!force && status == last_status_) return;
  last_status_ = status;
  sd_notifyf(0, "STATUS=%s", status.c_str());
}

}  // namespace nbdxm::cli
