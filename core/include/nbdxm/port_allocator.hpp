#pragma once
// PortAllocator: picks the port for a new export. The store says which ports live exports hold; the kernel says
// which of the rest some other program holds (a trial bind on the servers' listen address). The caller runs this
// inside the write transaction that records the export, so two creators can never pick the same port, and the
// partial unique index on live ports backs that up.
#include <optional>
#include <set>
#include <string>

#include "nbdxm/file_descriptor.hpp"

namespace nbdxm {

struct PortRange {
  int low = 10810;
  int high = 10999;

  // Parses "LO-HI" (1 <= LO <= HI <= 65535); throws Error(usage) naming the value and the expected form.
  static PortRange parse(const std::string& text);
  std::string str() const;
  bool contains(int port) const { return port >= low && port <= high; }
  int size() const { return high - low + 1; }
};

// A socket listening at the (numeric) address on `port`, with nbdkit's socket options: what the direct supervisor
// hands its servers (socket activation). Invalid, with errno set, when the port cannot be bound; Error(usage) when
// the address cannot be used.
FileDescriptor listen_on(const std::string& address, int port);
// A socket listening at the Unix socket `path` (a Unix-socket export's), mode 0660 and group `group` before it
// listens, so that only the group's members (and the owner) can connect. A socket file left at the path (a server
// of an earlier manager) is replaced; the directory is created (0755: the socket's own mode guards it). Throws
// Error(unavailable) naming the path, the group and the fix.
FileDescriptor listen_on_unix(const std::string& path, const std::string& group);

class PortAllocator {
 public:
  PortAllocator(PortRange range, std::string listen_address)
      : range_(range), listen_address_(std::move(listen_address)) {}

  const PortRange& range() const { return range_; }
  const std::string& listen_address() const { return listen_address_; }

  // The lowest port of the range that is not in `held` and can be bound now; throws Error(conflict) naming the
  // range when there is none.
  int lowest_free(const std::set<int>& held) const;
  // Whether a server could listen on `port` at the listen address now (same socket options as nbdkit).
  bool bindable(int port) const;

 private:
  PortRange range_;
  std::string listen_address_;
};

}  // namespace nbdxm
