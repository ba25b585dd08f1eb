#pragma once
// SharedMapping: one whole file mapped MAP_SHARED, the way nbdxm's servers and manager share counters without a lock
// or a system call per update (export_counters.hpp, refusal_counters.hpp).
//
// A file is created complete: its header is written into the mapping of a temporary file, which is then linked into
// place, so no reader ever maps a file without its header; of processes creating one file at once, one links its
// file and the others map it. Errors are std::runtime_error naming the file by its kind ("counter file PATH: ...").
#include <cstddef>
#include <functional>
#include <optional>
#include <string>

namespace nbdxm {

class SharedMapping {
 public:
  // Maps the existing file at `path` whole; nullopt when there is none. A file shorter than `min_length` is refused
  // as not one of `kind`.
  static std::optional<SharedMapping> open(const std::string& path, const std::string& kind, size_t min_length,
                                           bool writable);
  // Maps the file at `path` read-write. When it exists (at least `header_length` bytes), `check` is called with its
  // mapping first (it throws to refuse a file of another layout or owner); when it does not, a file of `length`
  // bytes is created and `initialise` writes its header before it is linked into place.
  static SharedMapping open_or_create(const std::string& path, const std::string& kind, size_t header_length,
                                      size_t length, const std::function<void(const SharedMapping&)>& check,
                                      const std::function<void(SharedMapping&)>& initialise);

  SharedMapping(SharedMapping&& other) noexcept;
  SharedMapping& operator=(SharedMapping&& other) noexcept;
  SharedMapping(const SharedMapping&) = delete;
  SharedMapping& operator=(const SharedMapping&) = delete;
  ~SharedMapping();

  void* data() const noexcept { return data_; }
  size_t length() const noexcept { return length_; }

 private:
  SharedMapping(void* data, size_t length) noexcept : data_(data), length_(length) {}
  // The new file, linked into place; nullopt when another process linked its file first.
  static std::optional<SharedMapping> create(const std::string& path, const std::string& kind, size_t length,
                                             const std::function<void(SharedMapping&)>& initialise);

  void* data_ = nullptr;
  size_t length_ = 0;
};

}  // namespace nbdxm
