// StoreChangeSignal on a real store in a real folder, and StoreCheckSchedule's arithmetic.
#include "nbdxm/store_change_signal.hpp"

#include <gtest/gtest.h>
#include <poll.h>

#include <fstream>

#include "nbdxm/error.hpp"
#include "store_test_support.hpp"

namespace nbdxm::test {
namespace {

using namespace std::chrono_literals;

bool readable(const StoreChangeSignal& signal) {
  struct pollfd fd {
    signal.fd(), POLLIN, 0
  };
  return ::poll(&fd, 1, 0) == 1;
}

class StoreChangeSignalTest : public StoreTest {};

TEST_F(StoreChangeSignalTest, ACommitSignalsAndDrainingClearsIt) {
  StoreChangeSignal signal(path_);
  EXPECT_FALSE(readable(signal));
  store_.add_job("job-1", "vm-1", "web01");
  ASSERT_TRUE(readable(signal));
  EXPECT_TRUE(signal.drain());
  EXPECT_FALSE(readable(signal));
  EXPECT_FALSE(signal.drain());
}

TEST_F(StoreChangeSignalTest, WritesToOtherFilesOfTheFolderAreNotTheStoresChanges) {
  StoreChangeSignal signal(path_);
  std::ofstream(dir_.file("notes.txt")) << "not the store";
  ASSERT_TRUE(readable(signal));
  EXPECT_FALSE(signal.drain());
}

TEST_F(StoreChangeSignalTest, RefusesAFolderThatDoesNotExist) {
  try {
    StoreChangeSignal signal(dir_.file("missing/state.db"));
    FAIL() << "watched a folder that does not exist";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir_.file("missing")), std::string::npos) << e.what();
  }
}

TEST_F(StoreChangeSignalTest, WhereTheStoreCannotBeWatchedTheReaderIsToldToPoll) {
  std::string told;
  EXPECT_EQ(watch_store_changes(dir_.file("missing/state.db"), 20ms, [&](const std::string& line) { told = line; }),
            nullptr);
  EXPECT_NE(told.find("checking the store every 20 ms instead"), std::string::npos) << told;
  EXPECT_NE(watch_store_changes(path_, 20ms, [&](const std::string& line) { told = "unexpected: " + line; }), nullptr);
  EXPECT_EQ(told.find("unexpected"), std::string::npos) << told;
}

TEST(StoreCheckSchedule, ChecksOftenWhileTheStoreSettlesAndSeldomWhenIdle) {
  const StoreCheckPace pace{20ms, 1000ms, 5000ms};
  const auto t0 = StoreCheckSchedule::Clock::time_point{} + 1h;
  StoreCheckSchedule schedule(pace, true, t0);
  EXPECT_EQ(schedule.next_check(t0), t0 + 20ms);  // settling from the start, not waiting on the signal
  EXPECT_FALSE(schedule.listening(t0));
  schedule.checked(t0 + 990ms);
  EXPECT_EQ(schedule.next_check(t0 + 990ms), t0 + 1010ms);
  schedule.checked(t0 + 1010ms);
  EXPECT_TRUE(schedule.listening(t0 + 1010ms));
  EXPECT_EQ(schedule.next_check(t0 + 1010ms), t0 + 6010ms);        // idle
  EXPECT_EQ(schedule.next_check(t0 + 1010ms, true), t0 + 1030ms);  // hurried

  schedule.store_written(t0 + 3000ms);  // ends the idle spell: the first check one interval later
  EXPECT_FALSE(schedule.listening(t0 + 3000ms));
  EXPECT_EQ(schedule.next_check(t0 + 3000ms), t0 + 3020ms);
  schedule.checked(t0 + 3020ms);
  schedule.store_written(t0 + 3030ms);  // while settling: the cadence stays, the spell lasts longer
  EXPECT_EQ(schedule.next_check(t0 + 3030ms), t0 + 3040ms);
  EXPECT_EQ(schedule.next_check(t0 + 4029ms), t0 + 3040ms);
  EXPECT_EQ(schedule.next_check(t0 + 4030ms), t0 + 8020ms);
  EXPECT_TRUE(schedule.listening(t0 + 4030ms));
}

TEST(StoreCheckSchedule, AnUnwatchedStoreIsCheckedOftenAllTheTime) {
  const StoreCheckPace pace{20ms, 1000ms, 5000ms};
  const auto t0 = StoreCheckSchedule::Clock::time_point{} + 1h;
  StoreCheckSchedule schedule(pace, false, t0);
  schedule.checked(t0 + 1h);
  EXPECT_EQ(schedule.next_check(t0 + 1h), t0 + 1h + 20ms);
  EXPECT_FALSE(schedule.listening(t0 + 1h));
}

}  // namespace
}  // namespace nbdxm::test
