#include "nbdxm/device_claims.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <vector>

#include "nbdxm/error.hpp"

namespace nbdxm {
namespace {

namespace fs = std::filesystem;

std::string sysfs_dir(dev_t device) { return fmt::format("/sys/dev/block/{}:{}", major(device), minor(device)); }

// The kernel's name of the device (loop3, vdc1), for messages.
std::string kernel_name(dev_t device) {
  std::error_code ec;
  const fs::path target = fs::read_symlink(sysfs_dir(device), ec);
  return ec ? fmt::format("{}:{}", major(device), minor(device)) : target.filename().string();
}

std::optional<std::string> resolved_path(const std::string& path) {
  char buffer[PATH_MAX];
  if (::realpath(path.c_str(), buffer) == nullptr) return std::nullopt;
  return std::string(buffer);
}

std::vector<std::string> holders(dev_t device) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(sysfs_dir(device) + "/holders", ec)) {
    names.push_back(entry.path().filename().string());
  }
  return names;
}

// The device and each of its partitions.
std::vector<dev_t> device_and_partitions(dev_t device) {
  std::vector<dev_t> devices{device};
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(sysfs_dir(device), ec)) {
    if (!fs::exists(entry.path() / "partition", ec)) continue;
    std::ifstream dev_file(entry.path() / "dev");
    unsigned int major_number = 0;
    unsigned int minor_number = 0;
    char colon = 0;
    if (dev_file >> major_number >> colon >> minor_number && colon == ':') {
      devices.push_back(makedev(major_number, minor_number));
    }
  }
  return devices;
}

// Where `device` is mounted in this process's mount namespace (/proc/self/mountinfo, field 3 is MAJOR:MINOR and
// field 5 the mount point).
std::optional<std::string> mount_point(dev_t device) {
  const std::string number = fmt::format("{}:{}", major(device), minor(device));
  std::ifstream mountinfo("/proc/self/mountinfo");
  for (std::string line; std::getline(mountinfo, line);) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    if (fields >> id >> parent >> dev >> root >> point && dev == number) return point;
  }
  return std::nullopt;
}

bool used_as_swap(dev_t device) {
  std::ifstream swaps("/proc/swaps");
  std::string line;
  std::getline(swaps, line);  // the header
  while (std::getline(swaps, line)) {
    const std::string path = line.substr(0, line.find_first_of(" \t"));
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && S_ISBLK(st.st_mode) && st.st_rdev == device) return true;
  }
  return false;
}

// Why the kernel refused an exclusive open (EBUSY): asked only then, so that a claim costs nothing more.
std::string busy_reason(dev_t device) {
  for (const dev_t d : device_and_partitions(device)) {
    const std::string who = d == device ? "it" : "its partition " + kernel_name(d);
    if (const auto held_by = holders(d); !held_by.empty()) {
      return fmt::format("{} is held by {} (device-mapper, md or another stacking driver)", who, held_by.front());
    }
    if (const auto point = mount_point(d)) return fmt::format("{} is mounted on {}", who, *point);
    if (used_as_swap(d)) return fmt::format("{} is used as swap", who);
  }
  return "another process holds it open exclusively (another server serving it through another path, or a tool "
         "such as mkfs)";
}

}  // namespace

DeviceClaims::Share::Share(Share&& other) noexcept
    : claims_(std::move(other.claims_)), device_(std::exchange(other.device_, 0)), fd_(std::exchange(other.fd_, -1)) {}

DeviceClaims::Share& DeviceClaims::Share::operator=(Share&& other) noexcept {
  if (this != &other) {
    reset();
    claims_ = std::move(other.claims_);
    device_ = std::exchange(other.device_, 0);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

void DeviceClaims::Share::reset() noexcept {
  if (claims_) claims_->release(device_);
  claims_.reset();
  fd_ = -1;
}

DeviceClaims::Share DeviceClaims::claim(const NbdExport& served, dev_t device, bool read_only) {
  const std::string& path = served.device_path;
  const auto resolved = resolved_path(path);
  if (!resolved || resolved->rfind("/dev/", 0) != 0) {
    throw Error(ExitCode::conflict,
                fmt::format("export {}: block device {} {}; only device nodes in /dev are served", served.export_name,
                            path, resolved ? "leads to " + *resolved + ", outside /dev" : "cannot be resolved"));
  }
  const std::lock_guard lock(mutex_);
  if (const auto it = claims_.find(device); it != claims_.end()) {
    if (it->second.export_id != served.id) {
      throw Error(ExitCode::conflict,
                  fmt::format("export {}: device {} ({}) is in use: this server serves it as export {}; two exports "
                              "never write one device",
                              served.export_name, path, kernel_name(device), it->second.export_name));
    }
    if (it->second.read_only && !read_only) {
      throw Error(ExitCode::unavailable,
                  fmt::format("export {}: device {} is open read-only for this server's read-only connections; a "
                              "writing connection is served once they have closed",
                              served.export_name, path));
    }
    ++it->second.shares;
    return Share(shared_from_this(), device, it->second.fd.get());
  }
  Claim claim;
  claim.fd = open_exclusive(served, device, read_only);
  claim.export_id = served.id;
  claim.export_name = served.export_name;
  claim.read_only = read_only;
  claim.shares = 1;
  const int fd = claim.fd.get();
  claims_.emplace(device, std::move(claim));
  return Share(shared_from_this(), device, fd);
}

FileDescriptor DeviceClaims::open_exclusive(const NbdExport& served, dev_t device, bool read_only) const {
  const std::string& path = served.device_path;
  struct stat st {};
  if (::stat((sysfs_dir(device) + "/partition").c_str(), &st) == 0) {
    throw Error(ExitCode::conflict, fmt::format("export {}: device {} is partition {}; only whole devices are served",
                                                served.export_name, path, kernel_name(device)));
  }
  FileDescriptor fd(::open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_EXCL | O_CLOEXEC | O_NOCTTY));
  if (!fd.valid()) {
    const int err = errno;
    if (err == EBUSY) {
      throw Error(ExitCode::conflict, fmt::format("export {}: device {} ({}) is in use: {}; a device in use is never "
                                                  "served",
                                                  served.export_name, path, kernel_name(device), busy_reason(device)));
    }
    throw Error(ExitCode::failure,
                fmt::format("export {}: cannot open device {}: {}", served.export_name, path, strerror(err)));
  }
  struct stat opened {};
  if (::fstat(fd.get(), &opened) != 0 || !S_ISBLK(opened.st_mode) || opened.st_rdev != device) {
    throw Error(ExitCode::conflict,
                fmt::format("export {}: device {} changed while it was being opened; the client may connect again",
                            served.export_name, path));
  }
  return fd;
}

void DeviceClaims::release(dev_t device) noexcept {
  const std::lock_guard lock(mutex_);
  const auto it = claims_.find(device);
  if (it != claims_.end() && --it->second.shares == 0) claims_.erase(it);  // closes the O_EXCL descriptor
}

size_t DeviceClaims::claimed() {
  const std::lock_guard lock(mutex_);
  return claims_.size();
}

}  // namespace nbdxm
