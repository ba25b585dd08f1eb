#include "nbdxm/device_resolver.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "nbdxm/error.hpp"

namespace nbdxm {
namespace {

constexpr size_t kSerialHexDigits = 20;

const char* describe_type(mode_t mode) {
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISREG(mode)) return "a regular file";
  return "not a block device";
}

std::string resolved_path(const std::string& path) {
  char buffer[PATH_MAX];
  if (::realpath(path.c_str(), buffer) == nullptr) return path;
  return buffer;
}

bool same_object(const struct stat& a, const struct stat& b) {
  if (S_ISBLK(a.st_mode) || S_ISBLK(b.st_mode))
    return S_ISBLK(a.st_mode) && S_ISBLK(b.st_mode) && a.st_rdev == b.st_rdev;
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

}  // namespace

DeviceResolver::DeviceResolver(DeviceRules rules) : rules_(std::move(rules)) {}

std::string DeviceResolver::identity_link(const std::string& volume_uuid) const {
  std::string hex;
  std::copy_if(volume_uuid.begin(), volume_uuid.end(), std::back_inserter(hex), [](char c) { return c != '-'; });
  hex.resize(std::min(hex.size(), kSerialHexDigits));
  return fmt::format("{}/virtio-{}", rules_.byid_dir, hex);
}

OpenedDevice DeviceResolver::open(const NbdExport& served, bool read_only) const {
  const std::string& name = served.export_name;
  const std::string& path = served.device_path;
  if (!served.requires_device_correlation && !rules_.allow_uncorrelated) {
    throw Error(ExitCode::conflict,
                fmt::format("export {}: the mapping of volume {} does not require device correlation, so nothing "
                            "proves that {} is that volume; such mappings are served only by a server started with "
                            "allow-uncorrelated=true (tests and demos)",
                            name, served.volume_uuid, path));
  }

  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      throw Error(ExitCode::unavailable,
                  fmt::format("export {}: device {} of volume {} does not exist; the volume is not attached at that "
                              "path (correct the mapping with `nbdxm mapping set-path`)",
                              name, path, served.volume_uuid));
    }
    throw Error(ExitCode::failure, fmt::format("export {}: cannot examine device {}: {}", name, path, strerror(errno)));
  }

  OpenedDevice device;
  device.path = path;
  device.read_only = read_only;
  if (S_ISBLK(st.st_mode)) {
    device.kind = DeviceKind::block_device;
  } else if (S_ISREG(st.st_mode) && rules_.allow_regular_files) {
    device.kind = DeviceKind::regular_file;
  } else if (S_ISREG(st.st_mode)) {
    throw Error(ExitCode::conflict,
                fmt::format("export {}: {} is a regular file, not a block device; regular files are served only with "
                            "allow-regular-files=true",
                            name, path));
  } else {
    throw Error(ExitCode::conflict,
                fmt::format("export {}: {} is {}, not a block device", name, path, describe_type(st.st_mode)));
  }

  const std::optional<int64_t> size = device.kind == DeviceKind::regular_file ? std::optional<int64_t>(st.st_size)
                                                                              : block_device_sizes_.bytes(st.st_rdev);
  auto check_size = [&](int64_t actual) {
    if (actual == served.size) return;
    throw Error(ExitCode::conflict,
                fmt::format("export {}: device {} has {} bytes but the mapping of volume {} says {}; the mapping "
                            "names the wrong device",
                            name, path, actual, served.volume_uuid, served.size));
  };
  if (size) check_size(*size);

  if (served.requires_device_correlation) {
    const std::string link = identity_link(served.volume_uuid);
    struct stat link_st {};
    if (::stat(link.c_str(), &link_st) != 0) {
      throw Error(ExitCode::conflict,
                  fmt::format("export {}: identity link {} of volume {} does not exist, so {} cannot be proven to be "
                              "that volume; the volume is not attached here",
                              name, link, served.volume_uuid, path));
    }
    if (!same_object(st, link_st)) {
      throw Error(ExitCode::conflict,
                  fmt::format("export {}: identity link {} of volume {} leads to {}, not to {}; the mapping names the "
                              "wrong device",
                              name, link, served.volume_uuid, resolved_path(link), path));
    }
  }

  if (device.kind == DeviceKind::block_device) {
    device.claim = claims_->claim(served, st.st_rdev, read_only);
    device.fd.reset(::fcntl(device.claim.fd(), F_DUPFD_CLOEXEC, 0));
  } else {
    device.fd.reset(::open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY));
  }
  if (!device.fd.valid()) {
    throw Error(ExitCode::failure, fmt::format("export {}: cannot open device {}: {}", name, path, strerror(errno)));
  }
  struct stat opened {};
  if (::fstat(device.fd.get(), &opened) != 0 || !same_object(st, opened)) {
    throw Error(ExitCode::conflict,
                fmt::format("export {}: device {} changed while it was being opened; the client may connect again",
                            name, path));
  }

  if (device.kind == DeviceKind::block_device) {
    uint64_t bytes = 0;
    if (::ioctl(device.fd.get(), BLKGETSIZE64, &bytes) != 0) {
      throw Error(ExitCode::failure,
                  fmt::format("export {}: cannot read the size of device {}: {}", name, path, strerror(errno)));
    }
    check_size(static_cast<int64_t>(bytes));
    int logical = 0;
    if (::ioctl(device.fd.get(), BLKSSZGET, &logical) == 0 && logical > 0) {
      device.logical_sector = static_cast<uint32_t>(logical);
    } else {
      device.logical_sector = 4096;  // the safe guess when the kernel does not say
    }
    unsigned int physical = 0;
    if (::ioctl(device.fd.get(), BLKPBSZGET, &physical) == 0 && physical > 0) device.physical_block = physical;
  } else {
    check_size(opened.st_size);
    device.logical_sector = 1;
    device.physical_block = opened.st_blksize > 0 ? static_cast<uint32_t>(opened.st_blksize) : 4096;
  }
  device.size = served.size;
  return device;
}

}  // namespace nbdxm
