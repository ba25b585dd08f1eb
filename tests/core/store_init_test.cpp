// Creating, upgrading and opening the store: init is idempotent, refuses a newer store and leaves it unchanged,
// upgrades a stored copy of the first released schema keeping its rows, and every connection is configured alike.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <SQLiteCpp/Statement.h>
#include <fstream>
#include <sstream>

#include "nbdxm/error.hpp"
#include "nbdxm/schema.hpp"
#include "store_test_support.hpp"

namespace nbdxm::test {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> columns_of(SQLite::Database& db, const std::string& table) {
  std::vector<std::string> columns;
  SQLite::Statement q(db, fmt::format("SELECT name FROM pragma_table_info('{}') ORDER BY cid", table));
  while (q.executeStep()) columns.push_back(q.getColumn(0).getString());
  return columns;
}

std::vector<std::string> tables_of(SQLite::Database& db) {
  std::vector<std::string> tables;
  SQLite::Statement q(db,
                      "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                      "ORDER BY name");
  while (q.executeStep()) tables.push_back(q.getColumn(0).getString());
  return tables;
}

std::string schema_objects(SQLite::Database& db) {
  std::string text;
  SQLite::Statement q(db, "SELECT type, name, coalesce(sql, '') FROM sqlite_schema ORDER BY type, name");
  while (q.executeStep()) {
    text +=
        fmt::format("{} {}: {}\n", q.getColumn(0).getString(), q.getColumn(1).getString(), q.getColumn(2).getString());
  }
  return text;
}

// The given columns of every row of a table, in rowid order.
std::string rows_of(SQLite::Database& db, const std::string& table, const std::vector<std::string>& columns) {
  std::string select;
  for (const auto& column : columns) select += (select.empty() ? "" : " || '|' || ") + fmt::format("quote({})", column);
  std::string text;
  SQLite::Statement q(db, fmt::format("SELECT {} FROM {} ORDER BY rowid", select, table));
  while (q.executeStep()) text += q.getColumn(0).getString() + "\n";
  return text;
}

class InitTest : public ::testing::Test {
 protected:
  TempDir dir_;
  std::string path_ = dir_.file("state.db");
};

TEST_F(InitTest, CreatesTheCurrentSchema) {
  Database db = Database::create(path_);
  const auto result = db.init();
  EXPECT_EQ(result.from_version, 0);
  EXPECT_EQ(result.to_version, schema::latest_version());
  EXPECT_EQ(db.user_version(), schema::latest_version());
  db.require_current_schema();
  ExportStore store(db);
  EXPECT_THAT(store.check(), IsEmpty());
}

TEST_F(InitTest, IsIdempotent) {
  {
    Database db = Database::create(path_);
    db.init();
    ExportStore store(db);
    add_standard_rows(store, dir_);
  }
  const std::string before = dump_file(path_);
  Database db = Database::create(path_);
  const auto result = db.init();
  EXPECT_EQ(result.from_version, schema::latest_version());
  EXPECT_EQ(result.to_version, schema::latest_version());
  EXPECT_EQ(before, dump_file(path_));
}

TEST_F(InitTest, RefusesAStoreFromANewerNbdxmAndLeavesItUnchanged) {
  {
    Database db = Database::create(path_);
    db.init();
    ExportStore store(db);
    add_standard_rows(store, dir_);
    db.sql().exec("PRAGMA user_version = 99");
  }
  const std::string before = dump_file(path_);
  Database db = Database::create(path_);
  try {
    db.init();
    FAIL() << "init accepted a store of schema version 99";
  } catch (const Error& e) {
    EXPECT_NE(e.exit_code(), 0);
    EXPECT_THAT(e.what(), AllOf(HasSubstr(path_), HasSubstr("schema version 99"), HasSubstr("newer")));
  }
  EXPECT_EQ(before, dump_file(path_));
  EXPECT_THROW(db.require_current_schema(), Error);
}

TEST_F(InitTest, OtherCommandsRefuseAStoreThatIsNotCurrent) {
  Database db = Database::create(path_);
  try {
    db.require_current_schema();
    FAIL() << "an uninitialised store passed";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("init"));
  }
}

// A store written by the first released schema, kept in the tree as SQL (tests/core/data/store-v1.sql), must be
// taken as it is while version 1 is the latest, and upgraded with every row kept once a newer version exists.
TEST_F(InitTest, UpgradesTheStoredVersion1CopyKeepingItsRows) {
  {
    SQLite::Database load(path_, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    load.exec(read_text(NBDXM_STORE_V1_SQL));
  }
  Database db = Database::open(path_, Database::Access::read_write);
  ASSERT_EQ(db.user_version(), 1);

  // The stored copy really is version 1 as embedded in this binary (a guard against editing a released version).
  SQLite::Database reference(":memory:", SQLite::OPEN_READWRITE);
  reference.exec(schema::steps().at(0).sql);
  EXPECT_EQ(schema_objects(reference), schema_objects(db.sql()));

  const std::string before = dump(db.sql());
  std::vector<std::pair<std::string, std::string>> rows_before;  // table, its version-1 columns of every row
  for (const auto& table : tables_of(reference)) {
    const std::string rows = rows_of(db.sql(), table, columns_of(reference, table));
    rows_before.emplace_back(table, rows);
  }
  ASSERT_NE(rows_before.front().second, "") << "the stored copy should hold rows";

  const auto result = db.init();
  EXPECT_EQ(result.from_version, 1);
  EXPECT_EQ(result.to_version, schema::latest_version());
  EXPECT_EQ(db.user_version(), schema::latest_version());
  if (schema::latest_version() == 1) {
    EXPECT_EQ(before, dump(db.sql())) << "init changed a current store";
  }
  for (const auto& [table, rows] : rows_before) {
    EXPECT_EQ(rows, rows_of(db.sql(), table, columns_of(reference, table))) << table;
  }
  // Upgraded, it is a sound store of the current schema (its 'oma' devices are not on this machine).
  ExportStore store(db);
  for (const auto& problem : store.check()) {
    EXPECT_EQ(problem.rule, "device") << problem.message;
  }
}

TEST_F(InitTest, EveryConnectionIsConfiguredTheSameWay) {
  Database::create(path_).init();
  for (auto access : {Database::Access::read_write, Database::Access::read_only}) {
    Database db = Database::open(path_, access);
    EXPECT_EQ(db.sql().execAndGet("PRAGMA foreign_keys").getInt(), 1);
    EXPECT_EQ(db.sql().execAndGet("PRAGMA journal_mode").getString(), "wal");
    EXPECT_GE(db.sql().execAndGet("PRAGMA busy_timeout").getInt(), 5000);
    EXPECT_EQ(db.sql().execAndGet("PRAGMA synchronous").getInt(), 2);  // FULL
  }
}

}  // namespace
}  // namespace nbdxm::test
