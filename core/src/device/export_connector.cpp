#include "nbdxm/export_connector.hpp"

#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "nbdxm/error.hpp"

namespace nbdxm {

ExportConnection::ExportConnection(OpenedDevice device, BlockBackend::Durability durability,
                                   std::unique_ptr<ExportWatch> watch, std::shared_ptr<ExportCounters> counters)
    : backend_(std::move(device), durability), watch_(std::move(watch)), counters_(std::move(counters)) {
  if (counters_) counters_->connection_opened();
}

ExportConnection::~ExportConnection() {
  if (counters_) counters_->connection_closed();
}

int ExportConnection::counted(ExportCounters::Request kind, uint64_t bytes, uint64_t offset, int err) const noexcept {
  // EOPNOTSUPP from zero is not a failure: nbdkit writes the zeroes instead, and that write is counted.
  if (counters_ && !(kind == ExportCounters::Request::zero && err == EOPNOTSUPP)) {
    counters_->request(kind, bytes, offset, err == 0);
  }
  return err;
}

void ExportConnection::record_sync_failure(int err) const noexcept {
  if (!counters_ || err == 0 || err == ESHUTDOWN) return;
  char line[ExportCounters::kReasonBytes];
  std::snprintf(line, sizeof line, "durability: fdatasync on %s failed: %s", backend_.path().c_str(),
                std::strerror(err));
  counters_->durability_failure(line);
}

int ExportConnection::read(void* buf, uint32_t count, uint64_t offset) const noexcept {
  return counted(ExportCounters::Request::read, count, offset,
                 revoked() ? ESHUTDOWN : backend_.read(buf, count, offset));
}

int ExportConnection::write(const void* buf, uint32_t count, uint64_t offset, bool fua) noexcept {
  return counted(ExportCounters::Request::write, count, offset,
                 revoked() ? ESHUTDOWN : backend_.write(buf, count, offset, fua));
}

int ExportConnection::flush() noexcept {
  const int err = revoked() ? ESHUTDOWN : backend_.flush();
  record_sync_failure(err);
  return counted(ExportCounters::Request::flush, 0, 0, err);
}

int ExportConnection::finish() noexcept {
  const int err = backend_.sync_if_written();
  record_sync_failure(err);
  return err;
}

int ExportConnection::zero(uint32_t count, uint64_t offset, ZeroFlags flags) noexcept {
  return counted(ExportCounters::Request::zero, count, offset,
                 in_pieces(count, offset, flags.fua, [&](uint32_t n, uint64_t at, bool fua) {
                   ZeroFlags piece = flags;
                   piece.fua = fua;
                   return backend_.zero(n, at, piece);
                 }));
}

int ExportConnection::trim(uint32_t count, uint64_t offset, bool fua) noexcept {
  return counted(ExportCounters::Request::trim, count, offset,
                 in_pieces(count, offset, fua,
                           [&](uint32_t n, uint64_t at, bool last_fua) { return backend_.trim(n, at, last_fua); }));
}

template <typename Piece>
int ExportConnection::in_pieces(uint32_t count, uint64_t offset, bool fua, Piece piece) noexcept {
  do {
    if (revoked()) return ESHUTDOWN;
    const uint32_t n = std::min(count, kMaxRequest);
    if (const int err = piece(n, offset, fua && n == count); err != 0) return err;
    count -= n;
    offset += n;
  } while (count > 0);
  return 0;
}

int ExportConnection::prefetch(uint32_t count, uint64_t offset) const noexcept {
  return revoked() ? ESHUTDOWN : backend_.prefetch(count, offset);
}

int ExportConnection::extents(uint32_t count, uint64_t offset, bool req_one, const ExtentSink& sink) const {
  return revoked() ? ESHUTDOWN : backend_.extents(count, offset, req_one, sink);
}

ExportConnector::ExportConnector(ServeOptions options, Database db, ExportWatcher::Log log)
    : options_(std::move(options)), resolver_(options_.device_rules), watcher_(std::move(db), std::move(log)) {
  if (options_.counters_dir) {
    // `nbdxm serve` creates the directory; a server started by other means (its backend's tests) makes it itself.
    ::mkdir(options_.counters_dir->c_str(), 0750);
    refusals_ = RefusalCounters::open_or_create(RefusalCounters::path(*options_.counters_dir));
  }
}

void ExportConnector::refused(RefusalCounters::Reason reason) noexcept {
  if (refusals_) refusals_->refused(reason);
}

void ExportConnector::refuse(RefusalCounters::Reason reason, const Error& error) {
  refused(reason);
  throw error;
}

std::string ExportConnector::default_export() const { return options_.pinned_export.value_or(""); }

std::unique_ptr<ExportConnection> ExportConnector::connect(const std::string& requested_name, bool read_only) {
  using Reason = RefusalCounters::Reason;
  const std::string name = requested_name.empty() ? default_export() : requested_name;
  if (name.empty()) {
    refuse(Reason::no_export_name,
           Error(ExitCode::usage,
                 "the client asked for the default export, but this server serves every active export by name "
                 "(start it with export=NAME to serve one export as the default)"));
  }
  if (options_.pinned_export && name != *options_.pinned_export) {
    refuse(Reason::export_not_served_here,
           Error(ExitCode::not_found, fmt::format("export {} is not served here: this server serves only export {}",
                                                  printable_export_name(name), *options_.pinned_export)));
  }
  std::optional<ExportWatcher::Admission> admission;
  try {
    admission.emplace(watcher_.admit(name));
  } catch (const Error& e) {
    refuse(Reason::store_unavailable, e);
  }
  if (!admission->found) {
    refuse(Reason::unknown_export,
           Error(ExitCode::not_found,
                 fmt::format("export {} does not exist in the state store, or its job, disk or device mapping does "
                             "not (`nbdxm check` names such exports)",
                             printable_export_name(name))));
  }
  const NbdExport& found = *admission->found;
  if (options_.shared && found.transport != "shared") {
    // Said and counted as for an unknown name: the shared port must not tell which other exports exist.
    refuse(Reason::unknown_export,
           Error(ExitCode::not_found, fmt::format("export {} is not reachable on the shared listener (its transport "
                                                  "is {}); a client that knows the name was refused",
                                                  printable_export_name(name), found.transport)));
  }
  std::shared_ptr<ExportCounters> counters;
  try {
    // An ended life's file is the manager's to fold and remove: a connect to it must not create it again.
    if (found.live()) counters = counters_of(found);
  } catch (const Error& e) {
    refuse(Reason::counter_file, e);
  }
  if (found.status != "active") {
    if (counters) counters->refused(ExportCounters::Refusal::not_active);
    refuse(Reason::not_active,
           Error(ExitCode::unavailable,
                 fmt::format("export {} is {}{}; only active exports are served", name, found.status,
                             found.status_reason ? fmt::format(" ({})", *found.status_reason) : "")));
  }
  std::optional<OpenedDevice> device;
  try {
    device.emplace(resolver_.open(found, read_only));
  } catch (const Error& e) {
    if (counters) counters->refused(ExportCounters::Refusal::device);
    refuse(Reason::device, e);
  }
  const auto durability = found.durability == "write-through" ? BlockBackend::Durability::write_through
                                                              : BlockBackend::Durability::on_close;
  return std::make_unique<ExportConnection>(std::move(*device), durability, std::move(admission->watch),
                                            std::move(counters));
}

std::shared_ptr<ExportCounters> ExportConnector::counters_of(const NbdExport& e) {
  if (!options_.counters_dir) return nullptr;
  const std::lock_guard<std::mutex> lock(counters_mutex_);
  std::erase_if(counters_, [](const auto& entry) { return entry.second.expired(); });
  if (auto mapped = counters_[{e.id, e.created_at}].lock()) return mapped;
  const std::string path = ExportCounters::path(*options_.counters_dir, e.id, e.created_at);
  std::shared_ptr<ExportCounters> counters;
  try {
    counters = ExportCounters::open_or_create(path, {e.id, e.created_at, e.size});
  } catch (const std::exception& ex) {
    throw Error(ExitCode::failure,
                fmt::format("export {}: refusing the connect: {} (the manager's counters directory must be "
                            "writable by the server's user)",
                            e.export_name, ex.what()));
  }
  counters_[{e.id, e.created_at}] = counters;
  if (options_.pinned_export) pinned_counters_ = counters;
  return counters;
}

std::vector<NbdExport> ExportConnector::served_exports() {
  std::vector<NbdExport> served;
  if (options_.shared) return served;  // the shared listener names no export
  for (auto& e : watcher_.active_exports()) {
    if (!options_.pinned_export || e.export_name == *options_.pinned_export) served.push_back(std::move(e));
  }
  return served;
}

std::string printable_export_name(const std::string& name) {
  constexpr size_t kMaxShown = 200;
  std::string shown;
  for (char c : name.substr(0, kMaxShown)) shown += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (name.size() > kMaxShown) shown += "...";
  return shown.empty() ? "\"\"" : shown;
}

}  // namespace nbdxm
