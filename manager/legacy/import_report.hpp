#pragma once
// What `nbdxm import legacy` did with every source row: counts per table and outcome, and one entry per repaired or
// rejected row. The counts of a table add up to its source rows. Printed as text or as one JSON document.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace nbdxm::legacy {

enum class Outcome { imported, repaired, rejected };

struct RowOutcome {
  std::string table;
  std::string source_id;
  Outcome outcome = Outcome::imported;
  std::string rule;    // repaired: the repairs' rules, comma-separated; rejected: the rule the row breaks
  std::string detail;  // repaired: "field: from -> to (why)" per change, "; "-separated; rejected: why
};

struct TableCounts {
  std::string table;
  size_t source_rows = 0;
  size_t imported = 0;
  size_t repaired = 0;
  size_t rejected = 0;
  size_t already_in_store = 0;  // imported or repaired rows the store already held as they are: not written again
};

struct ImportReport {
  std::string source;
  std::string store;
  bool dry_run = false;
  std::vector<TableCounts> tables;  // in the order the import writes them
  std::vector<RowOutcome> rows;     // repaired and rejected rows, by table then source order

  void add(const RowOutcome& row, bool already_in_store);
  size_t rejected() const;
  size_t written() const;  // rows this import writes (or would write, in a dry run)
  std::string text() const;
  nlohmann::ordered_json json() const;
};

const char* outcome_name(Outcome outcome);

}  // namespace nbdxm::legacy
