#include "nbdxm/export_watcher.hpp"

#include <SQLiteCpp/Exception.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <map>

#include "nbdxm/error.hpp"
#include "nbdxm/export_store.hpp"
#include "nbdxm/store_change_signal.hpp"

namespace nbdxm {
namespace {

std::string status_phrase(const NbdExport& e) {
  return e.status_reason ? fmt::format("{} ({})", e.status, *e.status_reason) : e.status;
}

void signal_event(const FileDescriptor& event) {
  const uint64_t one = 1;
  if (::write(event.get(), &one, sizeof one) != sizeof one) std::terminate();  // cannot fail on an eventfd
}

void clear_event(const FileDescriptor& event) {
  uint64_t count = 0;
  (void)!::read(event.get(), &count, sizeof count);  // EAGAIN: it was clear
}

}  // namespace

ExportWatch::ExportWatch(ExportWatcher& watcher, NbdExport admitted)
    : watcher_(watcher), admitted_(std::move(admitted)) {}

ExportWatch::~ExportWatch() { watcher_.unregister(this); }

std::string ExportWatch::reason() const {
  std::lock_guard lock(reason_mutex_);
  return reason_;
}

void ExportWatch::revoke(const std::string& reason) {
  {
    std::lock_guard lock(reason_mutex_);
    reason_ = reason;
  }
  revoked_.store(true, std::memory_order_release);
}

ExportWatcher::ExportWatcher(Database db, Log log)
    : db_(std::move(db)),
      lookup_(db_),
      log_(std::move(log)),
      stop_event_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      watched_event_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!stop_event_.valid() || !watched_event_.valid()) {
    throw Error(ExitCode::failure, fmt::format("eventfd: {}", strerror(errno)));
  }
  last_version_ = db_.data_version();  // a start may wait for the store as long as any command
  db_.set_busy_timeout(kCheckWait);
}

ExportWatcher::~ExportWatcher() { stop(); }

template <typename Body>
auto ExportWatcher::read_for_connect(const std::string& what, Body body) {
  const auto deadline = std::chrono::steady_clock::now() + kConnectWait;
  const auto refusal = [&](const std::string& why) {
    return Error(ExitCode::unavailable,
                 fmt::format("the state store {} could not be read within {} ms ({}); refusing {}", db_.path(),
                             kConnectWait.count(), why, what));
  };
  // The lock's deadline is on the system clock, for which libstdc++ waits with pthread_mutex_timedlock; for a
  // steady-clock deadline it uses pthread_mutex_clocklock, which GCC 12's ThreadSanitizer does not intercept (it
  // would then see every unlock of mutex_ as unlocking an unlocked mutex, and miss what mutex_ protects). A clock
  // step can only move this one wait; the store's wait below is bounded on the steady clock.
  std::unique_lock lock(mutex_, std::chrono::system_clock::now() + kConnectWait);
  if (!lock.owns_lock()) throw refusal("the check of open connections still waits for it");
  db_.set_busy_timeout(std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
  try {
    return body();
  } catch (const SQLite::Exception& e) {
    throw refusal(e.what());
  }
}

ExportWatcher::Admission ExportWatcher::admit(const std::string& export_name) {
  return read_for_connect(fmt::format("the connection to export {}", export_name), [&] {
    Admission admission;
    // With no watch, no check has kept last_version_ current; the lookup below sees at least this version, so the
    // first check need not look at the store again unless it changed since.
    if (watches_.empty()) last_version_ = db_.data_version();
    admission.found = lookup_.find(export_name);
    if (admission.found) {
      admission.watch.reset(new ExportWatch(*this, *admission.found));
      if (watches_.empty()) signal_event(watched_event_);  // the thread starts checking (see the header)
      watches_.insert(admission.watch.get());
    }
    return admission;
  });
}

std::vector<NbdExport> ExportWatcher::active_exports() {
  return read_for_connect("the listing of exports", [&] {
    ExportFilter filter;
    filter.status = "active";
    return ExportStore(db_).list_exports(filter);
  });
}

size_t ExportWatcher::watch_count() {
  std::lock_guard lock(mutex_);
  return watches_.size();
}

void ExportWatcher::unregister(ExportWatch* watch) {
  std::lock_guard lock(mutex_);
  watches_.erase(watch);
  if (watches_.empty()) signal_event(watched_event_);  // the thread stops checking (see the header)
}

void ExportWatcher::poll() {
  checks_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(mutex_);
  db_.set_busy_timeout(kCheckWait);  // see kCheckWait: never hold mutex_ for long
  const int64_t version = db_.data_version();
  if (version == last_version_) return;
  recheck_locked();
  last_version_ = version;
}

void ExportWatcher::recheck_locked() {
  if (watches_.empty()) return;
  ExportFilter filter;
  filter.status = "active";
  std::map<int64_t, NbdExport> active;
  for (auto& e : ExportStore(db_).list_exports(filter)) active.emplace(e.id, std::move(e));

  std::map<int64_t, std::string> reasons;  // per export id, so that each export is looked up and logged once
  for (ExportWatch* watch : watches_) {
    if (watch->revoked()) continue;
    const NbdExport& admitted = watch->admitted();
    auto it = active.find(admitted.id);
    const NbdExport* now = it == active.end() ? nullptr : &it->second;
    if (now && now->device_mapping_id == admitted.device_mapping_id && now->device_path == admitted.device_path &&
        now->size == admitted.size) {
      continue;
    }
    auto reason = reasons.find(admitted.id);
    if (reason == reasons.end()) {
      reason = reasons.emplace(admitted.id, why_not_served_locked(admitted, now)).first;
      if (log_) log_(fmt::format("{}: failing the requests of its open connections from now on", reason->second));
    }
    watch->revoke(reason->second);
  }
}

std::string ExportWatcher::why_not_served_locked(const NbdExport& admitted, const NbdExport* active) {
  const std::string& name = admitted.export_name;
  if (active) {
    if (active->device_mapping_id != admitted.device_mapping_id) {
      return fmt::format("export {} now uses volume {} instead of {}", name, active->volume_uuid, admitted.volume_uuid);
    }
    if (active->device_path != admitted.device_path) {
      return fmt::format("export {}: volume {} moved from {} to {}", name, admitted.volume_uuid, admitted.device_path,
                         active->device_path);
    }
    return fmt::format("export {}: the size of volume {} changed from {} to {} bytes", name, admitted.volume_uuid,
                       admitted.size, active->size);
  }
  const auto now = lookup_.find(name);
  if (!now) return fmt::format("export {} was deleted from the store", name);
  if (now->id != admitted.id) return fmt::format("export {} was deleted and created again", name);
  return fmt::format("export {} became {}", name, status_phrase(*now));
}

void ExportWatcher::revoke_all(const std::string& reason) {
  std::lock_guard lock(mutex_);
  for (ExportWatch* watch : watches_) {
    if (!watch->revoked()) watch->revoke(reason);
  }
}

void ExportWatcher::start(StoreCheckPace pace) {
  std::lock_guard lock(thread_mutex_);
  if (thread_.joinable()) return;
  thread_ = std::thread([this, pace] { run(pace); });
}

void ExportWatcher::stop() {
  std::lock_guard lock(thread_mutex_);
  if (!thread_.joinable()) return;
  signal_event(stop_event_);
  thread_.join();
  clear_event(stop_event_);  // ready for a restart
}

ExportWatcher::Wakeup ExportWatcher::wait(StoreChangeSignal* signal, std::chrono::milliseconds timeout) {
  struct pollfd fds[3] = {
      {stop_event_.get(), POLLIN, 0}, {watched_event_.get(), POLLIN, 0}, {signal ? signal->fd() : -1, POLLIN, 0}};
  const int ready = ::poll(fds, 3, static_cast<int>(timeout.count()));
  if (ready <= 0) return Wakeup::timeout;  // EINTR counts as a timeout: one more check does no harm
  if (fds[0].revents != 0) return Wakeup::stop;
  if (fds[1].revents != 0) {
    clear_event(watched_event_);
    return Wakeup::watches_changed;
  }
  return signal->drain() ? Wakeup::store_written : Wakeup::other_file_written;
}

void ExportWatcher::check_store(ReadFailures& failures) {
  try {
    poll();
    failures = ReadFailures{};
  } catch (const std::exception& e) {
    const auto now = std::chrono::steady_clock::now();
    if (!failures.since) {
      failures.since = now;
      if (log_) log_(fmt::format("cannot read the state store {}: {}", db_.path(), e.what()));
    }
    if (!failures.gave_up && now - *failures.since >= kUnreadableLimit) {
      failures.gave_up = true;
      const std::string reason =
          fmt::format("the state store {} could not be read for {} ms ({}), so no export can be proven live",
                      db_.path(), kUnreadableLimit.count(), e.what());
      if (log_) log_(fmt::format("{}: failing the requests of every open connection from now on", reason));
      revoke_all(reason);
    }
  }
}

void ExportWatcher::run(StoreCheckPace pace) {
  while (wait_for_watches()) {
    if (!check_while_watched(pace)) return;
  }
}

bool ExportWatcher::wait_for_watches() {
  for (;;) {
    clear_event(watched_event_);  // before looking: a watch started after the look leaves it set
    if (watch_count() > 0) return true;
    struct pollfd fds[2] = {{stop_event_.get(), POLLIN, 0}, {watched_event_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) > 0 && fds[0].revents != 0) return false;
  }
}

bool ExportWatcher::check_while_watched(StoreCheckPace pace) {
  using Clock = StoreCheckSchedule::Clock;
  const std::unique_ptr<StoreChangeSignal> signal = watch_store_changes(db_.path(), pace.interval, log_);
  watching_store_.store(signal != nullptr, std::memory_order_relaxed);
  struct NotWatching {
    std::atomic<bool>& flag;
    ~NotWatching() { flag.store(false, std::memory_order_relaxed); }
  } not_watching{watching_store_};
  // It starts settling: a commit may be on its way that the admission's read did not see.
  StoreCheckSchedule schedule(pace, signal != nullptr, Clock::now());
  ReadFailures failures;
  for (;;) {
    auto now = Clock::now();
    const auto due = schedule.next_check(now, failures.since.has_value());
    const auto timeout = std::chrono::ceil<std::chrono::milliseconds>(due - now);
    const Wakeup wakeup =
        wait(schedule.listening(now) ? signal.get() : nullptr, std::max(timeout, std::chrono::milliseconds(0)));
    now = Clock::now();
    if (wakeup == Wakeup::stop) return false;
    if (wakeup == Wakeup::watches_changed) {
      if (watch_count() == 0) return true;
      continue;  // the last watch ended and another began: the check stays due when it was
    }
    if (wakeup == Wakeup::other_file_written) continue;  // the check stays due when it was
    if (wakeup == Wakeup::store_written) {
      schedule.store_written(now);  // the check comes once the commit has had time to be published
      continue;
    }
    if (signal && signal->drain()) schedule.store_written(now);  // written while settling: settle for longer
    check_store(failures);
    schedule.checked(Clock::now());
  }
}

}  // namespace nbdxm
