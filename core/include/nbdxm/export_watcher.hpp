#pragma once
// ExportWatcher: the plugin's one read-only connection to the store, and the watch it keeps over every open
// connection. A connection is admitted to an export as the store held it at that moment (ExportWatch); a thread
// checks PRAGMA data_version and, whenever another process committed, re-checks every watched export. When an
// export is no longer active (revoked, failed, pending again, deleted by a cascade) or its device mapping, path or
// size changed, its watches are revoked and their connections fail every later request. This needs no manager:
// whoever changes the store, the plugin notices.
//
// A connection is the only thing a check can revoke, so the thread works only while a connection is watched. With
// none (most export servers most of the time: one server per live export) it neither watches the store's files nor
// checks the store: it is blocked until admit() starts the first watch, and store writes cost it nothing. That
// misses no change: admit() reads the export from the store as it starts the watch, and the thread's first check
// after it comes within the short interval (it settles, as at its start).
//
// While some connection is watched, the thread sleeps until the store's files are written (StoreChangeSignal), then
// checks at a short interval for a while (StoreCheckPace), long enough for the commit that caused the write to become
// visible. An idle store costs one check a second, a safety net for writes that inotify cannot report (a store on a
// network file system). The bound on noticing a change is the short interval plus the commit's own time from
// writing to publishing. Where the store cannot be watched, the thread checks at the short interval all the time.
// When the last watch ends, the thread is woken and goes back to waiting for a watch.
//
// A locked store (another process holding it in exclusive locking mode, or recovering it) never stalls a connect:
// a connect waits at most kConnectWait for the store, watcher's work included, and is then refused (fail closed).
// For that, every check waits at most kCheckWait for the store, so the lock it holds is never held for long; a
// failed check is repeated at the short interval, and a store unreadable for kUnreadableLimit revokes every watch.
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "nbdxm/database.hpp"
#include "nbdxm/export_lookup.hpp"
#include "nbdxm/file_descriptor.hpp"
#include "nbdxm/records.hpp"
#include "nbdxm/store_change_signal.hpp"

namespace nbdxm {

class ExportWatcher;

// What one connection was admitted to. Unregisters itself when destroyed.
class ExportWatch {
 public:
  ExportWatch(const ExportWatch&) = delete;
  ExportWatch& operator=(const ExportWatch&) = delete;
  ~ExportWatch();

  const NbdExport& admitted() const noexcept { return admitted_; }
  bool revoked() const noexcept { return revoked_.load(std::memory_order_acquire); }
  std::string reason() const;  // why it was revoked; empty while it is not

 private:
  friend class ExportWatcher;
  ExportWatch(ExportWatcher& watcher, NbdExport admitted);
  void revoke(const std::string& reason);

  ExportWatcher& watcher_;
  const NbdExport admitted_;
  std::atomic<bool> revoked_{false};
  mutable std::mutex reason_mutex_;
  std::string reason_;
};

class ExportWatcher {
 public:
  // A store that cannot be read for this long revokes every connection: nothing proves their exports still live.
  static constexpr std::chrono::milliseconds kUnreadableLimit{1000};
  // How long a connect (or a listing of the exports) waits for the store before it is refused.
  static constexpr std::chrono::milliseconds kConnectWait{1000};
  // How long one check waits for a locked store before it counts as failed.
  static constexpr std::chrono::milliseconds kCheckWait{100};
  using Log = std::function<void(const std::string& line)>;

  // Takes the connection (opened read-only by the caller). `log` receives one line per revoked export and per
  // failed poll; it is called from the polling thread.
  ExportWatcher(Database db, Log log);
  ExportWatcher(const ExportWatcher&) = delete;
  ExportWatcher& operator=(const ExportWatcher&) = delete;
  ~ExportWatcher();  // stops the thread; every ExportWatch must be gone by then

  struct Admission {
    std::optional<NbdExport> found;      // the export as the store holds it now
    std::unique_ptr<ExportWatch> watch;  // set when found
  };
  // Looks the export up and starts watching it in one step, so that no store change between the lookup and the
  // start of the watch can be missed. Throws Error(unavailable) naming the store when it could not be read within
  // kConnectWait.
  Admission admit(const std::string& export_name);
  std::vector<NbdExport> active_exports();  // the same bound as admit

  // One check: when another connection committed since the last check, re-check every watched export. The thread
  // calls this; tests may call it directly. Throws when the store cannot be read.
  void poll();
  void start(StoreCheckPace pace = {});
  void stop();
  size_t watch_count();
  // How many checks (poll) have run since construction: what an idle server costs.
  uint64_t checks() const noexcept { return checks_.load(std::memory_order_relaxed); }
  // Whether the thread watches the store's files now (it does only while a connection is watched).
  bool watching_store() const noexcept { return watching_store_.load(std::memory_order_relaxed); }

 private:
  friend class ExportWatch;
  void unregister(ExportWatch* watch);
  void recheck_locked();
  std::string why_not_served_locked(const NbdExport& admitted, const NbdExport* active);
  void revoke_all(const std::string& reason);
  void run(StoreCheckPace pace);
  bool wait_for_watches();                        // false: stop() was called
  bool check_while_watched(StoreCheckPace pace);  // true: no watch left; false: stop() was called
  enum class Wakeup { stop, watches_changed, store_written, other_file_written, timeout };
  Wakeup wait(StoreChangeSignal* signal, std::chrono::milliseconds timeout);
  // Since when the store could not be read, when the last check failed.
  struct ReadFailures {
    std::optional<std::chrono::steady_clock::time_point> since;
    bool gave_up = false;
  };
  void check_store(ReadFailures& failures);
  // Runs `body` (a read of the store) with mutex_ held, for a connect: the lock and the store together get at most
  // kConnectWait. Throws Error(unavailable) naming the store and `what` was refused when that was not enough.
  template <typename Body>
  auto read_for_connect(const std::string& what, Body body);

  // Guards db_ to log_. Every use of db_ holds it, which is why the plugin may open the connection with
  // Database::Serialization::by_caller. Timed: a connect gives up waiting for it after kConnectWait.
  std::timed_mutex mutex_;
  Database db_;
  ExportLookup lookup_;
  int64_t last_version_ = 0;
  std::set<ExportWatch*> watches_;
  Log log_;

  std::atomic<uint64_t> checks_{0};
  std::atomic<bool> watching_store_{false};

  std::mutex thread_mutex_;       // guards thread_ (start and stop)
  FileDescriptor stop_event_;     // an eventfd: readable once stop() asks the thread to end
  FileDescriptor watched_event_;  // an eventfd: written when the first watch starts and when the last one ends
  std::thread thread_;
};

}  // namespace nbdxm
