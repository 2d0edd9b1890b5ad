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
  // The call's own status (CANCELLED) gives way to the stall.
  const absl::Status status = watchdog.Outcome(
      absl::CancelledError("Cancelled"), "checkpoint upload", 1234);
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(status.message(),
            "checkpoint upload made no progress for 0.2 s after 1234 bytes");
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
    EXPECT_EQ(watchdog.Outcome(absl::NotFoundError("gone"), "x", 0).code(),
              absl::StatusCode::kNotFound);
  }
  // The destructor wakes the watchdog's thread instead of waiting an hour.
  EXPECT_LT(Clock::now() - began, std::chrono::seconds(2));
}

}  // namespace
}  // namespace halftime
