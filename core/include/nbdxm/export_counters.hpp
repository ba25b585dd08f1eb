#pragma once
// ExportCounters: the channel from an export's server to the manager. The plugin never writes the store; what the
// manager must learn from a server (its counters, its coverage, a failed durability sync) goes through one file per
// export life in the manager's run directory, <run-dir>/counters/<export-id>-<created_at, digits only>.bin.
//
// Who creates what: the manager creates <run-dir>/counters (mode 0750) when it starts; the plugin (given
// counters-dir=DIR) creates the export's file (mode 0640, the servers' user: the manager's user under both backends)
// at the first connect of the export, and every later server of the same export life (a restart) maps the same file,
// so counters and coverage survive server restarts. The manager maps it read-only, also after its own restart (the
// run directory outlives it), and removes it once the export's server is stopped and its durability failures are in
// the store.
//
// Layout (version 1, every field a 64-bit word, host byte order: the file never leaves the machine): a header that
// names the export life, kCounterCount counters, a durability-event area and a coverage bitmap of one bit per
// kGranule bytes of the volume. The data path only does relaxed atomic adds and ors on the shared mapping: no lock,
// no system call per request. A durability event is written under a sequence lock (odd while being written), so a
// reader never sees half a reason.
//
// Coverage counts a granule once any of its bytes has been written or zeroed; overlapping and retried writes set the
// same bits, so they are not counted twice. It is an upper bound by less than one granule at each end of a request.
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "nbdxm/shared_mapping.hpp"

namespace nbdxm {

class ExportCounters {
 public:
  static constexpr uint64_t kGranule = 64 * 1024;
  static constexpr uint64_t kVersion = 1;
  static constexpr size_t kReasonBytes = 256;

  enum class Request { read, write, zero, trim, flush, kCount };
  enum class Refusal { not_active, device, kCount };

  struct Identity {
    int64_t export_id = 0;
    std::string created_at;   // the export life (nbd_exports.created_at)
    int64_t volume_size = 0;  // bytes; sizes the coverage bitmap
  };

  struct RequestCounts {
    uint64_t requests = 0;
    uint64_t failed = 0;
    uint64_t bytes = 0;
  };

  struct Snapshot {
    Identity identity;
    RequestCounts requests[static_cast<int>(Request::kCount)];
    uint64_t connections_open = 0;
    uint64_t connections_total = 0;
    uint64_t refused[static_cast<int>(Refusal::kCount)] = {};
    std::optional<int64_t> last_write_unix_ms;
    uint64_t coverage_bytes = 0;  // distinct bytes written or zeroed, in whole granules, at most the volume's size
    uint64_t durability_failures = 0;
    std::string durability_reason;  // the last failure's line; empty when none
    const RequestCounts& of(Request r) const { return requests[static_cast<int>(r)]; }
  };

  struct Layout;  // the file's layout (defined with the implementation)

  ~ExportCounters();
  ExportCounters(const ExportCounters&) = delete;
  ExportCounters& operator=(const ExportCounters&) = delete;

  // <dir>/<export-id>-<created_at's digits>.bin
  static std::string path(const std::string& dir, int64_t export_id, const std::string& created_at);
  // The plugin: maps the export life's file, creating it (complete, then renamed into place) when missing. Throws
  // std::runtime_error naming the file when it cannot be created or is another export's or another layout's.
  static std::unique_ptr<ExportCounters> open_or_create(const std::string& path, const Identity& identity);
  // The manager and the CLI: maps an existing file read-only; nullptr when there is none. Throws
  // std::runtime_error naming the file when it is not a counter file of this version.
  static std::unique_ptr<ExportCounters> open_read_only(const std::string& path);

  // The data path (lock-free, no system call): one request of `kind`, its bytes counted only when it succeeded.
  void request(Request kind, uint64_t bytes, uint64_t offset, bool ok) noexcept;
  void connection_opened() noexcept;
  void connection_closed() noexcept;
  void refused(Refusal why) noexcept;
  // A sync that failed: the manager marks the export failed with `reason` (one line, cut to kReasonBytes - 1).
  void durability_failure(std::string_view reason) noexcept;

  Snapshot snapshot() const;  // counts() with coverage_bytes()
  // Everything but the coverage (left 0): no scan of the bitmap, for a reader that polls often.
  Snapshot counts() const;
  // Distinct bytes written or zeroed: a scan of the bitmap (one word per 4 MiB of volume).
  uint64_t coverage_bytes() const;
  // Only the durability failures (count, last reason): what the manager polls, without scanning the bitmap.
  struct Durability {
    uint64_t failures = 0;
    std::string reason;
  };
  Durability durability() const;
  Identity identity() const;

 private:
  explicit ExportCounters(SharedMapping mapping);
  Layout& layout() const noexcept { return *static_cast<Layout*>(mapping_.data()); }
  std::atomic<uint64_t>* bitmap() const noexcept;
  void cover(uint64_t offset, uint64_t bytes) noexcept;

  SharedMapping mapping_;
  std::mutex event_writer_;  // one writer of the event area per process; the file has one server at a time
};

}  // namespace nbdxm
