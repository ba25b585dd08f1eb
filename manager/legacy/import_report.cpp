#include "import_report.hpp"

#include "nbdxm/printable.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace nbdxm::legacy {

const char* outcome_name(Outcome outcome) {
  switch (outcome) {
    case Outcome::imported:
      return "imported";
    case Outcome::repaired:
      return "repaired";
    case Outcome::rejected:
      return "rejected";
  }
  return "?";
}

void ImportReport::add(const RowOutcome& row, bool already_in_store) {
  auto it = std::find_if(tables.begin(), tables.end(), [&](const TableCounts& t) { return t.table == row.table; });
  if (it == tables.end()) {
    tables.push_back(TableCounts{row.table, 0, 0, 0, 0, 0});
    it = tables.end() - 1;
  }
  ++it->source_rows;
  switch (row.outcome) {
    case Outcome::imported:
      ++it->imported;
      break;
    case Outcome::repaired:
      ++it->repaired;
      break;
    case Outcome::rejected:
      ++it->rejected;
      break;
  }
  if (already_in_store) ++it->already_in_store;
  if (row.outcome != Outcome::imported) rows.push_back(row);
}

size_t ImportReport::rejected() const {
  size_t n = 0;
  for (const auto& t : tables) n += t.rejected;
  return n;
}

size_t ImportReport::written() const {
  size_t n = 0;
  for (const auto& t : tables) n += t.imported + t.repaired - t.already_in_store;
  return n;
}

std::string ImportReport::text() const {
  // Source ids and details quote the source's values: escaped here, exact in json().
  std::string out =
      fmt::format("import of {} into {}{}\n", printable(source), printable(store), dry_run ? " (dry run)" : "");
  out += fmt::format("{:<18} {:>7} {:>9} {:>9} {:>9} {:>17}\n", "table", "source", "imported", "repaired", "rejected",
                     "already in store");
  for (const auto& t : tables) {
    out += fmt::format("{:<18} {:>7} {:>9} {:>9} {:>9} {:>17}\n", t.table, t.source_rows, t.imported, t.repaired,
                       t.rejected, t.already_in_store);
  }
  for (const auto& r : rows) {
    out += fmt::format("{} {} {}: {}: {}\n", outcome_name(r.outcome), r.table, printable(r.source_id), r.rule,
                       printable(r.detail));
  }
  if (dry_run) {
    out += fmt::format("dry run: {} rows would be written; nothing was written\n", written());
  } else {
    out += fmt::format("{} rows written in one transaction\n", written());
  }
  return out;
}

nlohmann::ordered_json ImportReport::json() const {
  nlohmann::ordered_json doc{{"source", source}, {"store", store}, {"dry_run", dry_run}};
  doc["tables"] = nlohmann::ordered_json::object();
  for (const auto& t : tables) {
    doc["tables"][t.table] = {{"source_rows", t.source_rows},
                              {"imported", t.imported},
                              {"repaired", t.repaired},
                              {"rejected", t.rejected},
                              {"already_in_store", t.already_in_store}};
  }
  doc["rows"] = nlohmann::ordered_json::array();
  for (const auto& r : rows) {
    doc["rows"].push_back({{"table", r.table},
                           {"source_id", r.source_id},
                           {"outcome", outcome_name(r.outcome)},
                           {"rule", r.rule},
                           {"detail", r.detail}});
  }
  doc["written"] = written();
  return doc;
}

}  // namespace nbdxm::legacy
