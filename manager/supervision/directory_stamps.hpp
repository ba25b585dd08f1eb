#pragma once
// DirectoryStamps: whether any of a set of directories changed since the last look, from a stat of each (its
// modification time, or that it does not exist): an entry made, removed or renamed there changes its time. The
// reconciler follows udev's links this way (a /dev/disk/by-id link made or moved to another node is an entry of its
// directory) without resolving every served export's device path while nothing changes.
//
// A directory's time has the granularity of the kernel's clock tick: a change in the same tick as the look before
// would leave it as it was. A time less than kRacy before the look is therefore not trusted: the directory counts as
// changed at every look until its time is older.
#include <sys/stat.h>

#include <chrono>
#include <ctime>
#include <map>
#include <optional>
#include <set>
#include <string>

namespace nbdxm::supervision {

class DirectoryStamps {
 public:
  static constexpr std::chrono::seconds kRacy{2};

  // Whether any of `dirs` differs from what the last call saw of it (a directory not seen before counts as changed),
  // or changed less than kRacy ago. Remembers what it saw of `dirs` and forgets the others.
  bool changed(const std::set<std::string>& dirs) {
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);  // the clock the file systems stamp with
    bool any = false;
    std::map<std::string, Stamp> seen;
    for (const auto& dir : dirs) {
      const Stamp stamp = stamp_of(dir);
      const auto before = seen_.find(dir);
      if (before == seen_.end() || !same(before->second, stamp) || recent(stamp, now)) any = true;
      seen.emplace(dir, stamp);
    }
    seen_ = std::move(seen);
    return any;
  }

 private:
  using Stamp = std::optional<timespec>;  // nullopt: no such directory (or it cannot be read)

  static Stamp stamp_of(const std::string& dir) {
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) return std::nullopt;
    return st.st_mtim;
  }
  static bool same(const Stamp& a, const Stamp& b) {
    if (a.has_value() != b.has_value()) return false;
    return !a || (a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec);
  }
  static bool recent(const Stamp& stamp, const timespec& now) {
    return stamp && now.tv_sec - stamp->tv_sec < kRacy.count();
  }

  std::map<std::string, Stamp> seen_;
};

}  // namespace nbdxm::supervision
