#include "nbdxm/shared_mapping.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "nbdxm/file_descriptor.hpp"

namespace nbdxm {
namespace {

std::runtime_error file_error(const std::string& kind, const std::string& path, const std::string& what) {
  return std::runtime_error(fmt::format("{} {}: {}: {}", kind, path, what, std::strerror(errno)));
}

void* map_whole(int fd, const std::string& path, const std::string& kind, size_t min_length, bool writable,
                size_t& length) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw file_error(kind, path, "cannot stat");
  length = static_cast<size_t>(st.st_size);
  if (length < min_length) throw std::runtime_error(fmt::format("{} {} is too short to be one; remove it", kind, path));
  void* data = ::mmap(nullptr, length, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
  if (data == MAP_FAILED) throw file_error(kind, path, "cannot map");
  return data;
}

}  // namespace

SharedMapping::SharedMapping(SharedMapping&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), length_(std::exchange(other.length_, 0)) {}

SharedMapping& SharedMapping::operator=(SharedMapping&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) ::munmap(data_, length_);
    data_ = std::exchange(other.data_, nullptr);
    length_ = std::exchange(other.length_, 0);
  }
  return *this;
}

SharedMapping::~SharedMapping() {
  if (data_ != nullptr) ::munmap(data_, length_);
}

std::optional<SharedMapping> SharedMapping::open(const std::string& path, const std::string& kind, size_t min_length,
                                                 bool writable) {
  FileDescriptor fd(::open(path.c_str(), (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return std::nullopt;
    throw file_error(kind, path, writable ? "cannot open for writing" : "cannot open");
  }
  size_t length = 0;
  void* data = map_whole(fd.get(), path, kind, min_length, writable, length);
  return SharedMapping(data, length);
}

SharedMapping SharedMapping::open_or_create(const std::string& path, const std::string& kind, size_t header_length,
                                            size_t length, const std::function<void(const SharedMapping&)>& check,
                                            const std::function<void(SharedMapping&)>& initialise) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (auto existing = open(path, kind, header_length, true)) {
      check(*existing);
      return std::move(*existing);
    }
    if (auto created = create(path, kind, length, initialise)) return std::move(*created);
  }
  throw std::runtime_error(fmt::format("{} {} keeps changing; remove it", kind, path));
}

std::optional<SharedMapping> SharedMapping::create(const std::string& path, const std::string& kind, size_t length,
                                                   const std::function<void(SharedMapping&)>& initialise) {
  const std::string temporary = fmt::format("{}.{}.tmp", path, ::getpid());
  FileDescriptor fd(::open(temporary.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
  if (!fd.valid()) throw file_error(kind, temporary, "cannot create");
  ::fchmod(fd.get(), 0640);  // whatever the umask: the manager (the servers' user) reads it
  if (::ftruncate(fd.get(), static_cast<off_t>(length)) != 0) {
    const int size_errno = errno;
    ::unlink(temporary.c_str());
    errno = size_errno;
    throw file_error(kind, temporary, "cannot size");
  }
  size_t mapped = 0;
  void* data = map_whole(fd.get(), temporary, kind, length, true, mapped);  // sets `mapped`: before it is read
  SharedMapping created(data, mapped);
  initialise(created);
  const int linked = ::link(temporary.c_str(), path.c_str());
  const int link_errno = errno;
  ::unlink(temporary.c_str());
  if (linked == 0) return created;
  errno = link_errno;
  if (link_errno != EEXIST) throw file_error(kind, path, "cannot create");
  return std::nullopt;
}

}  // namespace nbdxm
