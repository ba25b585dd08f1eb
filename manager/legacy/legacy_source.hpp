#pragma once
// The previous generation's database, read-only: connects with MariaDB Connector/C, reads every table the import
// needs in one read-only transaction with a consistent snapshot (so the tables agree with each other even while the
// old services still write), and never writes. Every failure to connect or read is Error(failure) naming the source
// and the server's reason.
#include <memory>
#include <string>

#include "legacy_rows.hpp"
#include "legacy_uri.hpp"

typedef struct st_mysql MYSQL;

namespace nbdxm::legacy {

class LegacySource {
 public:
  // The password, if any, is the caller's to find (the CLI takes it from NBDXM_IMPORT_PASSWORD only).
  LegacySource(const LegacyUri& uri, const std::string& password);
  ~LegacySource();
  LegacySource(const LegacySource&) = delete;
  LegacySource& operator=(const LegacySource&) = delete;

  LegacyRows read_all();

 private:
  [[noreturn]] void fail(const std::string& what) const;
  void execute(const std::string& sql);
  template <class Row, class Read>
  std::vector<Row> select(const std::string& table, const std::string& sql, Read read);

  std::string display_;
  MYSQL* mysql_;
};

}  // namespace nbdxm::legacy
