// TransferWatchdog against the clock: it fires only after `stall` without
// progress, and progress keeps it from firing however long the call runs.
#include "worker/transfer_watchdog.h"

#include <gtest/gtest.h>

#include <thread>

namespace halftime {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

TEST(TransferWatchdogTest, CancelsACallWithoutProgressAfterTheStall) {
  grpc::ClientContext context;
  const Clock::time_point began = Clock::now();
  TransferWatchdog watchdog(&context, milliseconds(200));
  while (!watchdog.stalled() &&
         Clock::now() - began < std::chrono::seconds(5)) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_TRUE(watchdog.stalled());
  EXPECT_GE(Clock::now() - began, milliseconds(200));
  EXPECT_LT(Clock::now() - began, std::chrono::seconds(2));
}

TEST(TransferWatchdogTest, ProgressKeepsALongCallAlive) {
  grpc::ClientContext context;
  TransferWatchdog watchdog(&context, milliseconds(300));
  // Four times the stall in all, never more than 50 ms between chunks.
  for (int i = 0; i < 24; ++i) {
    std::this_thread::sleep_for(milliseconds(50));
    watchdog.Progress();
  }
  EXPECT_FALSE(watchdog.stalled());
  // Then the chunks stop.
  std::this_thread::sleep_for(milliseconds(700));
  EXPECT_TRUE(watchdog.stalled());
}

TEST(TransferWatchdogTest, EndsQuietlyWhenTheCallFinishesFirst) {
  grpc::ClientContext context;
  const Clock::time_point began = Clock::now();
  {
    TransferWatchdog watchdog(&context, std::chrono::hours(1));
    EXPECT_FALSE(watchdog.stalled());
  }
  // The destructor wakes the watchdog's thread instead of waiting an hour.
  EXPECT_LT(Clock::now() - began, std::chrono::seconds(2));
}

}  // namespace
}  // namespace halftime
