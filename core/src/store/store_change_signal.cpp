#include "nbdxm/store_change_signal.hpp"

#include <fmt/format.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "nbdxm/error.hpp"

namespace nbdxm {
namespace {

// Content changes, and files appearing, disappearing or being renamed over (a -wal file created anew).
constexpr uint32_t kStoreEvents = IN_MODIFY | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO;

}  // namespace

StoreChangeSignal::StoreChangeSignal(const std::string& db_path) : inotify_(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) {
  if (!inotify_.valid()) {
    throw Error(ExitCode::failure,
                fmt::format("cannot watch the state store {} for changes: {}{}", db_path, strerror(errno),
                            errno == EMFILE ? " (raise fs.inotify.max_user_instances)" : ""));
  }
  // SQLite keeps the -wal file beside the database file itself, not beside a symbolic link to it.
  std::error_code ignored;
  std::filesystem::path path = std::filesystem::canonical(db_path, ignored);
  if (path.empty()) path = db_path;
  store_name_ = path.filename().string();
  const std::string directory = path.has_parent_path() ? path.parent_path().string() : ".";
  if (::inotify_add_watch(inotify_.get(), directory.c_str(), kStoreEvents) < 0) {
    throw Error(ExitCode::failure,
                fmt::format("cannot watch the state store's directory {} for changes: {}{}", directory, strerror(errno),
                            errno == ENOSPC ? " (raise fs.inotify.max_user_watches)" : ""));
  }
}

bool StoreChangeSignal::drain() {
  bool concerns_store = false;
  alignas(struct inotify_event) char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(inotify_.get(), buffer, sizeof buffer);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return concerns_store;  // EAGAIN: nothing more pending
    }
    for (ssize_t at = 0; at < n;) {
      const auto* event = reinterpret_cast<const struct inotify_event*>(buffer + at);
      // IN_Q_OVERFLOW: events were lost; IN_IGNORED: the directory itself went away. Either may hide a change.
      if ((event->mask & (IN_Q_OVERFLOW | IN_IGNORED)) != 0 ||
          (event->len > 0 && std::strncmp(event->name, store_name_.c_str(), store_name_.size()) == 0)) {
        concerns_store = true;
      }
      at += static_cast<ssize_t>(sizeof(struct inotify_event) + event->len);
    }
  }
}

std::unique_ptr<StoreChangeSignal> watch_store_changes(const std::string& db_path, std::chrono::milliseconds interval,
                                                       const std::function<void(const std::string&)>& log) {
  try {
    return std::make_unique<StoreChangeSignal>(db_path);
  } catch (const std::exception& e) {
    if (log) log(fmt::format("{}; checking the store every {} ms instead", e.what(), interval.count()));
    return nullptr;
  }
}

}  // namespace nbdxm
