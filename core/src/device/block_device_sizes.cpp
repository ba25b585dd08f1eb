#include "nbdxm/block_device_sizes.hpp"

#include <fcntl.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

namespace nbdxm {
namespace {

// sysfs counts 512-byte sectors, whatever the device's logical sector size.
constexpr int64_t kSysfsSectorBytes = 512;

FileDescriptor open_attribute(dev_t device) {
  char path[64];
  std::snprintf(path, sizeof path, "/sys/dev/block/%u:%u/size", major(device), minor(device));
  return FileDescriptor(::open(path, O_RDONLY | O_CLOEXEC));
}

std::optional<int64_t> read_bytes(const FileDescriptor& attribute) {
  char text[32];
  const ssize_t n = ::pread(attribute.get(), text, sizeof text - 1, 0);
  if (n <= 0) return std::nullopt;
  text[n] = '\0';
  char* end = nullptr;
  errno = 0;
  const long long sectors = std::strtoll(text, &end, 10);
  if (errno != 0 || end == text || sectors < 0) return std::nullopt;
  return static_cast<int64_t>(sectors) * kSysfsSectorBytes;
}

}  // namespace

std::optional<int64_t> BlockDeviceSizes::bytes(dev_t device) {
  std::lock_guard lock(mutex_);
  if (auto it = attributes_.find(device); it != attributes_.end()) {
    if (auto size = read_bytes(it->second)) return size;
    attributes_.erase(it);  // the device went away since it was opened; whatever has its number now is looked up
  }
  FileDescriptor attribute = open_attribute(device);
  if (!attribute.valid()) return std::nullopt;
  const std::optional<int64_t> size = read_bytes(attribute);
  if (!size) return std::nullopt;
  if (attributes_.size() >= kMaxOpen) attributes_.clear();
  attributes_.emplace(device, std::move(attribute));
  return size;
}

}  // namespace nbdxm
