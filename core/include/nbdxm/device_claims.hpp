#pragma once
// DeviceClaims: the exclusive claims one server holds on the block devices it serves, so that two exports can never
// write one device, whatever path leads to it.
//
// A claim is an open(O_EXCL) of the block device: the kernel then refuses every other exclusive opener (another
// server's claim, a mount, swapon, device-mapper, md), and a device one of those already holds cannot be claimed.
// Connections do their I/O through duplicates of the claiming descriptor (Share::fd), not through opens of their
// own: the kernel treats each exclusive open as a holder of its own, and lets write-zeroes, discard and punch-hole
// (which drop the range from the page cache) run without a temporary claim only on a descriptor that holds the
// claim; on any other descriptor they would fail (EBUSY) while the claim is held.
// A server claims a device when its first connection to it is admitted and keeps the claim while any connection
// to that device is open; the connections of one export share the claim (the migration client opens two per
// export; a client's NBD_OPT_INFO and NBD_OPT_GO each open one), so the device is opened O_EXCL once per run of
// connections, not once per connect. Another export of the same server asking for a claimed device is refused: the
// kernel would let this process share its own claim's device, this registry does not. A connection holds the
// claim of the device it serves: when its export moves to another device, its later connections claim that one,
// and the old claim ends with the old connections.
//
// Only whole block devices whose path leads (after resolving links) into /dev are claimed; a partition or a device
// node elsewhere is refused. Why a device cannot be claimed (its holders in /sys/dev/block/M:m/holders, a mount,
// swap) is looked up only when the kernel refused the claim, so that claiming costs one open.
// Thread-safe; shares keep the registry alive.
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "nbdxm/file_descriptor.hpp"
#include "nbdxm/records.hpp"

namespace nbdxm {

class DeviceClaims : public std::enable_shared_from_this<DeviceClaims> {
 public:
  // One connection's share of a claim. The claim (the O_EXCL descriptor) is closed with its last share.
  class Share {
   public:
    Share() = default;
    Share(Share&& other) noexcept;
    Share& operator=(Share&& other) noexcept;
    Share(const Share&) = delete;
    Share& operator=(const Share&) = delete;
    ~Share() { reset(); }
    bool held() const noexcept { return claims_ != nullptr; }
    // The claiming descriptor (open for reading and writing unless the claim was made read-only); valid while this
    // share is held. Duplicate it to do I/O.
    int fd() const noexcept { return fd_; }
    void reset() noexcept;

   private:
    friend class DeviceClaims;
    Share(std::shared_ptr<DeviceClaims> claims, dev_t device, int fd)
        : claims_(std::move(claims)), device_(device), fd_(fd) {}
    std::shared_ptr<DeviceClaims> claims_;
    dev_t device_ = 0;
    int fd_ = -1;
  };

  static std::shared_ptr<DeviceClaims> create() { return std::shared_ptr<DeviceClaims>(new DeviceClaims()); }

  // A share of this server's claim on block device `device` (st_rdev of served.device_path, checked again on the
  // claiming descriptor) for export `served`. Throws Error with one line naming the export, the device and the
  // reason when the device may not be served or cannot be claimed; nothing stays open then. The first share opens
  // the device read-only when `read_only` (a read-only server), and for reading and writing otherwise.
  Share claim(const NbdExport& served, dev_t device, bool read_only);
  // How many devices are claimed now.
  size_t claimed();

 private:
  DeviceClaims() = default;
  struct Claim {
    FileDescriptor fd;  // the O_EXCL open
    int64_t export_id = 0;
    std::string export_name;
    bool read_only = false;
    size_t shares = 0;
  };
  FileDescriptor open_exclusive(const NbdExport& served, dev_t device, bool read_only) const;
  void release(dev_t device) noexcept;

  std::mutex mutex_;  // held across the O_EXCL open, so that two connects never race for one claim
  std::map<dev_t, Claim> claims_;
};

}  // namespace nbdxm
