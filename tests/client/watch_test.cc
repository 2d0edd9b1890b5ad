// `halftime watch` and `submit --watch` against a fake scheduler: exit codes
// by outcome, resuming a broken stream, Ctrl-C, structured output.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "client/commands.h"
#include "tests/client/cli_test_util.h"

namespace halftime::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

class WatchTest : public CliServerTest {};

int Count(const std::string& text, const std::string& needle) {
  int count = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + 1)) {
    ++count;
  }
  return count;
}

bool HasControlCharacters(const std::string& text) {
  for (char c : text) {
    const unsigned char byte = static_cast<unsigned char>(c);
    if ((byte < 0x20 && c != '\n') || byte == 0x7f) return true;
  }
  return false;
}

TEST_F(WatchTest, SucceededJobExitsZeroWithTheOutcome) {
  CliRun run = Run({"watch", kSucceededJob});
  EXPECT_EQ(run.exit_code, kExitOk) << run.err;
  EXPECT_THAT(run.out, HasSubstr("queued"));
  EXPECT_THAT(run.out, HasSubstr("assigned to worker cpu-worker-1"));
  EXPECT_THAT(run.out, HasSubstr("running on worker cpu-worker-1"));
  EXPECT_THAT(run.out, HasSubstr("checkpoint stored at step 5"));
  EXPECT_THAT(run.out, HasSubstr("step 10/10  loss 3.0000  eval loss 3.5000"));
  EXPECT_THAT(run.out, HasSubstr("savings: 1.80x faster"));
  EXPECT_THAT(run.out,
              HasSubstr("job j-000003 succeeded: 10/10 steps in 4m00s, final "
                        "loss 3.0000, eval loss 3.5000\n"));
  EXPECT_FALSE(HasControlCharacters(run.out)) << run.out;
  std::lock_guard<std::mutex> lock(fake_.mutex);
  EXPECT_THAT(fake_.watch_after_sequences, ElementsAre(0));
}

TEST_F(WatchTest, FailedAndCancelledJobsExitOne) {
  CliRun failed = Run({"watch", kFailedJob});
  EXPECT_EQ(failed.exit_code, kExitFailure);
  EXPECT_THAT(failed.out,
              HasSubstr("job j-000004 failed: loss scale stuck at min_scale "
                        "for 10 steps (at step 10/10)"));
  CliRun cancelled = Run({"watch", kCancelledJob});
  EXPECT_EQ(cancelled.exit_code, kExitFailure);
  EXPECT_THAT(cancelled.out, HasSubstr("job j-000005 was cancelled"));
}

TEST_F(WatchTest, ResumesAfterTheLastEventWhenTheStreamBreaks) {
  fake_.break_watch_after = 5;
  CliRun run = Run({"watch", kSucceededJob});
  EXPECT_EQ(run.exit_code, kExitOk) << run.err;
  {
    std::lock_guard<std::mutex> lock(fake_.mutex);
    EXPECT_THAT(fake_.watch_after_sequences, ElementsAre(0, 5));
  }
  EXPECT_THAT(run.out, HasSubstr("lost the connection to the scheduler"));
  EXPECT_THAT(run.out, HasSubstr("reconnected; resuming after event 5"));
  EXPECT_EQ(Count(run.out, "assigned to worker"), 1);
  EXPECT_EQ(Count(run.out, "step 1/10 "), 1);
  EXPECT_THAT(run.out, HasSubstr("job j-000003 succeeded"));
}

TEST_F(WatchTest, JsonLinesHoldEveryEvent) {
  CliRun run = Run({"watch", kSucceededJob, "-o", "json"});
  EXPECT_EQ(run.exit_code, kExitOk) << run.err;
  std::istringstream lines(run.out);
  std::string line;
  int64_t expected_sequence = 1;
  while (std::getline(lines, line)) {
    nlohmann::json event = nlohmann::json::parse(line);
    EXPECT_EQ(event["sequence"], expected_sequence++);
    EXPECT_EQ(event["job_id"], kSucceededJob);
  }
  EXPECT_EQ(expected_sequence - 1,
            static_cast<int64_t>(fake_.events[kSucceededJob].size()));
  EXPECT_THAT(run.err, HasSubstr("job j-000003 succeeded"));
}

TEST_F(WatchTest, YamlDocumentsHoldEveryEvent) {
  CliRun run = Run({"watch", kFailedJob, "-o", "yaml"});
  EXPECT_EQ(run.exit_code, kExitFailure);
  std::vector<YAML::Node> documents = YAML::LoadAll(run.out);
  ASSERT_EQ(documents.size(), fake_.events[kFailedJob].size());
  EXPECT_EQ(documents.back()["state"].as<std::string>(), "failed");
  EXPECT_EQ(documents[4]["report"]["loss_scale"].as<double>(), 65536);
}

TEST_F(WatchTest, SubmitWatchFollowsTheNewJob) {
  fake_.submitted_job_events = MakeRunEvents("", 4, v1::JOB_STATE_SUCCEEDED);
  CliRun run = Run({"submit", Examples() + "/finetune-fp32.yaml", "--watch"});
  EXPECT_EQ(run.exit_code, kExitOk) << run.err;
  EXPECT_THAT(run.out, HasSubstr("submitted job j-000006"));
  EXPECT_THAT(run.out, HasSubstr("job j-000006 succeeded"));
  EXPECT_THAT(run.out, Not(HasSubstr("follow it")));

  fake_.submitted_job_events = MakeRunEvents("", 4, v1::JOB_STATE_FAILED);
  CliRun failed = Run(
      {"submit", Examples() + "/finetune-fp32.yaml", "--watch", "-o", "json"});
  EXPECT_EQ(failed.exit_code, kExitFailure);
  std::istringstream lines(failed.out);
  std::string first;
  std::getline(lines, first);
  EXPECT_EQ(nlohmann::json::parse(first)["job"]["id"], "j-000007");
}

TEST_F(WatchTest, CtrlCStopsWatchingNotTheJob) {
  fake_.hold_watch_open = true;
  CliRun run{};
  std::thread watcher([&] { run = Run({"watch", kRunningJob}); });
  {
    std::unique_lock<std::mutex> lock(fake_.mutex);
    ASSERT_TRUE(fake_.watch_started.wait_for(
        lock, std::chrono::seconds(10),
        [&] { return !fake_.watch_after_sequences.empty(); }));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ::kill(::getpid(), SIGINT);
  watcher.join();
  EXPECT_EQ(run.exit_code, kExitInterrupted);
  EXPECT_THAT(run.out,
              HasSubstr("stopped watching; the job keeps running: halftime "
                        "watch j-000001\n"));
  std::lock_guard<std::mutex> lock(fake_.mutex);
  EXPECT_TRUE(fake_.cancels.empty());
}

TEST(WatchGiveUpTest, GivesUpWhenTheSchedulerStaysAway) {
  // The stream breaks after two events and the scheduler never comes back:
  // the watcher gives up after give_up_after.
  FakeScheduler fake;
  fake.AddJob(MakeJob("j-000003", Examples() + "/finetune-fp32.yaml",
                      v1::JOB_STATE_RUNNING));
  fake.events["j-000003"] =
      MakeRunEvents("j-000003", 10, v1::JOB_STATE_SUCCEEDED);
  fake.break_watch_after = 2;
  auto server = std::make_unique<FakeServer>(&fake);
  const std::string address = server->address();
  auto channel =
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto stub = v1::Scheduler::NewStub(channel);
  std::ostringstream out, err;
  CommandEnv env;
  env.stub = stub.get();
  env.target = address;
  env.out = &out;
  env.err = &err;
  WatchTuning tuning;
  tuning.initial_backoff = absl::Milliseconds(50);
  tuning.max_backoff = absl::Milliseconds(100);
  tuning.give_up_after = absl::Milliseconds(500);
  std::thread stopper([&] {
    std::unique_lock<std::mutex> lock(fake.mutex);
    fake.watch_started.wait_for(lock, std::chrono::seconds(10), [&] {
      return !fake.watch_after_sequences.empty();
    });
    lock.unlock();
    server.reset();  // Shuts the scheduler down for good.
  });
  const int code = RunWatch(env, "j-000003", tuning);
  stopper.join();
  EXPECT_EQ(code, kExitFailure);
  EXPECT_THAT(out.str(), HasSubstr("lost the connection to the scheduler"));
  EXPECT_THAT(err.str(),
              HasSubstr("cannot reach scheduler at " + address + " for 500ms"));
  EXPECT_THAT(err.str(), HasSubstr("the job keeps running: halftime watch "
                                   "j-000003"));
}

}  // namespace
}  // namespace halftime::testing
