#pragma once
// ExportWatcher: the plugin's one read-only connection to the store, and the watch it keeps over every open
// connection. A connection is admitted to an export as the store held it at that moment (ExportWatch); a thread
// polls PRAGMA data_version and, whenever another process committed, re-checks every watched export. When an
// export is no longer active (revoked, failed, pending again, deleted by a cascade) or its device mapping, path or
// size changed, its watches are revoked and their connections fail every later request. This needs no manager:
// whoever changes the store, the plugin notices.
#include <atomic>
#include <chrono>
#include <condition_variable>
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
#include "nbdxm/records.hpp"

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
  static constexpr std::chrono::milliseconds kPollInterval{20};
  // A store that cannot be read for this long revokes every connection: nothing proves their exports still live.
  static constexpr std::chrono::milliseconds kUnreadableLimit{1000};
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
  // start of the watch can be missed.
  Admission admit(const std::string& export_name);
  std::vector<NbdExport> active_exports();

  // One poll: when another connection committed since the last poll, re-check every watched export. The thread
  // calls this; tests may call it directly. Throws when the store cannot be read.
  void poll();
  void start(std::chrono::milliseconds interval = kPollInterval);
  void stop();
  size_t watch_count();

 private:
  friend class ExportWatch;
  void unregister(ExportWatch* watch);
  void recheck_locked();
  std::string why_not_served_locked(const NbdExport& admitted, const NbdExport* active);
  void revoke_all(const std::string& reason);
  void run(std::chrono::milliseconds interval);

  // Guards everything below except the thread's own state. Every use of db_ holds it, which is why the plugin may
  // open the connection with Database::Serialization::by_caller.
  std::mutex mutex_;
  Database db_;
  ExportLookup lookup_;
  int64_t last_version_ = 0;
  std::set<ExportWatch*> watches_;
  Log log_;

  std::mutex stop_mutex_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace nbdxm
