// TrainerProcess against small shell scripts standing in for the trainer:
// real fork/exec, real signals, real pipes.
#include "worker/trainer_process.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <thread>

#include "worker/worker.h"

namespace halftime {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class TrainerProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("halftime-proc-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Script(const std::string& body) {
    const fs::path path = dir_ / "fake-trainer";
    std::ofstream(path) << "#!/bin/sh\n" << body;
    fs::permissions(path, fs::perms::owner_all);
    return path.string();
  }

  struct Outcome {
    std::vector<std::string> events;
    ExitInfo exit;
  };

  Outcome RunToEnd(
      const std::string& binary,
      std::function<void(TrainerProcess*)> while_running = nullptr,
      std::chrono::milliseconds stall_timeout = std::chrono::milliseconds(0),
      std::function<void(const std::string&)> on_event = nullptr) {
    Outcome outcome;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    TrainerProcess::Options options;
    options.binary = binary;
    options.args = {"spec.json"};
    options.work_dir = dir_.string();
    options.stderr_log = (dir_ / "stderr.log").string();
    options.stderr_tail_lines = 3;
    options.stall_timeout = stall_timeout;
    options.acknowledgements = acknowledgements_;
    TrainerProcess::Callbacks callbacks;
    callbacks.on_event = [&](const std::string& line) {
      if (on_event) on_event(line);
      std::lock_guard<std::mutex> lock(mu);
      outcome.events.push_back(line);
    };
    callbacks.on_exit = [&](const ExitInfo& exit) {
      std::lock_guard<std::mutex> lock(mu);
      outcome.exit = exit;
      done = true;
      cv.notify_all();
    };
    auto process = TrainerProcess::Start(options, callbacks);
    EXPECT_TRUE(process.ok()) << process.status();
    if (!process.ok()) return outcome;
    if (while_running) while_running(process->get());
    (*process)->Wait();
    tail_ = (*process)->StderrTail();
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done; });
    return outcome;
  }

  fs::path dir_;
  std::vector<std::string> tail_;
  bool acknowledgements_ = false;
};

TEST(ToValidUtf8Test, ReplacesBadBytesAndNeverSplitsACharacter) {
  EXPECT_EQ(ToValidUtf8("plain ascii", 100), "plain ascii");
  EXPECT_EQ(ToValidUtf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", 100),
            "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
  // Binary junk, a lone continuation byte, an overlong '/', a surrogate.
  const std::string junk = std::string("a") + "\xFF" + "b" + "\x80" + "c" +
                           "\xC0\xAF" + "d" + "\xED\xA0\x80" + "e";
  const std::string bad = "\xEF\xBF\xBD";
  EXPECT_EQ(ToValidUtf8(junk, 100), "a" + bad + "b" + bad + "c" + bad + bad +
                                        "d" + bad + bad + bad + "e");
  // A cut inside the euro sign drops the whole character.
  EXPECT_EQ(ToValidUtf8("ab\xE2\x82\xAC", 4), "ab");
  // A truncated sequence at the end is replaced, not kept half.
  EXPECT_EQ(ToValidUtf8("x\xE2\x82", 100), "x\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_F(TrainerProcessTest, DeliversEventsInOrderThenTheExit) {
  Outcome o = RunToEnd(Script(
      "[ \"$1\" = spec.json ] && [ \"$2\" = --events-fd ] && [ \"$3\" = 3 ] || "
      "exit 9\n"
      "echo '{\"event\":\"step\",\"step\":1}' >&3\n"
      "echo '{\"event\":\"step\",\"step\":2}' >&3\n"
      "echo '{\"event\":\"done\"}' >&3\nexit 0\n"));
  EXPECT_THAT(o.events, ElementsAre("{\"event\":\"step\",\"step\":1}",
                                    "{\"event\":\"step\",\"step\":2}",
                                    "{\"event\":\"done\"}"));
  EXPECT_EQ(o.exit.exit_code, 0);
  EXPECT_EQ(o.exit.signal, 0);
}

TEST_F(TrainerProcessTest, AcknowledgementsReachTheChildOnFd4) {
  acknowledgements_ = true;
  absl::Status after_exit;
  Outcome o =
      RunToEnd(Script("[ \"$4\" = --acks-fd ] && [ \"$5\" = 4 ] || exit 9\n"
                      "read first <&4; read second <&4\n"
                      "echo \"{\\\"got\\\":\\\"$first,$second\\\"}\" >&3\n"
                      "exit 0\n"),
               [&](TrainerProcess* p) {
                 EXPECT_TRUE(p->Acknowledge("stored 10").ok());
                 EXPECT_TRUE(p->Acknowledge("failed 20").ok());
                 p->Wait();
                 after_exit = p->Acknowledge("stored 30");
               });
  EXPECT_EQ(o.exit.exit_code, 0);
  EXPECT_THAT(o.events, ElementsAre("{\"got\":\"stored 10,failed 20\"}"));
  EXPECT_EQ(after_exit.code(), absl::StatusCode::kUnavailable) << after_exit;
}

TEST_F(TrainerProcessTest, AcknowledgeWithoutTheSocketIsRefused) {
  absl::Status status;
  RunToEnd(Script("exit 0\n"),
           [&](TrainerProcess* p) { status = p->Acknowledge("stored 1"); });
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(TrainerProcessTest, KeepsTheLastStderrLinesAndTheExitCode) {
  Outcome o = RunToEnd(
      Script("for i in 1 2 3 4 5; do echo line$i >&2; done\nexit 2\n"));
  EXPECT_EQ(o.exit.exit_code, 2);
  EXPECT_EQ(o.exit.Describe(), "exit code 2");
  EXPECT_THAT(tail_, ElementsAre("line3", "line4", "line5"));
  std::ifstream log(dir_ / "stderr.log");
  std::string all((std::istreambuf_iterator<char>(log)), {});
  EXPECT_EQ(all, "line1\nline2\nline3\nline4\nline5\n");
}

TEST_F(TrainerProcessTest, EnvironmentIsScrubbed) {
  setenv("HALFTIME_SECRET_TOKEN", "s3cret", 1);
  Outcome o =
      RunToEnd(Script("echo \"{\\\"secret\\\":\\\"$HALFTIME_SECRET_TOKEN\\\","
                      "\\\"home\\\":\\\"$HOME\\\"}\" >&3\n"));
  unsetenv("HALFTIME_SECRET_TOKEN");
  ASSERT_EQ(o.events.size(), 1u);
  EXPECT_THAT(o.events[0], HasSubstr("\"secret\":\"\""));
  EXPECT_THAT(o.events[0], HasSubstr(dir_.string()));
}

TEST_F(TrainerProcessTest, StopSendsSigtermAndTheTrainerCanCheckpoint) {
  Outcome o = RunToEnd(
      Script("trap 'echo {\\\"event\\\":\\\"checkpoint\\\"} >&3; exit 143' "
             "TERM\necho '{\"event\":\"ready\"}' >&3\n"
             "while true; do sleep 0.05; done\n"),
      [](TrainerProcess* p) {
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        p->Stop(std::chrono::seconds(10));
      });
  EXPECT_EQ(o.exit.exit_code, 143);
  EXPECT_THAT(o.events, ElementsAre("{\"event\":\"ready\"}",
                                    "{\"event\":\"checkpoint\"}"));
}

TEST_F(TrainerProcessTest, StopEscalatesToSigkillAfterTheGrace) {
  const auto began = std::chrono::steady_clock::now();
  Outcome o =
      RunToEnd(Script("trap '' TERM\nwhile true; do sleep 0.05; done\n"),
               [](TrainerProcess* p) {
                 std::this_thread::sleep_for(std::chrono::milliseconds(200));
                 p->Stop(std::chrono::milliseconds(500));
               });
  EXPECT_EQ(o.exit.signal, SIGKILL);
  EXPECT_THAT(o.exit.Describe(), HasSubstr("killed by signal 9 (SIGKILL)"));
  EXPECT_LT(std::chrono::steady_clock::now() - began, std::chrono::seconds(5));
}

TEST_F(TrainerProcessTest, StallWatchdogKillsASilentTrainer) {
  // One step, then nothing: a hung training loop. SIGTERM is ignored, as a
  // stopped process would; the watchdog must not rely on it.
  const auto began = std::chrono::steady_clock::now();
  Outcome o = RunToEnd(Script("trap '' TERM\n"
                              "echo '{\"event\":\"step\",\"step\":1}' >&3\n"
                              "sleep 60\n"),
                       nullptr, std::chrono::milliseconds(500));
  const auto took = std::chrono::steady_clock::now() - began;
  EXPECT_EQ(o.exit.signal, SIGKILL);
  EXPECT_TRUE(o.exit.stalled);
  EXPECT_EQ(o.exit.Describe(),
            "killed by signal 9 (SIGKILL) by the stall watchdog");
  EXPECT_THAT(o.events, ElementsAre("{\"event\":\"step\",\"step\":1}"));
  EXPECT_GE(took, std::chrono::milliseconds(500));
  EXPECT_LT(took, std::chrono::seconds(10));
}

TEST_F(TrainerProcessTest, StallWatchdogKillsAStoppedTrainer) {
  Outcome o = RunToEnd(Script("kill -STOP $$\n"
                              "echo '{\"event\":\"step\",\"step\":1}' >&3\n"),
                       nullptr, std::chrono::milliseconds(300));
  EXPECT_EQ(o.exit.signal, SIGKILL);
  EXPECT_TRUE(o.exit.stalled);
  EXPECT_TRUE(o.events.empty());
}

TEST_F(TrainerProcessTest, StallWatchdogCountsFromTheLastEvent) {
  // Steps every 100 ms for 2.5 s under a 1 s timeout: never silent for
  // long enough, although the run outlasts the timeout.
  Outcome o = RunToEnd(
      Script("i=0\nwhile [ $i -lt 25 ]; do i=$((i+1)); "
             "echo \"{\\\"event\\\":\\\"step\\\",\\\"step\\\":$i}\" >&3; "
             "sleep 0.1; done\nexit 0\n"),
      nullptr, std::chrono::seconds(1));
  EXPECT_EQ(o.exit.exit_code, 0);
  EXPECT_FALSE(o.exit.stalled);
  EXPECT_EQ(o.events.size(), 25u);
}

TEST_F(TrainerProcessTest, StallWatchdogDoesNotChargeTheOwnersEventHandling) {
  // The owner takes 800 ms over an event (a checkpoint upload, say) while
  // the child waits on the full pipe or simply sends nothing more: that
  // time is the owner's, not a stall of the child.
  Outcome o = RunToEnd(
      Script("echo '{\"event\":\"checkpoint\"}' >&3\n"
             "sleep 0.1\n"
             "echo '{\"event\":\"step\",\"step\":1}' >&3\nexit 0\n"),
      nullptr, std::chrono::milliseconds(400), [](const std::string& line) {
        if (line.find("checkpoint") != std::string::npos) {
          std::this_thread::sleep_for(std::chrono::milliseconds(800));
        }
      });
  EXPECT_EQ(o.exit.exit_code, 0);
  EXPECT_FALSE(o.exit.stalled);
  EXPECT_EQ(o.events.size(), 2u);
}

TEST_F(TrainerProcessTest, StallWatchdogIsOffByDefault) {
  Outcome o = RunToEnd(Script("sleep 0.6\nexit 0\n"));
  EXPECT_EQ(o.exit.exit_code, 0);
  EXPECT_FALSE(o.exit.stalled);
}

TEST_F(TrainerProcessTest, StallReasonNamesTheTimeout) {
  ExitInfo exit;
  exit.signal = SIGKILL;
  exit.stalled = true;
  EXPECT_EQ(StallReason(std::chrono::seconds(30), exit),
            "no training step for 30s (trainer killed by signal 9 (SIGKILL) "
            "by the stall watchdog)");
  EXPECT_THAT(StallReason(std::chrono::minutes(10), exit),
              HasSubstr("no training step for 10m"));
}

TEST_F(TrainerProcessTest, MissingBinaryIsAPreconditionFailure) {
  TrainerProcess::Options options;
  options.binary = (dir_ / "nope").string();
  options.work_dir = dir_.string();
  auto process = TrainerProcess::Start(options, {});
  EXPECT_EQ(process.status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace halftime
