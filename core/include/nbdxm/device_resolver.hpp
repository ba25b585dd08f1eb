#pragma once
// DeviceResolver: turns an export read from the store into its opened, verified device. It never trusts a path on
// its own: before anything is opened, the device must exist, be a block device (or a regular file where those are
// allowed), have exactly its mapping's size, and, where the mapping asks for it, be the very device that the
// volume's identity link leads to. A refused device is never opened. Nothing about a device is remembered between
// calls (BlockDeviceSizes keeps only sysfs attributes open, and reads them afresh), so a mapping moved in the store,
// or a device that changed, is followed by the next call. A block device is served only under this server's
// exclusive claim on it (DeviceClaims), which the opened device holds until it is closed; a mapping without device
// correlation is served only where the rules allow it.
#include <cstdint>
#include <memory>
#include <string>

#include "nbdxm/block_device_sizes.hpp"
#include "nbdxm/device_claims.hpp"
#include "nbdxm/file_descriptor.hpp"
#include "nbdxm/records.hpp"

namespace nbdxm {

struct DeviceRules {
  static constexpr const char* kDefaultByIdDir = "/dev/disk/by-id";
  bool allow_regular_files = false;  // for demos and tests; appliances serve block devices only
  std::string byid_dir = kDefaultByIdDir;
  // Serve mappings that do not require device correlation (requires_device_correlation = 0), whose device nothing
  // proves to be the volume: for tests and demos.
  bool allow_uncorrelated = false;
};

enum class DeviceKind { block_device, regular_file };

struct OpenedDevice {
  DeviceClaims::Share claim;  // block devices; declared before fd so that it is released after fd is closed
  FileDescriptor fd;
  DeviceKind kind = DeviceKind::block_device;
  std::string path;
  int64_t size = 0;
  uint32_t logical_sector = 1;  // the smallest unit the device can write or zero (BLKSSZGET; 1 for files)
  uint32_t physical_block = 4096;
  bool read_only = false;
};

class DeviceResolver {
 public:
  explicit DeviceResolver(DeviceRules rules);
  const DeviceRules& rules() const { return rules_; }

  // Verifies the export's device and opens it (read-only when asked). On refusal throws Error with one line that
  // names the export, the device and the reason; nothing was opened then. Block device sizes are read from sysfs
  // so that a device of the wrong size is not opened either (without sysfs the size is checked right after the
  // open, and the device closed again on a mismatch). After opening, the opened object is checked to be the one
  // that was verified, and its size is read again from the device itself.
  OpenedDevice open(const NbdExport& served, bool read_only) const;

  // <byid-dir>/virtio-<first 20 hex digits of the volume UUID without hyphens>: the link udev creates from the
  // virtio serial that the cloud gives the volume.
  std::string identity_link(const std::string& volume_uuid) const;

 private:
  DeviceRules rules_;
  mutable BlockDeviceSizes block_device_sizes_;  // keeps sysfs attributes open, nothing else; thread-safe
  std::shared_ptr<DeviceClaims> claims_ = DeviceClaims::create();  // thread-safe
};

}  // namespace nbdxm
