// How the worker words the end of an attempt (worker/job_result.h).
#include "worker/job_result.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "engine/events.h"

namespace halftime {
namespace {

namespace events = engine::events;
constexpr std::chrono::milliseconds kStall = std::chrono::seconds(30);

TrainerEnd Exited(int code, const std::string& status = "",
                  const std::string& message = "") {
  TrainerEnd end;
  end.exit.exit_code = code;
  end.done_status = status;
  end.done_message = message;
  return end;
}

TEST(ResultOfRunTest, SucceedsOnlyOnACleanExitAfterAnOkDoneEvent) {
  EXPECT_EQ(ResultOfRun("j", 1, Exited(0, events::kOkStatus), kStall).outcome(),
            v1::JOB_OUTCOME_SUCCEEDED);
  // Exit 0 without the done event: the trainer did not finish its work.
  const v1::JobResult no_done = ResultOfRun("j", 1, Exited(0), kStall);
  EXPECT_EQ(no_done.outcome(), v1::JOB_OUTCOME_FAILED);
  EXPECT_EQ(no_done.reason(), "trainer exit code 0");
  EXPECT_FALSE(no_done.permanent());
}

TEST(ResultOfRunTest, ADrainReleasesAndACancelWinsOverIt) {
  TrainerEnd drained = Exited(143, "CANCELLED");
  drained.release_requested = true;
  const v1::JobResult released = ResultOfRun("j", 2, drained, kStall);
  EXPECT_EQ(released.outcome(), v1::JOB_OUTCOME_RELEASED);
  EXPECT_EQ(released.reason(), "worker is draining");
  EXPECT_EQ(released.attempt(), 2);
  drained.cancel_requested = true;
  EXPECT_EQ(ResultOfRun("j", 2, drained, kStall).outcome(),
            v1::JOB_OUTCOME_CANCELLED);
}

TEST(ResultOfRunTest, AStallIsRetryable) {
  TrainerEnd stalled;
  stalled.exit.signal = 9;
  stalled.exit.stalled = true;
  const v1::JobResult result = ResultOfRun("j", 1, stalled, kStall);
  EXPECT_EQ(result.outcome(), v1::JOB_OUTCOME_FAILED);
  EXPECT_THAT(result.reason(),
              ::testing::StartsWith("no training step for 30s"));
  EXPECT_FALSE(result.permanent());
}

TEST(ResultOfRunTest, FailuresCarryTheTrainersWordsAndBadInputIsPermanent) {
  const v1::JobResult bad = ResultOfRun(
      "j", 1, Exited(events::kExitBadInput, "INVALID_ARGUMENT", "steps: < 1"),
      kStall);
  EXPECT_EQ(bad.reason(), "steps: < 1 (trainer exit code 2)");
  EXPECT_TRUE(bad.permanent());
  // No done event: the last stderr line, without the program's prefix.
  TrainerEnd early = Exited(events::kExitFailure);
  early.stderr_tail = {"starting", "halftime-train: data.path is outside"};
  const v1::JobResult result = ResultOfRun("j", 1, early, kStall);
  EXPECT_EQ(result.reason(), "data.path is outside (trainer exit code 1)");
  EXPECT_FALSE(result.permanent());
  EXPECT_THAT(result.stderr_tail(),
              ::testing::ElementsAre("starting",
                                     "halftime-train: data.path is outside"));
}

}  // namespace
}  // namespace halftime
