#pragma once
// BlockBackend: the I/O of one connection on one opened device, with the primitives nbdkit's file plugin uses and
// the stricter rules nbdxm needs: requests beyond the end fail (the backing file never grows), write-zeroes and
// trim use the block device primitives (BLKZEROOUT, BLKDISCARD, fallocate) or the file ones (fallocate), a fast
// zero is refused up front unless it cannot fall back to writing, and writes are tracked so that closing the
// connection can make them durable. Every operation returns 0 or an errno value and never throws.
//
// Durability: on-close (the default) makes writes durable at a flush, a FUA request or the connection's close;
// write-through makes every write, write-zeroes and trim durable before it returns (RWF_DSYNC for writes, an
// fdatasync after zeroing or trimming), so that a client's checkpoint can never run ahead of the device.
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "nbdxm/device_resolver.hpp"

namespace nbdxm {

struct BlockSizes {
  uint32_t minimum = 0;
  uint32_t preferred = 0;
  uint32_t maximum = 0;
};

// The largest request advertised, and the largest zero or trim done: the migration client's largest request. A
// zero or trim cannot be interrupted once in the kernel, so a revoked connection holds the device at most this long.
constexpr uint32_t kMaxRequest = 32 * 1024 * 1024;

struct ZeroFlags {
  bool may_trim = false;  // the client allows a hole (NBD: no NO_HOLE flag)
  bool fua = false;
  bool fast = false;  // fail with EOPNOTSUPP unless zeroing cannot end up writing zero buffers
};

// Receives one extent; returns 0 or an errno value to stop.
using ExtentSink = std::function<int(uint64_t offset, uint64_t length, bool hole)>;

class BlockBackend {
 public:
  enum class Durability { on_close, write_through };
  explicit BlockBackend(OpenedDevice device, Durability durability = Durability::on_close);
  BlockBackend(const BlockBackend&) = delete;
  BlockBackend& operator=(const BlockBackend&) = delete;

  int64_t size() const noexcept { return device_.size; }
  bool read_only() const noexcept { return device_.read_only; }
  bool write_through() const noexcept { return write_through_; }
  DeviceKind kind() const noexcept { return device_.kind; }
  const std::string& path() const noexcept { return device_.path; }
  // Block devices: minimum = logical sector, preferred = max(physical block, 4096); regular files: 1 and 4096.
  // The maximum is kMaxRequest for both.
  BlockSizes block_sizes() const noexcept;
  // Holes are only meaningful for regular files on file systems that report them (SEEK_HOLE).
  bool can_extents() const noexcept;

  int read(void* buf, uint32_t count, uint64_t offset) const noexcept;
  int write(const void* buf, uint32_t count, uint64_t offset, bool fua) noexcept;
  int flush() noexcept;
  // EOPNOTSUPP when the range cannot be zeroed without writing (unaligned on a block device, or no primitive):
  // nbdkit then writes zero buffers itself, or tells a fast-zero client that zeroing would not be fast.
  int zero(uint32_t count, uint64_t offset, ZeroFlags flags) noexcept;
  // Advisory: ranges the device cannot discard are left as they are.
  int trim(uint32_t count, uint64_t offset, bool fua) noexcept;
  int prefetch(uint32_t count, uint64_t offset) const noexcept;
  int extents(uint32_t count, uint64_t offset, bool req_one, const ExtentSink& sink) const;
  // fdatasync when anything was written, zeroed or trimmed since the last flush (the migration client never
  // flushes: closing its connection is what makes its writes durable).
  int sync_if_written() noexcept;

 private:
  bool writable_range(uint32_t count, uint64_t offset) const noexcept;
  int after_modification(bool fua) noexcept;
  int zero_block_device(uint32_t count, uint64_t offset, ZeroFlags flags) noexcept;
  int zero_regular_file(uint32_t count, uint64_t offset, ZeroFlags flags) noexcept;

  OpenedDevice device_;
  const bool write_through_;
  std::atomic<bool> written_since_flush_{false};
  // What this device turned out not to support, learnt on first use (per connection, like the file plugin).
  std::atomic<bool> can_punch_hole_{true};
  std::atomic<bool> can_zero_range_{true};
  std::atomic<bool> can_zeroout_{true};
  std::atomic<bool> can_discard_{true};
  std::atomic<bool> can_dsync_write_{true};
};

}  // namespace nbdxm
