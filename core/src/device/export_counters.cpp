#include "nbdxm/export_counters.hpp"

#include <fmt/format.h>
#include <time.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace nbdxm {
namespace {

using Word = std::atomic<uint64_t>;
static_assert(Word::is_always_lock_free, "the counters are shared between processes through a mapping");
static_assert(sizeof(Word) == sizeof(uint64_t));

constexpr uint64_t kMagic = 0x31544e4344584d4eULL;  // "NMXDCNT1" read as little-endian bytes
constexpr size_t kCreatedAtWords = 4;               // 32 bytes: 2026-11-27T23:12:00.123Z fits
constexpr size_t kReasonWords = ExportCounters::kReasonBytes / sizeof(uint64_t);
constexpr int kRequestKinds = static_cast<int>(ExportCounters::Request::kCount);
constexpr int kRefusals = static_cast<int>(ExportCounters::Refusal::kCount);

std::string digits_of(const std::string& text) {
  std::string digits;
  for (char c : text) {
    if (c >= '0' && c <= '9') digits += c;
  }
  return digits;
}

uint64_t bitmap_bits(int64_t volume_size) {
  return (static_cast<uint64_t>(std::max<int64_t>(volume_size, 0)) + ExportCounters::kGranule - 1) /
         ExportCounters::kGranule;
}

const std::string kKind = "counter file";

}  // namespace

// Every field a word: the header is written before the file is renamed into place and never changes after.
struct ExportCounters::Layout {
  Word magic;
  Word version;
  Word export_id;
  Word volume_size;
  Word granule;
  Word bitmap_bits;
  Word created_at[kCreatedAtWords];
  Word requests[kRequestKinds];
  Word failed[kRequestKinds];
  Word bytes[kRequestKinds];
  Word connections_open;
  Word connections_total;
  Word refused[kRefusals];
  Word last_write_unix_ms;
  Word event_sequence;  // odd while an event is being written; events = sequence / 2
  Word reason[kReasonWords];
  Word reserved[16];  // room for counters of a later version that keeps this layout's offsets
  // followed by the bitmap: (bitmap_bits + 63) / 64 words
};

namespace {

size_t file_length(uint64_t bits) { return sizeof(ExportCounters::Layout) + (bits + 63) / 64 * sizeof(uint64_t); }

}  // namespace

ExportCounters::ExportCounters(SharedMapping mapping) : mapping_(std::move(mapping)) {}

ExportCounters::~ExportCounters() = default;

std::string ExportCounters::path(const std::string& dir, int64_t export_id, const std::string& created_at) {
  return fmt::format("{}/{}-{}.bin", dir, export_id, digits_of(created_at));
}

std::atomic<uint64_t>* ExportCounters::bitmap() const noexcept {
  return reinterpret_cast<Word*>(static_cast<char*>(mapping_.data()) + sizeof(Layout));
}

namespace {

const ExportCounters::Layout& layout_of(const SharedMapping& mapping) {
  return *static_cast<const ExportCounters::Layout*>(mapping.data());
}

void check_layout(const SharedMapping& mapping, const std::string& path) {
  const auto& l = layout_of(mapping);
  if (l.magic.load() != kMagic || l.version.load() != ExportCounters::kVersion ||
      file_length(l.bitmap_bits.load()) > mapping.length()) {
    throw std::runtime_error(fmt::format("{} is not a counter file of this nbdxm version; remove it", path));
  }
}

std::string created_at_of(const ExportCounters::Layout& l);

void initialise(ExportCounters::Layout& l, const ExportCounters::Identity& identity, uint64_t bits) {
  l.version.store(ExportCounters::kVersion);
  l.export_id.store(static_cast<uint64_t>(identity.export_id));
  l.volume_size.store(static_cast<uint64_t>(std::max<int64_t>(identity.volume_size, 0)));
  l.granule.store(ExportCounters::kGranule);
  l.bitmap_bits.store(bits);
  char text[kCreatedAtWords * sizeof(uint64_t)] = {};
  std::memcpy(text, identity.created_at.data(), std::min(identity.created_at.size(), sizeof text - 1));
  for (size_t i = 0; i < kCreatedAtWords; ++i) {
    uint64_t word = 0;
    std::memcpy(&word, text + i * sizeof word, sizeof word);
    l.created_at[i].store(word);
  }
  l.magic.store(kMagic);  // last: a reader that sees it sees the whole header
}

}  // namespace

std::unique_ptr<ExportCounters> ExportCounters::open_read_only(const std::string& path) {
  auto mapping = SharedMapping::open(path, kKind, sizeof(Layout), false);
  if (!mapping) return nullptr;
  check_layout(*mapping, path);
  return std::unique_ptr<ExportCounters>(new ExportCounters(std::move(*mapping)));
}

std::unique_ptr<ExportCounters> ExportCounters::open_or_create(const std::string& path, const Identity& identity) {
  const uint64_t bits = bitmap_bits(identity.volume_size);
  const auto check = [&](const SharedMapping& existing) {
    check_layout(existing, path);
    const Layout& l = layout_of(existing);
    if (static_cast<int64_t>(l.export_id.load()) != identity.export_id || created_at_of(l) != identity.created_at) {
      throw std::runtime_error(fmt::format("counter file {} belongs to another export; remove it", path));
    }
  };
  // Written complete under a temporary name, then linked into place: a reader never sees a half-written header,
  // and of two servers racing (never expected: one server per export) the second maps the first's file.
  auto mapping = SharedMapping::open_or_create(
      path, kKind, sizeof(Layout), file_length(bits), check,
      [&](SharedMapping& created) { initialise(*static_cast<Layout*>(created.data()), identity, bits); });
  return std::unique_ptr<ExportCounters>(new ExportCounters(std::move(mapping)));
}

namespace {

std::string created_at_of(const ExportCounters::Layout& l) {
  char text[kCreatedAtWords * sizeof(uint64_t) + 1] = {};
  for (size_t i = 0; i < kCreatedAtWords; ++i) {
    const uint64_t word = l.created_at[i].load(std::memory_order_relaxed);
    std::memcpy(text + i * sizeof word, &word, sizeof word);
  }
  return text;
}

int64_t unix_ms_now() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME_COARSE, &ts);  // vDSO: no system call
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

}  // namespace

void ExportCounters::request(Request kind, uint64_t bytes, uint64_t offset, bool ok) noexcept {
  Layout& l = layout();
  const auto k = static_cast<int>(kind);
  l.requests[k].fetch_add(1, std::memory_order_relaxed);
  if (!ok) {
    l.failed[k].fetch_add(1, std::memory_order_relaxed);
    return;
  }
  l.bytes[k].fetch_add(bytes, std::memory_order_relaxed);
  if (kind == Request::write || kind == Request::zero) {
    cover(offset, bytes);
    l.last_write_unix_ms.store(static_cast<uint64_t>(unix_ms_now()), std::memory_order_relaxed);
  }
}

void ExportCounters::cover(uint64_t offset, uint64_t bytes) noexcept {
  if (bytes == 0) return;
  const uint64_t bits = layout().bitmap_bits.load(std::memory_order_relaxed);
  uint64_t first = offset / kGranule;
  const uint64_t end = std::min(bits, (offset + bytes - 1) / kGranule + 1);
  Word* words = bitmap();
  while (first < end) {
    const uint64_t word = first / 64;
    const uint64_t in_word = std::min<uint64_t>(end - first, 64 - first % 64);
    const uint64_t mask = (in_word == 64 ? ~uint64_t{0} : ((uint64_t{1} << in_word) - 1)) << (first % 64);
    // Most writes land on bits already set (retries, rewrites): a load first avoids dirtying the cache line.
    if ((words[word].load(std::memory_order_relaxed) & mask) != mask) {
      words[word].fetch_or(mask, std::memory_order_relaxed);
    }
    first += in_word;
  }
}

void ExportCounters::connection_opened() noexcept {
  layout().connections_open.fetch_add(1, std::memory_order_relaxed);
  layout().connections_total.fetch_add(1, std::memory_order_relaxed);
}

void ExportCounters::connection_closed() noexcept { layout().connections_open.fetch_sub(1, std::memory_order_relaxed); }

void ExportCounters::refused(Refusal why) noexcept {
  layout().refused[static_cast<int>(why)].fetch_add(1, std::memory_order_relaxed);
}

void ExportCounters::durability_failure(std::string_view reason) noexcept {
  const std::lock_guard<std::mutex> lock(event_writer_);
  Layout& l = layout();
  char text[kReasonBytes] = {};
  std::memcpy(text, reason.data(), std::min(reason.size(), kReasonBytes - 1));
  // Odd while being written (a writer killed in the middle left it odd: the next one completes it). The words are
  // stored with release: a reader whose acquire load sees one of them also sees the odd sequence, and retries.
  const uint64_t odd = l.event_sequence.load(std::memory_order_relaxed) | 1;
  l.event_sequence.store(odd, std::memory_order_relaxed);
  for (size_t i = 0; i < kReasonWords; ++i) {
    uint64_t word = 0;
    std::memcpy(&word, text + i * sizeof word, sizeof word);
    l.reason[i].store(word, std::memory_order_release);
  }
  l.event_sequence.store(odd + 1, std::memory_order_release);  // even: complete
}

ExportCounters::Snapshot ExportCounters::snapshot() const {
  Snapshot s = counts();
  s.coverage_bytes = coverage_bytes();
  return s;
}

uint64_t ExportCounters::coverage_bytes() const {
  const Layout& l = layout();
  const uint64_t bits = l.bitmap_bits.load();
  uint64_t granules = 0;
  const Word* words = bitmap();
  for (uint64_t w = 0; w < (bits + 63) / 64; ++w) granules += std::popcount(words[w].load(std::memory_order_relaxed));
  return std::min(granules * l.granule.load(), l.volume_size.load());
}

ExportCounters::Snapshot ExportCounters::counts() const {
  const Layout& l = layout();
  Snapshot s;
  s.identity = identity();
  for (int k = 0; k < kRequestKinds; ++k) {
    s.requests[k] = {l.requests[k].load(std::memory_order_relaxed), l.failed[k].load(std::memory_order_relaxed),
                     l.bytes[k].load(std::memory_order_relaxed)};
  }
  s.connections_open = l.connections_open.load(std::memory_order_relaxed);
  s.connections_total = l.connections_total.load(std::memory_order_relaxed);
  for (int r = 0; r < kRefusals; ++r) s.refused[r] = l.refused[r].load(std::memory_order_relaxed);
  if (const uint64_t ms = l.last_write_unix_ms.load(std::memory_order_relaxed); ms != 0) {
    s.last_write_unix_ms = static_cast<int64_t>(ms);
  }
  const Durability d = durability();
  s.durability_failures = d.failures;
  s.durability_reason = d.reason;
  return s;
}

ExportCounters::Identity ExportCounters::identity() const {
  const Layout& l = layout();
  return {static_cast<int64_t>(l.export_id.load()), created_at_of(l), static_cast<int64_t>(l.volume_size.load())};
}

ExportCounters::Durability ExportCounters::durability() const {
  const Layout& l = layout();
  // The sequence lock's reader. A writer killed in the middle leaves the sequence odd until the next event: after a
  // bounded number of tries the event counts, with whatever text is there. The words are loaded with acquire, so the
  // second load of the sequence cannot be made before them (no fences: ThreadSanitizer does not model them).
  for (int tries = 0;; ++tries) {
    const uint64_t before = l.event_sequence.load(std::memory_order_acquire);
    const bool settled = tries >= 1000;
    if (before % 2 != 0 && !settled) continue;
    char text[kReasonBytes + 1] = {};
    for (size_t i = 0; i < kReasonWords; ++i) {
      const uint64_t word = l.reason[i].load(std::memory_order_acquire);
      std::memcpy(text + i * sizeof word, &word, sizeof word);
    }
    if (l.event_sequence.load(std::memory_order_relaxed) != before && !settled) continue;
    return {(before + 1) / 2, before == 0 ? "" : text};
  }
}

}  // namespace nbdxm
