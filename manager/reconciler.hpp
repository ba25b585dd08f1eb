#pragma once
// Reconciler: the loop of `nbdxm serve`. It keeps the running servers equal to the store's live exports: every
// pending or active export gets exactly one server on its port, pinned to its name; every server whose export is no
// longer live (revoked, failed, deleted by a cascade, moved to another port) is stopped. Other services write the
// store directly, so the loop checks PRAGMA data_version when the store's files are written (StoreChangeSignal;
// then every StoreCheckPace::interval while the commit settles) and once a second otherwise, and it wakes at once
// when a server or launcher exits (pidfds). On start it first adopts the servers already running for this store,
// found in /proc by their command line and verified by their listening socket, so none is started twice and none
// is left orphaned, even one whose start the previous manager never recorded.
//
// It acts on each export's status, not only on its presence: an export set back to pending while its server runs
// gets its server recorded again (which makes it active); a supervisor that gave up (failed) on an export that
// another writer made live again is replaced by a new one; a row re-used by `export create` (a new created_at)
// gets a new server. Another process holding the store locked never stalls the loop: the connection waits at most
// kStoreWait, a read that fails is tried again kStoreRetry later, and writes wait in StoreWrites.
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "export_server.hpp"
#include "export_supervisor.hpp"
#include "nbdxm/export_store.hpp"
#include "nbdxm/store_change_signal.hpp"
#include "store_writes.hpp"

namespace nbdxm::cli {

class Reconciler {
 public:
  static constexpr std::chrono::seconds kResync{2};             // a full look at the store even without a change
  static constexpr std::chrono::milliseconds kStoreWait{100};   // the longest the loop waits for a locked store
  static constexpr std::chrono::milliseconds kStoreRetry{200};  // when a failed read of the store is tried again

  Reconciler(const ServerSettings& settings, ExportStore& store);
  ~Reconciler();  // releases every server: they outlive the manager
  Reconciler(const Reconciler&) = delete;
  Reconciler& operator=(const Reconciler&) = delete;

  // Adopts the running servers, starts the missing ones and serves until a signal arrives on signal_fd. Returns
  // how many servers are left running (for the next manager to adopt).
  int run(int signal_fd);

 private:
  using Clock = ExportSupervisor::Clock;
  struct Counts {
    int serving = 0, starting = 0, stopping = 0, failed = 0;
  };

  std::vector<FoundServer> running_servers() const;
  void adopt(Clock::time_point now);
  void sync(Clock::time_point now);
  // Whether the supervisor can go on serving the export as the store has it now.
  bool keeps_serving(const ExportSupervisor& supervisor, const NbdExport& e) const;
  void advance(Clock::time_point now);
  void retire(std::unique_ptr<ExportSupervisor> supervisor, Clock::time_point now);
  bool settled() const;
  Counts counts() const;
  void report_status(bool force);

  const ServerSettings& settings_;
  ExportStore& store_;
  StoreWrites writes_;
  std::map<int64_t, std::unique_ptr<ExportSupervisor>> supervisors_;  // by export id
  std::vector<std::unique_ptr<ExportSupervisor>> retiring_;           // being stopped
  int64_t data_version_ = -1;
  std::optional<Clock::time_point> store_failing_since_;  // the last look at the store failed
  std::string last_status_;
};

}  // namespace nbdxm::cli
