#pragma once
// BlockDeviceSizes: the size of a block device as the kernel reports it at the moment of asking, read from sysfs
// (/sys/dev/block/MAJOR:MINOR/size) so that the device itself is never opened.
//
// Each device's sysfs attribute stays open and is read again from offset 0 at every call: sysfs produces the value
// afresh on each such read, so nothing is remembered but the open attribute. Opening the attribute anew at every
// client connect cost the plugin more than every other check of a connect together (kernfs open and release: about
// 30 us of connect latency on the benchmark machine). When a device goes away, its attribute fails every read
// (ENODEV) even if another device later gets the same number; the attribute is then opened again by number.
// Thread-safe.
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>

#include "nbdxm/file_descriptor.hpp"

namespace nbdxm {

class BlockDeviceSizes {
 public:
  // The size in bytes of block device `device` (a st_rdev) now, or nullopt when sysfs does not know the device.
  std::optional<int64_t> bytes(dev_t device);

 private:
  // Attributes kept open at most; more distinct devices than this in one server's life start the set afresh.
  static constexpr size_t kMaxOpen = 256;

  std::mutex mutex_;
  std::map<dev_t, FileDescriptor> attributes_;
};

}  // namespace nbdxm
