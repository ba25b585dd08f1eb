#pragma once
// Progress of exports as the store holds it (table export_counters, schema version 6; folded by the manager from
// its servers' counter files every second): what `nbdxm export list` and `nbdxm export watch` show. Both read only
// the store, so they work for any user who can read it. The write rate is the manager's, over the last 10 s, as of
// the row's updated_at.
#include <map>
#include <string>
#include <vector>

#include "commands.hpp"
#include "nbdxm/export_store.hpp"
#include "output.hpp"

namespace nbdxm::cli {

// The counters of every export's current life, by export id.
std::map<int64_t, ExportCounterRecord> counters_by_export(ExportStore& store);
// The counters of `id` in `all`, nullptr when its servers have counted nothing yet (no connect).
const ExportCounterRecord* counters_of(const std::map<int64_t, ExportCounterRecord>& all, int64_t id);
// The write rate in MiB/s.
double write_mib_per_s(const ExportCounterRecord& counters);
// progress_percent, write_mib_per_s, last_write_at (null without counters), and the numbers behind them:
// coverage_bytes, bytes_written, bytes_zeroed, connections_open.
void add_progress(Json& row, const ExportCounterRecord* counters);
// The text cells of progress_percent, write_mib_per_s and last_write_at ("-" without counters).
std::vector<std::string> progress_cells(const ExportCounterRecord* counters);

// `nbdxm export watch`, registered on the `export` group.
void register_export_watch(CLI::App& group, GlobalOptions& options);

}  // namespace nbdxm::cli
