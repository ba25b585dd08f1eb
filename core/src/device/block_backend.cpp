#include "nbdxm/block_backend.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace nbdxm {
namespace {

bool not_supported(int err) { return err == EOPNOTSUPP || err == ENOTSUP || err == ENOTTY || err == ENODEV; }

bool aligned(uint64_t value, uint32_t alignment) { return alignment <= 1 || value % alignment == 0; }

int fallocate_errno(int fd, int mode, uint64_t offset, uint32_t count) {
  if (::fallocate(fd, mode, static_cast<off_t>(offset), static_cast<off_t>(count)) == 0) return 0;
  return errno;
}

}  // namespace

BlockBackend::BlockBackend(OpenedDevice device, Durability durability)
    : device_(std::move(device)), write_through_(durability == Durability::write_through) {}

BlockSizes BlockBackend::block_sizes() const noexcept {
  if (device_.kind != DeviceKind::block_device) return {1, 4096, kMaxRequest};
  return {device_.logical_sector, std::max<uint32_t>(device_.physical_block, 4096), kMaxRequest};
}

bool BlockBackend::can_extents() const noexcept {
  return device_.kind == DeviceKind::regular_file && ::lseek(device_.fd.get(), 0, SEEK_HOLE) != -1;
}

bool BlockBackend::writable_range(uint32_t count, uint64_t offset) const noexcept {
  return offset <= static_cast<uint64_t>(device_.size) && count <= static_cast<uint64_t>(device_.size) - offset;
}

int BlockBackend::read(void* buf, uint32_t count, uint64_t offset) const noexcept {
  if (!writable_range(count, offset)) return EINVAL;
  auto* p = static_cast<char*>(buf);
  while (count > 0) {
    const ssize_t r = ::pread(device_.fd.get(), p, count, static_cast<off_t>(offset));
    if (r < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (r == 0) return EIO;  // the device shrank under us
    p += r;
    count -= static_cast<uint32_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return 0;
}

int BlockBackend::write(const void* buf, uint32_t count, uint64_t offset, bool fua) noexcept {
  if (device_.read_only) return EROFS;
  fua = fua || write_through_;
  if (!writable_range(count, offset)) return ENOSPC;
  // FUA natively: RWF_DSYNC makes just this write durable, cheaper than an fdatasync of the whole device.
  const bool dsync = fua && can_dsync_write_.load(std::memory_order_relaxed);
  const auto* p = static_cast<const char*>(buf);
  while (count > 0) {
    ssize_t r;
    if (dsync) {
      iovec iov{const_cast<char*>(p), count};
      r = ::pwritev2(device_.fd.get(), &iov, 1, static_cast<off_t>(offset), RWF_DSYNC);
      if (r < 0 && errno == EOPNOTSUPP) {
        can_dsync_write_.store(false, std::memory_order_relaxed);
        return write(p, count, offset, fua);
      }
    } else {
      r = ::pwrite(device_.fd.get(), p, count, static_cast<off_t>(offset));
    }
    if (r < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (r == 0) return EIO;  // no progress: retrying would spin for ever
    p += r;
    count -= static_cast<uint32_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  if (dsync) return 0;
  return after_modification(fua);
}

int BlockBackend::after_modification(bool fua) noexcept {
  if (fua || write_through_) return ::fdatasync(device_.fd.get()) == 0 ? 0 : errno;
  written_since_flush_.store(true, std::memory_order_release);
  return 0;
}

int BlockBackend::flush() noexcept {
  // Cleared before syncing: a write finishing during the sync sets it again and is synced at close.
  const bool was_written = written_since_flush_.exchange(false, std::memory_order_acq_rel);
  if (::fdatasync(device_.fd.get()) == 0) return 0;
  const int err = errno;
  if (was_written) written_since_flush_.store(true, std::memory_order_release);
  return err;
}

int BlockBackend::sync_if_written() noexcept {
  if (device_.read_only || !written_since_flush_.load(std::memory_order_acquire)) return 0;
  return flush();
}

int BlockBackend::zero(uint32_t count, uint64_t offset, ZeroFlags flags) noexcept {
  if (device_.read_only) return EROFS;
  if (!writable_range(count, offset)) return ENOSPC;
  const int err = device_.kind == DeviceKind::block_device ? zero_block_device(count, offset, flags)
                                                           : zero_regular_file(count, offset, flags);
  if (err != 0) return err;
  return after_modification(flags.fua);
}

int BlockBackend::zero_block_device(uint32_t count, uint64_t offset, ZeroFlags flags) noexcept {
  const int fd = device_.fd.get();
  // The kernel refuses ranges that are not whole logical sectors (EINVAL); let nbdkit write those instead.
  if (!aligned(offset, device_.logical_sector) || !aligned(count, device_.logical_sector)) return EOPNOTSUPP;
  if (flags.may_trim && can_punch_hole_.load(std::memory_order_relaxed)) {
    // On a block device, PUNCH_HOLE zeroes by unmapping or by the device's write-zeroes command and never falls
    // back to writing zero buffers (BLKDEV_ZERO_NOFALLBACK): fast, or EOPNOTSUPP.
    const int err = fallocate_errno(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, count);
    if (err == 0) return 0;
    if (!not_supported(err)) return err;
    can_punch_hole_.store(false, std::memory_order_relaxed);
  }
  // BLKZEROOUT may fall back to writing zero pages inside the kernel: not fast.
  if (flags.fast) return EOPNOTSUPP;
  if (can_zeroout_.load(std::memory_order_relaxed)) {
    uint64_t range[2] = {offset, count};
    if (::ioctl(fd, BLKZEROOUT, range) == 0) return 0;
    const int err = errno;
    if (!not_supported(err)) return err;
    can_zeroout_.store(false, std::memory_order_relaxed);
  }
  return EOPNOTSUPP;
}

int BlockBackend::zero_regular_file(uint32_t count, uint64_t offset, ZeroFlags flags) noexcept {
  // Every primitive here only changes file system metadata, so each is fast; KEEP_SIZE everywhere: the backing
  // file never grows.
  const int fd = device_.fd.get();
  if (flags.may_trim && can_punch_hole_.load(std::memory_order_relaxed)) {
    const int err = fallocate_errno(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, count);
    if (err == 0) return 0;
    if (!not_supported(err)) return err;
    can_punch_hole_.store(false, std::memory_order_relaxed);
  }
  if (can_zero_range_.load(std::memory_order_relaxed)) {
    const int err = fallocate_errno(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, count);
    if (err == 0) return 0;
    if (!not_supported(err)) return err;
    can_zero_range_.store(false, std::memory_order_relaxed);
  }
  if (can_punch_hole_.load(std::memory_order_relaxed)) {
    // No ZERO_RANGE (e.g. tmpfs): a hole re-allocated reads as zeroes and keeps the space reserved.
    int err = fallocate_errno(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, count);
    if (err == 0) err = fallocate_errno(fd, FALLOC_FL_KEEP_SIZE, offset, count);
    if (err == 0) return 0;
    if (!not_supported(err)) return err;
    can_punch_hole_.store(false, std::memory_order_relaxed);
  }
  return EOPNOTSUPP;
}

int BlockBackend::trim(uint32_t count, uint64_t offset, bool fua) noexcept {
  if (device_.read_only) return EROFS;
  if (!writable_range(count, offset)) return ENOSPC;
  const int fd = device_.fd.get();
  int err = 0;
  if (device_.kind == DeviceKind::block_device) {
    // BLKDISCARD takes whole logical sectors only: discard the sectors inside the range, leave the edges.
    const uint64_t sector = device_.logical_sector;
    const uint64_t start = (offset + sector - 1) / sector * sector;
    const uint64_t end = (offset + count) / sector * sector;
    if (end > start && can_discard_.load(std::memory_order_relaxed)) {
      uint64_t range[2] = {start, end - start};
      if (::ioctl(fd, BLKDISCARD, range) != 0) err = errno;
    }
  } else if (can_punch_hole_.load(std::memory_order_relaxed)) {
    err = fallocate_errno(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, count);
  }
  if (not_supported(err)) {
    (device_.kind == DeviceKind::block_device ? can_discard_ : can_punch_hole_).store(false, std::memory_order_relaxed);
    err = 0;
  }
  if (err != 0) return err;
  return after_modification(fua);
}

int BlockBackend::prefetch(uint32_t count, uint64_t offset) const noexcept {
  if (!writable_range(count, offset)) return EINVAL;
  return ::posix_fadvise(device_.fd.get(), static_cast<off_t>(offset), count, POSIX_FADV_WILLNEED);
}

int BlockBackend::extents(uint32_t count, uint64_t offset, bool req_one, const ExtentSink& sink) const {
  if (!writable_range(count, offset)) return EINVAL;
  const int fd = device_.fd.get();
  const uint64_t end = offset + count;
  while (offset < end) {
    off_t data = ::lseek(fd, static_cast<off_t>(offset), SEEK_DATA);
    if (data < 0) {
      if (errno != ENXIO) return errno;
      data = static_cast<off_t>(end);  // ENXIO: offset is in the final hole
    }
    const auto data_start = std::min<uint64_t>(static_cast<uint64_t>(data), end);
    if (data_start > offset) {
      if (const int err = sink(offset, data_start - offset, true); err != 0) return err;
      if (req_one) return 0;
    }
    offset = data_start;
    if (offset >= end) break;
    const off_t hole = ::lseek(fd, static_cast<off_t>(offset), SEEK_HOLE);
    if (hole < 0) return errno;
    // A file changing underneath could report no progress: call the rest data rather than loop.
    const uint64_t hole_start =
        static_cast<uint64_t>(hole) > offset ? std::min<uint64_t>(static_cast<uint64_t>(hole), end) : end;
    if (const int err = sink(offset, hole_start - offset, false); err != 0) return err;
    if (req_one) return 0;
    offset = hole_start;
  }
  return 0;
}

}  // namespace nbdxm
