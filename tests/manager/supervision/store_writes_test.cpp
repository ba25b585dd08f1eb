// StoreWrites against a real store: a write's `settled` runs only once the write is settled: after the commit that
// holds it, or when the store refused it; never while the store is locked (what depends on the write being on disk,
// such as removing the counter file a durability failure came from, must not run before).
#include "store_writes.hpp"

#include <gtest/gtest.h>

#include <fmt/core.h>

#include <SQLiteCpp/Database.h>
#include <chrono>
#include <stdexcept>
#include <vector>

#include "manager_harness.hpp"

namespace nbdxm::test {
namespace {

using namespace std::chrono_literals;
using supervision::StoreWrites;

class StoreWritesTest : public ManagerTest {
 protected:
  StoreWritesTest() { db_.set_busy_timeout(50ms); }
  void add(StoreWrites& writes, StoreWrites::Write write) {
    writes.add(1, "a write", std::move(write), StoreWrites::Clock::now(),
               [this](bool stored) { settled_.push_back(stored); });
  }
  static void create_table(ExportStore& store) { store.database().sql().exec("CREATE TABLE IF NOT EXISTS w (x)"); }
  std::vector<bool> settled_;
};

TEST_F(StoreWritesTest, AWriteIsSettledAfterTheCommitThatHoldsItAndNotWhileTheStoreIsLocked) {
  StoreWrites writes(store_);
  SQLite::Database other(db_path_, SQLite::OPEN_READWRITE);
  other.exec("BEGIN IMMEDIATE");
  add(writes, create_table);
  writes.retry(StoreWrites::Clock::now());
  EXPECT_TRUE(settled_.empty());
  EXPECT_TRUE(writes.waiting());
  other.exec("ROLLBACK");
  writes.flush();
  EXPECT_EQ(settled_, std::vector<bool>{true});
  EXPECT_FALSE(writes.waiting());
}

TEST_F(StoreWritesTest, ARefusedWriteIsSettledAsNotStoredAndTheOthersOfItsBatchAsStored) {
  StoreWrites writes(store_);
  add(writes, [](ExportStore&) { throw std::runtime_error("refused"); });
  add(writes, create_table);
  writes.flush();
  EXPECT_EQ(settled_, (std::vector<bool>{false, true}));
}

TEST_F(StoreWritesTest, ABatchThatSQLiteUndoesIsTriedAgainWholeAndNoWriteOfItIsSettledBeforeItIsStored) {
  create_table(store_);
  SQLite::Database& sql = store_.database().sql();
  const int pages = sql.execAndGet("PRAGMA page_count").getInt();
  sql.exec(fmt::format("PRAGMA max_page_count = {}", pages + 1));  // room for a row, not for a large one
  StoreWrites writes(store_);
  add(writes, [](ExportStore& store) { store.database().sql().exec("INSERT INTO w VALUES (1)"); });
  add(writes, [](ExportStore& store) { store.database().sql().exec("INSERT INTO w VALUES (zeroblob(1000000))"); });
  writes.flush();  // SQLITE_FULL: SQLite rolls the whole transaction back
  EXPECT_TRUE(settled_.empty());
  EXPECT_TRUE(writes.waiting());
  EXPECT_EQ(sql.execAndGet("SELECT count(*) FROM w").getInt(), 0);
  sql.exec("PRAGMA max_page_count = 1073741823");
  writes.flush();
  EXPECT_EQ(settled_, (std::vector<bool>{true, true}));
  EXPECT_EQ(sql.execAndGet("SELECT count(*) FROM w").getInt(), 2);
}

}  // namespace
}  // namespace nbdxm::test
