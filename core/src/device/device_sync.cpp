#include "nbdxm/device_sync.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "nbdxm/file_descriptor.hpp"

namespace nbdxm {

DeviceSyncResult sync_devices(const std::vector<std::string>& paths) {
  DeviceSyncResult result;
  for (const auto& path : paths) {
    FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (!fd.valid()) {
      if (errno == ENOENT) {
        result.missing.push_back(path);
      } else {
        result.failures.push_back(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
      }
      continue;
    }
    if (::fdatasync(fd.get()) != 0) {
      result.failures.push_back(fmt::format("{}: fdatasync: {}", path, std::strerror(errno)));
      continue;
    }
    result.synced.push_back(path);
  }
  return result;
}

}  // namespace nbdxm
