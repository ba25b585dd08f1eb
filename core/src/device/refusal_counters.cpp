#include "nbdxm/refusal_counters.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "nbdxm/file_descriptor.hpp"

namespace nbdxm {
namespace {

using Word = std::atomic<uint64_t>;
static_assert(Word::is_always_lock_free, "the counters are shared between processes through a mapping");

constexpr uint64_t kMagic = 0x3146455244584d4eULL;  // "NMXDREF1" read as little-endian bytes
constexpr uint64_t kVersion = 1;
constexpr size_t kSlots = 32;  // room for reasons of a later version that keeps this layout's offsets
static_assert(RefusalCounters::kReasons <= kSlots);

std::runtime_error file_error(const std::string& what, const std::string& path) {
  return std::runtime_error(fmt::format("refusal counter file {}: {}: {}", path, what, std::strerror(errno)));
}

}  // namespace

// The header is written before the file is linked into place and never changes after.
struct RefusalCounters::Layout {
  Word magic;
  Word version;
  Word refused[kSlots];  // by Reason
};

namespace {

void* map_whole(int fd, const std::string& path, bool writable, size_t& length) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw file_error("cannot stat", path);
  length = static_cast<size_t>(st.st_size);
  if (length < sizeof(RefusalCounters::Layout)) {
    throw std::runtime_error(fmt::format("refusal counter file {} is too short to be one; remove it", path));
  }
  void* map = ::mmap(nullptr, length, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) throw file_error("cannot map", path);
  return map;
}

}  // namespace

const char* RefusalCounters::name(Reason reason) noexcept {
  switch (reason) {
    case Reason::client_not_allowed:
      return "client_not_allowed";
    case Reason::no_export_name:
      return "no_export_name";
    case Reason::export_not_served_here:
      return "export_not_served_here";
    case Reason::unknown_export:
      return "unknown_export";
    case Reason::not_active:
      return "not_active";
    case Reason::device:
      return "device";
    case Reason::store_unavailable:
      return "store_unavailable";
    case Reason::counter_file:
      return "counter_file";
    case Reason::kCount:
      break;
  }
  return "unknown";
}

std::string RefusalCounters::path(const std::string& counters_dir) { return counters_dir + "/refusals.counts"; }

RefusalCounters::~RefusalCounters() { ::munmap(map_, length_); }

std::unique_ptr<RefusalCounters> RefusalCounters::open_read_only(const std::string& path) {
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return nullptr;
    throw file_error("cannot open", path);
  }
  size_t length = 0;
  void* map = map_whole(fd.get(), path, false, length);
  std::unique_ptr<RefusalCounters> counters(new RefusalCounters(map, length));
  if (counters->layout().magic.load() != kMagic || counters->layout().version.load() != kVersion) {
    throw std::runtime_error(fmt::format("{} is not a refusal counter file of this nbdxm version; remove it", path));
  }
  return counters;
}

std::unique_ptr<RefusalCounters> RefusalCounters::open_or_create(const std::string& path) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (open_read_only(path)) {
      FileDescriptor fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
      if (!fd.valid()) throw file_error("cannot open for writing", path);
      size_t length = 0;
      void* map = map_whole(fd.get(), path, true, length);
      return std::unique_ptr<RefusalCounters>(new RefusalCounters(map, length));
    }
    // Written complete under a temporary name, then linked into place: of servers starting together, one links its
    // file and the others map it (EEXIST), and no reader sees a file without its header.
    const std::string temporary = fmt::format("{}.{}.tmp", path, ::getpid());
    FileDescriptor fd(::open(temporary.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
    if (!fd.valid()) throw file_error("cannot create", temporary);
    ::fchmod(fd.get(), 0640);
    if (::ftruncate(fd.get(), static_cast<off_t>(sizeof(Layout))) != 0) {
      ::unlink(temporary.c_str());
      throw file_error("cannot size", temporary);
    }
    size_t length = 0;
    void* map = map_whole(fd.get(), temporary, true, length);
    std::unique_ptr<RefusalCounters> created(new RefusalCounters(map, length));
    created->layout().version.store(kVersion);
    created->layout().magic.store(kMagic);
    const int linked = ::link(temporary.c_str(), path.c_str());
    const int link_errno = errno;
    ::unlink(temporary.c_str());
    if (linked == 0) return created;
    errno = link_errno;
    if (link_errno != EEXIST) throw file_error("cannot create", path);
  }
  throw std::runtime_error(fmt::format("refusal counter file {} keeps changing; remove it", path));
}

void RefusalCounters::refused(Reason reason) noexcept {
  if (reason == Reason::kCount) return;
  layout().refused[static_cast<size_t>(reason)].fetch_add(1, std::memory_order_relaxed);
}

RefusalCounters::Counts RefusalCounters::counts() const {
  Counts counts{};
  for (size_t r = 0; r < kReasons; ++r) counts[r] = layout().refused[r].load(std::memory_order_relaxed);
  return counts;
}

}  // namespace nbdxm
