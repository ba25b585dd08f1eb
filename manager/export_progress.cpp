#include "export_progress.hpp"

#include <fmt/format.h>

#include <cmath>

#include "nbdxm/printable.hpp"

namespace nbdxm::cli {
namespace {

constexpr double kMiB = 1024.0 * 1024.0;

// One decimal, as the text shows it: the JSON carries the same number.
double one_decimal(double value) { return std::round(value * 10.0) / 10.0; }

}  // namespace

std::map<int64_t, ExportCounterRecord> counters_by_export(ExportStore& store) {
  std::map<int64_t, ExportCounterRecord> all;
  for (auto& c : store.current_export_counters()) all.emplace(c.export_id, std::move(c));
  return all;
}

double write_mib_per_s(const ExportCounterRecord& counters) {
  return static_cast<double>(counters.write_rate_bytes_per_second) / kMiB;
}

const ExportCounterRecord* counters_of(const std::map<int64_t, ExportCounterRecord>& all, int64_t id) {
  const auto found = all.find(id);
  return found == all.end() ? nullptr : &found->second;
}

void add_progress(Json& row, const ExportCounterRecord* c) {
  if (c == nullptr) {
    for (const char* key : {"progress_percent", "write_mib_per_s", "last_write_at", "coverage_bytes", "bytes_written",
                            "bytes_zeroed", "connections_open"}) {
      row[key] = nullptr;
    }
    return;
  }
  row["progress_percent"] = one_decimal(c->progress_percent);
  row["write_mib_per_s"] = one_decimal(write_mib_per_s(*c));
  row["last_write_at"] = c->last_write_at ? Json(*c->last_write_at) : Json(nullptr);
  row["coverage_bytes"] = c->coverage_bytes;
  row["bytes_written"] = c->bytes_written;
  row["bytes_zeroed"] = c->bytes_zeroed;
  row["connections_open"] = c->connections_open;
}

std::vector<std::string> progress_cells(const ExportCounterRecord* c) {
  if (c == nullptr) return {"-", "-", "-"};
  return {fmt::format("{:.1f}", one_decimal(c->progress_percent)),
          fmt::format("{:.1f}", one_decimal(write_mib_per_s(*c))),
          c->last_write_at ? printable(*c->last_write_at) : "-"};
}

}  // namespace nbdxm::cli
