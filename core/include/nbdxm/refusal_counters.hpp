#pragma once
// RefusalCounters: every connect the export servers of a manager refused, by reason, in one file they all share:
// <counters-dir>/refusals.counts, next to the per-export counter files (export_counters.hpp) but not a .bin file, so
// the manager's durability folder leaves it alone.
//
// Why one file for the manager rather than per export or per server: an export's file only exists for an export the
// store knows, so a client asking for a name that does not exist, or kept out by allow-from, has no export file to
// be counted in; and a per-server file would go with its export's life (removed once its server is stopped), losing
// exactly the refusals an operator wants to see (clients still asking for an export that was revoked). The refusals
// of an export that exists (not_active, device) are counted here and in the export's own file (per export labels).
//
// Every server maps the file read-write (created, complete, by the first one) and adds with relaxed atomics: no
// lock and no system call per refusal. The manager and /metrics map it read-only. It lives as long as the run
// directory (/run: until reboot); counting starts at zero again after that, as Prometheus counters may.
#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "nbdxm/shared_mapping.hpp"

namespace nbdxm {

class RefusalCounters {
 public:
  enum class Reason {
    client_not_allowed,      // the client's address is not in the server's allow-from
    no_export_name,          // the client asked for the default export "" of a server serving every export by name
    export_not_served_here,  // the server is pinned to another export (a client at the wrong port)
    unknown_export,          // no such export in the store, or its job, disk or mapping is missing
    not_active,              // the export exists but is pending, failed or revoked
    device,                  // the export's device failed its checks or could not be opened
    store_unavailable,       // the store could not be read in time (locked by another writer, say)
    counter_file,            // the export's counter file could not be created
    kCount
  };
  static constexpr size_t kReasons = static_cast<size_t>(Reason::kCount);
  using Counts = std::array<uint64_t, kReasons>;
  struct Layout;  // the file's layout (defined with the implementation)

  // The reason's name as /metrics labels it ("unknown_export").
  static const char* name(Reason reason) noexcept;
  // <counters-dir>/refusals.counts
  static std::string path(const std::string& counters_dir);

  ~RefusalCounters();
  RefusalCounters(const RefusalCounters&) = delete;
  RefusalCounters& operator=(const RefusalCounters&) = delete;

  // A server: maps the file, creating it when missing. Throws std::runtime_error naming the file.
  static std::unique_ptr<RefusalCounters> open_or_create(const std::string& path);
  // The manager: maps it read-only; nullptr when there is none. Throws std::runtime_error naming the file when it is
  // not a refusal counter file.
  static std::unique_ptr<RefusalCounters> open_read_only(const std::string& path);

  void refused(Reason reason) noexcept;
  Counts counts() const;

 private:
  explicit RefusalCounters(SharedMapping mapping);
  Layout& layout() const noexcept { return *static_cast<Layout*>(mapping_.data()); }

  SharedMapping mapping_;
};

}  // namespace nbdxm
