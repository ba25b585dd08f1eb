#pragma once
// ExportConnector: everything the nbdkit plugin does, as plain C++ (the plugin only translates nbdkit's C calls).
// At each client connect it looks the requested export up in the store, admits it only when it is active (and the
// pinned export, when the server is pinned to one), opens its verified device and watches the export for as long
// as the connection lives. An ExportConnection serves one client; once its export is revoked in the store, every
// request fails with ESHUTDOWN and nothing more reaches the device.
//
// With counters_dir set (the manager's servers: counters-dir=), every request, connection and refused connect of a
// live export is counted in its counter file (export_counters.hpp), and a failed sync of its writes (at a flush or at
// close) is recorded there as a durability failure for the manager, which fails the export. A counter file that
// cannot be created refuses the connect: a sync failure nobody would learn of is what the file is for. Every refused
// connect, whatever its reason (an unknown name too), is also counted in the manager-wide refusal file
// (refusal_counters.hpp) in the same directory.
// The export's durability mode (on-close, write-through) is read from the store at every connect.
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "nbdxm/block_backend.hpp"
#include "nbdxm/database.hpp"
#include "nbdxm/device_resolver.hpp"
#include "nbdxm/error.hpp"
#include "nbdxm/export_counters.hpp"
#include "nbdxm/export_watcher.hpp"
#include "nbdxm/refusal_counters.hpp"

namespace nbdxm {

// The plugin's parameters (nbdkit-nbdxm-plugin(1)).
struct ServeOptions {
  std::string db_path;                       // db=PATH
  std::optional<std::string> pinned_export;  // export=NAME
  DeviceRules device_rules;                  // allow-regular-files=, byid-dir=
  std::optional<std::string> counters_dir;   // counters-dir=DIR
  // shared=true: the manager's shared server (`nbdxm serve --shared-listener`): serves by name only the exports
  // recorded as reachable there (transport 'shared'), lists none (NBD_OPT_LIST), and has no default export.
  bool shared = false;
};

class ExportConnection {
 public:
  // `counters` may be null (no counters-dir).
  ExportConnection(OpenedDevice device, BlockBackend::Durability durability, std::unique_ptr<ExportWatch> watch,
                   std::shared_ptr<ExportCounters> counters);
  ~ExportConnection();
  ExportConnection(const ExportConnection&) = delete;
  ExportConnection& operator=(const ExportConnection&) = delete;

  const NbdExport& served() const noexcept { return watch_->admitted(); }
  const BlockBackend& backend() const noexcept { return backend_; }
  bool revoked() const noexcept { return watch_->revoked(); }
  std::string revoked_reason() const { return watch_->reason(); }

  // 0 or an errno value; ESHUTDOWN once the export is revoked.
  int read(void* buf, uint32_t count, uint64_t offset) const noexcept;
  int write(const void* buf, uint32_t count, uint64_t offset, bool fua) noexcept;
  int flush() noexcept;
  int zero(uint32_t count, uint64_t offset, ZeroFlags flags) noexcept;
  int trim(uint32_t count, uint64_t offset, bool fua) noexcept;
  int prefetch(uint32_t count, uint64_t offset) const noexcept;
  int extents(uint32_t count, uint64_t offset, bool req_one, const ExtentSink& sink) const;
  // At close: makes every acknowledged write durable, also after revocation (those writes were acknowledged).
  int finish() noexcept;

 private:
  // Zero and trim are done kMaxRequest bytes at a time, with the revocation checked before each piece: a client
  // that ignores the advertised maximum cannot keep a revoked connection zeroing for long. FUA goes with the last.
  template <typename Piece>
  int in_pieces(uint32_t count, uint64_t offset, bool fua, Piece piece) noexcept;

  // Counts the request; a failed sync is also recorded as a durability failure. Returns err.
  int counted(ExportCounters::Request kind, uint64_t bytes, uint64_t offset, int err) const noexcept;
  void record_sync_failure(int err) const noexcept;

  BlockBackend backend_;
  std::unique_ptr<ExportWatch> watch_;
  std::shared_ptr<ExportCounters> counters_;
};

class ExportConnector {
 public:
  // `db` is the store opened read-only; `log` receives the watcher's lines (revocations, unreadable store). With
  // counters_dir, maps (creates) its refusal counter file: throws std::runtime_error naming it when it cannot.
  ExportConnector(ServeOptions options, Database db, ExportWatcher::Log log);

  const ServeOptions& options() const { return options_; }
  ExportWatcher& watcher() { return watcher_; }

  // The name a client asking for the default export "" gets: the pinned export, or "" (refused at connect).
  std::string default_export() const;
  // Admits a client asking for `requested_name`, or throws Error with the one-line reason (nothing was opened).
  std::unique_ptr<ExportConnection> connect(const std::string& requested_name, bool read_only);
  // The exports a client may connect to now (NBD_OPT_LIST).
  std::vector<NbdExport> served_exports();
  // A connect refused before it reached connect() (the plugin's allow-from check), counted with the others.
  void refused(RefusalCounters::Reason reason) noexcept;

 private:
  // The export life's counter file, one mapping shared by the life's connections; nullptr without counters_dir.
  // Throws Error naming the file when it cannot be created. A server pinned to one export keeps its latest life's
  // mapping between connections, so that a connect maps nothing (mapping and unmapping cost tens of microseconds, a
  // few per cent of a connect); the shared server, which serves one life after another for as long as the manager
  // runs, maps a life's file only while the life has a connection, and so keeps none of an ended life.
  std::shared_ptr<ExportCounters> counters_of(const NbdExport& e);
  // Counts the refusal, then throws `error`.
  [[noreturn]] void refuse(RefusalCounters::Reason reason, const Error& error);

  ServeOptions options_;
  std::unique_ptr<RefusalCounters> refusals_;  // null without counters_dir
  DeviceResolver resolver_;
  ExportWatcher watcher_;
  std::mutex counters_mutex_;
  std::map<std::pair<int64_t, std::string>, std::weak_ptr<ExportCounters>> counters_;  // by (id, created_at)
  std::shared_ptr<ExportCounters> pinned_counters_;  // a pinned server's latest life's
};

// A client-supplied export name made safe for a one-line log message: printable ASCII only, at most 200 characters.
std::string printable_export_name(const std::string& name);

}  // namespace nbdxm
