// `nbdxm init` and opening the store, through the real binary: create, idempotent, refuse a newer store, upgrade the
// stored version-1 copy, and the one-line failures for a missing or uninitialised store.
#include <SQLiteCpp/Database.h>
#include <fstream>
#include <sstream>

#include "cli_store_support.hpp"
#include "nbdxm/schema.hpp"

namespace nbdxm::test {
namespace {

using ::testing::HasSubstr;

const std::string kLatest = std::to_string(schema::latest_version());

TEST_F(CliStoreTest, InitCreatesTheStore) {
  const CliResult result = run({"init"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "created state store " + db_ + " at schema version " + kLatest + "\n");
  EXPECT_EQ(result.err, "");
  SQLite::Database db(db_, SQLite::OPEN_READONLY);
  EXPECT_EQ(db.execAndGet("PRAGMA user_version").getInt(), schema::latest_version());
}

TEST_F(CliStoreTest, InitIsIdempotent) {
  init_store();
  add_standard_store_rows();
  const std::string before = state();
  const CliResult result = run({"init"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "state store " + db_ + " is already at schema version " + kLatest + "; nothing to do\n");
  EXPECT_EQ(before, state());
  const auto json = run_json({"init"});
  EXPECT_EQ(
      json,
      (Json{{"path", db_}, {"from_version", schema::latest_version()}, {"to_version", schema::latest_version()}}));
}

TEST_F(CliStoreTest, InitRefusesAStoreFromANewerNbdxm) {
  init_store();
  add_standard_store_rows();
  with_store([](ExportStore& store) { store.database().sql().exec("PRAGMA user_version = 99"); });
  const std::string message = refused(1, {"init"});
  EXPECT_THAT(message, HasSubstr(db_ + " has schema version 99, newer than this nbdxm"));
  // Every other command refuses it too, in the same terms.
  EXPECT_THAT(refused(1, {"job", "list"}), HasSubstr("schema version 99, newer"));
}

TEST_F(CliStoreTest, InitNeedsAnExistingDirectory) {
  db_ = dir_.file("missing/state.db");
  EXPECT_THAT(refused(1, {"init"}), HasSubstr("cannot create state store " + db_));
}

TEST_F(CliStoreTest, InitUpgradesTheStoredVersion1Copy) {
  {
    std::ifstream in(NBDXM_STORE_V1_SQL);
    std::stringstream sql;
    sql << in.rdbuf();
    SQLite::Database load(db_, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    load.exec(sql.str());
  }
  if (schema::latest_version() > 1) {
    EXPECT_THAT(refused(1, {"job", "list"}), HasSubstr("upgrade it with `nbdxm --db " + db_ + " init`"));
  }
  const CliResult result = run({"init"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, schema::latest_version() == 1
                            ? "state store " + db_ + " is already at schema version 1; nothing to do\n"
                            : "upgraded state store " + db_ + " from schema version 1 to " + kLatest + "\n");
  const auto jobs = run_json({"job", "list"});
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs[0]["id"], "job-20250821-web01");
  EXPECT_EQ(jobs[0]["status"], "replicating");
  EXPECT_EQ(run_json({"disk", "list"}).size(), 3u);
  EXPECT_EQ(run_json({"mapping", "list"}).size(), 3u);
}

TEST_F(CliStoreTest, CommandsNameAMissingStoreAndTheFix) {
  EXPECT_EQ(refused(1, {"job", "list"}),
            fmt::format("nbdxm: state store {} does not exist; create it with `nbdxm --db {} init`", db_, db_));
}

TEST_F(CliStoreTest, CommandsRefuseAnUninitialisedStore) {
  { SQLite::Database empty(db_, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE); }
  EXPECT_EQ(refused(1, {"mapping", "list"}),
            fmt::format("nbdxm: state store {} is not initialised; run `nbdxm --db {} init`", db_, db_));
}

TEST_F(CliStoreTest, TheStoreCanComeFromTheEnvironment) {
  const CliResult created = run({"init"}, {"NBDXM_DB=" + db_}, false);
  EXPECT_EQ(created.exit_code, 0) << created.err;
  EXPECT_THAT(created.out, HasSubstr("created state store " + db_));
  const CliResult listed = run({"job", "list"}, {"NBDXM_DB=" + db_}, false);
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
}

}  // namespace
}  // namespace nbdxm::test
