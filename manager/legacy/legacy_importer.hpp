#pragma once
// The import's rules: decides for every source row whether it is imported as is, repaired (and how) or rejected
// (and why), against the rows the store already has, and writes what it imports in one transaction through
// ExportStore. Pure apart from the store: the rows come from LegacySource (or a test).
//
// Outcomes are decided from the source first and the store second, so that a re-run gives the same outcome: a row
// the store already holds as it would be written counts as imported (or repaired) again and is not written; a row
// whose key the store holds with other values is rejected (store_conflict) and the store's row is left alone.
#include "import_report.hpp"
#include "legacy_rows.hpp"
#include "nbdxm/export_store.hpp"

namespace nbdxm::legacy {

struct ImportPlan {
  ImportRecords records;
  ImportReport report;
};

class LegacyImporter {
 public:
  // The outcome of importing rows into the store as it is now; reads the store, writes nothing.
  static ImportPlan plan(const LegacyRows& rows, ExportStore& store);
  // Plans and, unless dry_run, writes in one transaction (planned inside it, so that the plan holds for the write).
  static ImportReport run(const LegacyRows& rows, ExportStore& store, bool dry_run);
};

}  // namespace nbdxm::legacy
