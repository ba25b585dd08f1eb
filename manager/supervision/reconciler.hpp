#pragma once
// Reconciler: the loop of `nbdxm serve`. It keeps the servers its ServerSupervisor runs equal to the store's live
// exports: every pending or active export gets exactly one server on its port, pinned to its name; every server
// whose export is no longer live (revoked, failed, deleted by a cascade, moved to another port, created anew) is
// stopped. It never learns which backend runs the servers: it tells the supervisor what to serve and records in the
// store what the supervisor reports (serving, restarted, port unavailable, gave up, stopped).
//
// Other services write the store directly, so the loop checks PRAGMA data_version when the store's files are
// written (StoreChangeSignal; then every StoreCheckPace::interval while the commit settles), at least every
// StoreCheckPace::idle_interval, and at once for the supervisor's fds and deadlines. It looks at the store (reads
// every live export) only when another connection committed, or when a write of its own changed what must be served
// (look_wanted: a failed export, a moved port): an idle manager costs the same with 1,000 live exports as with one.
// Every kResync it checks what no commit announces, without a system call per export while nothing changed: whether
// a directory of the served device paths changed (DirectoryStamps: udev made or moved a /dev/disk/by-id link), then
// every path is resolved again; and whether a stale server has lost its last client. On start it first takes over the
// servers the supervisor found running (adoption: none is started twice); one that runs with settings other than the
// manager's is recorded as stale (`export show`, `nbdxm check`) and replaced: at once when the change narrows access
// (narrows_access), otherwise as soon as it has no client. Before a server is started the export's server spec is
// written (server_command.hpp); the export's device path is added to the spec whenever the store's changes, and the
// supervisor told (device_changed: under systemd the server may open that device alone).
//
// Another process holding the store locked never stalls the loop: the connection waits at most kStoreWait, a read
// that fails is tried again kStoreRetry later, and writes wait in StoreWrites.
//
// What the servers report in their counter files is folded into the store every CounterFolder::kInterval: their
// durability failures (the export failed, so its server is stopped by the next look) and their counters (the
// export_counters table and the progress of the export's vm_disk); a stopped server's counter file is folded once
// more and removed, and at start the files of servers that no longer run are.
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "counter_folder.hpp"
#include "directory_stamps.hpp"
#include "manager_counters.hpp"
#include "nbdxm/export_store.hpp"
#include "nbdxm/port_allocator.hpp"
#include "server_command.hpp"
#include "server_supervisor.hpp"
#include "store_writes.hpp"

namespace nbdxm::supervision {

class Reconciler {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::seconds kResync{2};             // checks of what no commit announces
  static constexpr std::chrono::milliseconds kStoreWait{100};   // the longest the loop waits for a locked store
  static constexpr std::chrono::milliseconds kStoreRetry{200};  // when a failed read of the store is tried again

  // `counters` receives the loop's own counts (restarts, errors), for /metrics.
  Reconciler(const ServerSettings& settings, const PortRange& ports, ExportStore& store, ServerSupervisor& supervisor,
             std::shared_ptr<ManagerCounters> counters = std::make_shared<ManagerCounters>());
  Reconciler(const Reconciler&) = delete;
  Reconciler& operator=(const Reconciler&) = delete;

  // Adopts the running servers, serves the live exports and goes on until a signal arrives on signal_fd; then shuts
  // the supervisor down. Returns how many servers are left running (for the next manager to adopt).
  int run(int signal_fd);

  // The steps of run(), for tests that drive the loop themselves.
  void begin(Clock::time_point now);  // adoption, the first look at the store, the events so far
  void look(Clock::time_point now);   // a look at the store (never throws: a failing read is retried)
  void check(Clock::time_point now);  // the loop's check: a look when the store changed (see above)
  Clock::time_point next_check() const { return next_unannounced_; }  // when check() has work without a commit
  void advance(Clock::time_point now);               // the supervisor's events recorded, waiting writes retried
  int finish();                                      // the supervisor shut down, its last events recorded
  bool look_wanted() const { return look_wanted_; }  // a write of this manager changed what must be served

  // How long an ended shared export's end waits for its connections to close before its devices are synced anyway:
  // its server fails their requests with ESHUTDOWN, so a client that keeps one open writes nothing more, and a write
  // in flight at the end has long landed. Well within `export revoke`'s default wait (10 s) for the end.
  static constexpr std::chrono::seconds kSharedEndWait{5};

  // Runs the manager's shared server at `target` (`serve --shared-listener`, `--shared-socket`): one server that
  // serves every live shared export by name. Each such export is recorded served (active) while that server is.
  // Once it is no longer live its server cuts its connections (and goes on serving the others); when they are
  // closed (the plugin has synced what each wrote), or kSharedEndWait later, every device the export life was mapped
  // to is synced and its record cleared. Call before begin().
  void serve_shared(const ServerTarget& target);

 private:
  struct Served {
    enum class Phase { starting, serving, moving, failed };
    ServerTarget target;
    Phase phase = Phase::starting;
    std::string device;                // the device path last put into its spec
    std::string node;                  // what `device` resolved to when the supervisor was last told it
    ServerSettings spec_settings;      // what its spec says it runs with
    ServerSettings wanted;             // the manager's settings with the export's own (tls, allow_from)
    std::optional<std::string> stale;  // how its settings differ from the manager's, while they do
    bool replacing = false;
  };
  struct Counts {
    int serving = 0, starting = 0, stopping = 0, failed = 0;
  };

  // A shared export's life recorded served by the shared server: the export as last seen, and every device it was
  // mapped to meanwhile (a move is followed: all are synced at its end).
  struct SharedLife {
    NbdExport e;
    std::vector<std::string> devices;
    std::optional<Clock::time_point> ended;  // no longer live since then: ends once its connections are closed
    bool in_store = true;  // recorded served in the store (taken from an adopted server's spec: not yet)
  };
  struct SharedServer {
    ServerTarget target;
    bool started = false;
    bool serving = false;
    std::string unit;
    ServerSpec spec;                                     // as last written: its devices are synced when it stops
    std::map<CounterFolder::Life, SharedLife> recorded;  // the lives it serves or served, ending ones too
    std::map<CounterFolder::Life, NbdExport> live;       // the live shared exports, by life
  };
  ServerSettings shared_settings() const;
  void sync_shared(const std::vector<NbdExport>& live, Clock::time_point now);
  void end_shared_lives(Clock::time_point now);  // the ended lives whose connections are closed
  void end_shared_life(const SharedLife& life, Clock::time_point now);
  void write_shared_spec(Clock::time_point now);   // when its devices or lives changed
  void adopt_shared_lives(Clock::time_point now);  // an adopted shared server's lives, from its spec
  void handle_shared(const ServerEvent& event, Clock::time_point now);

  void adopt(Clock::time_point now);
  void remove_ended_keys();
  void sync(Clock::time_point now);
  bool keeps_serving(const Served& served, const NbdExport& e) const;
  void start(const NbdExport& e, Clock::time_point now);
  void write_spec(Served& served, const std::string& device);
  void follow_access(Served& served, const NbdExport& e, Clock::time_point now);
  void replace(Served& served, Clock::time_point now);
  void replace_idle_stale(Clock::time_point now);
  void follow_device_node(Served& served, Clock::time_point now);
  void note_device_dirs();
  void follow_device_nodes(Clock::time_point now);
  void handle(const ServerEvent& event, Clock::time_point now);
  void on_serving(Served& served, const ServerEvent& event, Clock::time_point now);
  void on_port_unavailable(Served& served, const ServerEvent& event, Clock::time_point now);
  void on_gave_up(Served& served, const ServerEvent& event, Clock::time_point now);
  void on_stopped(const ServerEvent& event, Clock::time_point now);
  bool settled() const;
  Counts counts() const;
  void report_status(bool force);
  void store_read_failed(Clock::time_point now, const std::exception& e);

  const ServerSettings& settings_;
  PortAllocator ports_;
  ExportStore& store_;
  ServerSupervisor& supervisor_;
  StoreWrites writes_;
  CounterFolder folder_;
  std::shared_ptr<ManagerCounters> counters_;
  std::map<int64_t, Served> served_;  // by export id
  std::optional<SharedServer> shared_;
  std::vector<ServerTarget> stopping_;
  int adopted_ = 0;
  bool look_wanted_ = false;
  std::optional<Clock::time_point> store_failing_since_;  // the last look at the store failed
  std::string last_status_;
  std::optional<int64_t> data_version_;  // the store's when last looked at
  Clock::time_point next_unannounced_{};
  std::set<std::string> device_dirs_;  // of the served device paths and of the nodes they resolve to
  DirectoryStamps device_stamps_;
};

}  // namespace nbdxm::supervision
