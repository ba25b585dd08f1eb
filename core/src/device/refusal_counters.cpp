#include "nbdxm/refusal_counters.hpp"

#include <fmt/format.h>

#include <atomic>
#include <stdexcept>
#include <utility>

namespace nbdxm {
namespace {

using Word = std::atomic<uint64_t>;
static_assert(Word::is_always_lock_free, "the counters are shared between processes through a mapping");

constexpr uint64_t kMagic = 0x3146455244584d4eULL;  // "NMXDREF1" read as little-endian bytes
constexpr uint64_t kVersion = 1;
constexpr size_t kSlots = 32;  // room for reasons of a later version that keeps this layout's offsets
static_assert(RefusalCounters::kReasons <= kSlots);

const std::string kKind = "refusal counter file";

}  // namespace

// The header is written before the file is linked into place and never changes after.
struct RefusalCounters::Layout {
  Word magic;
  Word version;
  Word refused[kSlots];  // by Reason
};

namespace {

RefusalCounters::Layout& layout_of(const SharedMapping& mapping) {
  return *static_cast<RefusalCounters::Layout*>(mapping.data());
}

void check_layout(const SharedMapping& mapping, const std::string& path) {
  const auto& l = layout_of(mapping);
  if (l.magic.load() != kMagic || l.version.load() != kVersion) {
    throw std::runtime_error(fmt::format("{} is not a refusal counter file of this nbdxm version; remove it", path));
  }
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

RefusalCounters::RefusalCounters(SharedMapping mapping) : mapping_(std::move(mapping)) {}

RefusalCounters::~RefusalCounters() = default;

std::unique_ptr<RefusalCounters> RefusalCounters::open_read_only(const std::string& path) {
  auto mapping = SharedMapping::open(path, kKind, sizeof(Layout), false);
  if (!mapping) return nullptr;
  check_layout(*mapping, path);
  return std::unique_ptr<RefusalCounters>(new RefusalCounters(std::move(*mapping)));
}

std::unique_ptr<RefusalCounters> RefusalCounters::open_or_create(const std::string& path) {
  auto mapping = SharedMapping::open_or_create(
      path, kKind, sizeof(Layout), sizeof(Layout), [&path](const SharedMapping& m) { check_layout(m, path); },
      [](SharedMapping& m) {
        layout_of(m).version.store(kVersion);
        layout_of(m).magic.store(kMagic);
      });
  return std::unique_ptr<RefusalCounters>(new RefusalCounters(std::move(mapping)));
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
