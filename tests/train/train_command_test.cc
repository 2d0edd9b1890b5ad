// halftime-train as a user runs it: the real binary in a child process.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "engine/device.h"

namespace halftime {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class TrainCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("halftime-train-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string WriteSpec(const std::string& text) {
    const fs::path path = dir_ / "spec.yaml";
    std::ofstream(path) << text;
    return path.string();
  }

  // Runs halftime-train with `args`; returns the exit status and stderr.
  int Run(const std::vector<std::string>& args, std::string* err = nullptr) {
    std::string command = std::string(HALFTIME_TRAIN_BINARY);
    for (const auto& a : args) command += " '" + a + "'";
    command += " 2>" + (dir_ / "stderr.txt").string();
    int status = std::system(command.c_str());
    if (err != nullptr) *err = Stderr();
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  // What the last halftime-train run here wrote to stderr.
  std::string Stderr() {
    std::ifstream in(dir_ / "stderr.txt");
    std::stringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
  }

  std::vector<nlohmann::json> ReadJsonl(const fs::path& path) {
    std::vector<nlohmann::json> lines;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
      lines.push_back(nlohmann::json::parse(line));
    }
    return lines;
  }

  // A trainer as halftime-worker starts it: events on fd 3, acknowledgements
  // read from fd 4, stderr to stderr.txt. Returns its pid; `*events` is the
  // read end of its events, `*acks` our end of the acknowledgement socket.
  pid_t StartSupervised(const std::string& spec, int* events, int* acks) {
    int event_pipe[2], ack_socket[2];
    if (pipe(event_pipe) != 0 ||
        socketpair(AF_UNIX, SOCK_STREAM, 0, ack_socket) != 0) {
      ADD_FAILURE() << "pipe/socketpair: " << std::strerror(errno);
      return -1;
    }
    const std::string out = (dir_ / "out").string();
    const std::string stderr_path = (dir_ / "stderr.txt").string();
    const pid_t pid = fork();
    if (pid == 0) {
      close(event_pipe[0]);
      close(ack_socket[0]);
      dup2(event_pipe[1], 3);
      dup2(ack_socket[1], 4);
      if (freopen(stderr_path.c_str(), "w", stderr) == nullptr) _exit(126);
      execl(HALFTIME_TRAIN_BINARY, HALFTIME_TRAIN_BINARY, spec.c_str(), "--out",
            out.c_str(), "--threads", "1", "--quiet", "--events-fd", "3",
            "--acks-fd", "4", nullptr);
      _exit(127);
    }
    close(event_pipe[1]);
    close(ack_socket[1]);
    *events = event_pipe[0];
    *acks = ack_socket[0];
    return pid;
  }

  fs::path dir_;
};

constexpr char kTinySpec[] = R"(name: tiny
model: {builtin: gpt-nano}
data: {kind: synthetic, seq_len: 32, vocab_size: 64}
precision: bf16-mixed
resources: {emulation: allow}
batch_size: 4
steps: 6
eval: {every_steps: 3, batches: 1}
checkpoint: {every_steps: 3}
)";

TEST_F(TrainCommandTest, WritesOneJsonObjectPerStepWithTheDesignFields) {
  const std::string jsonl = (dir_ / "m.jsonl").string();
  std::string err;
  ASSERT_EQ(Run({WriteSpec(kTinySpec), "--out", (dir_ / "out").string(),
                 "--metrics-jsonl", jsonl, "--threads", "2"},
                &err),
            0)
      << err;
  std::vector<nlohmann::json> steps = ReadJsonl(jsonl);
  ASSERT_EQ(steps.size(), 6u);
  for (int i = 0; i < 6; ++i) {
    const nlohmann::json& s = steps[i];
    EXPECT_EQ(s["step"], i + 1);
    for (const char* key : {"loss", "loss_scale", "overflow", "skipped_steps",
                            "grad_norm", "step_seconds", "samples_per_second",
                            "tokens_per_second", "peak_memory_bytes"}) {
      EXPECT_TRUE(s.contains(key)) << key;
    }
    EXPECT_EQ(s["precision"], "bf16-mixed");
  }
  EXPECT_TRUE(fs::exists(dir_ / "out" / "model.safetensors"));
  EXPECT_TRUE(fs::exists(dir_ / "out" / "summary.json"));
  EXPECT_THAT(err, HasSubstr("done: 6 steps"));
}

TEST_F(TrainCommandTest, Bf16PureTakesItsUpdateRuleFromTheSpec) {
  // Kahan (the default) keeps a bf16 compensation buffer as large as the
  // bf16 weights; stochastic rounding keeps none.
  nlohmann::json last[2];
  int i = 0;
  for (const char* update : {"kahan", "stochastic-rounding"}) {
    const std::string jsonl =
        (dir_ / (std::string(update) + ".jsonl")).string();
    std::string err;
    ASSERT_EQ(Run({WriteSpec(kTinySpec), "--set", "precision=bf16-pure",
                   "--set", std::string("optimizer.pure_update=") + update,
                   "--out", (dir_ / update).string(), "--metrics-jsonl", jsonl,
                   "--threads", "1", "--quiet"},
                  &err),
              0)
        << err;
    last[i++] = ReadJsonl(jsonl).back();
  }
  const int64_t weights = last[0]["weight_bytes"];
  EXPECT_EQ(last[1]["weight_bytes"], weights);
  EXPECT_EQ(last[0]["optimizer_state_bytes"].get<int64_t>() -
                last[1]["optimizer_state_bytes"].get<int64_t>(),
            weights);
  EXPECT_NE(last[0]["loss"], last[1]["loss"]);
}

TEST_F(TrainCommandTest, BadSpecExitsTwoNamingTheField) {
  std::string err;
  EXPECT_EQ(Run({WriteSpec(std::string(kTinySpec) + "batch_size: 0\n")}, &err),
            2);
  EXPECT_THAT(err, HasSubstr("batch_size"));
}

TEST_F(TrainCommandTest, MissingDataExitsTwoNamingThePath) {
  std::string err;
  EXPECT_EQ(Run({WriteSpec("name: t\nmodel: {builtin: gpt-nano}\n"
                           "data: {kind: text, path: /nonexistent/corpus.txt}\n"
                           "steps: 2\n"),
                 "--threads", "1"},
                &err),
            2);
  EXPECT_THAT(err, HasSubstr("/nonexistent/corpus.txt"));
}

TEST_F(TrainCommandTest, PathsOutsideTheDataRootAreRefused) {
  std::string err;
  EXPECT_EQ(Run({WriteSpec("name: t\nmodel: {builtin: gpt-nano}\n"
                           "data: {kind: text, path: ../../etc/passwd}\n"
                           "steps: 2\n"),
                 "--data-root", dir_.string()},
                &err),
            2);
  EXPECT_THAT(
      err, HasSubstr("data.path: ../../etc/passwd is outside the data root"));
}

TEST_F(TrainCommandTest, Fp16OnThisCpuFailsAtStartWithAClearReason) {
  std::string err;
  EXPECT_EQ(Run({WriteSpec(kTinySpec), "--set", "precision=fp16-mixed"}, &err),
            2);
  EXPECT_THAT(err, HasSubstr("precision fp16-mixed needs a CUDA device"));
}

TEST_F(TrainCommandTest, AnUnknownCpuCapIsBadInputNamingTheVariable) {
  setenv("HALFTIME_CPU_ISA", "avx3", 1);
  std::string err;
  const int code = Run({"--probe-device"}, &err);
  unsetenv("HALFTIME_CPU_ISA");
  EXPECT_EQ(code, 2);
  EXPECT_THAT(err, HasSubstr("HALFTIME_CPU_ISA=avx3 is not a CPU cap"));
}

TEST_F(TrainCommandTest, EmulationIsRefusedUnlessAllowedWhereTheCpuLacksBf16) {
  if (engine::CpuBf16Native()) {
    GTEST_SKIP() << "needs a CPU without native bf16 (or HALFTIME_CPU_ISA="
                    "avx2): this one runs bf16 natively, so nothing is "
                    "emulated or refused";
  }
  const std::string spec = WriteSpec(kTinySpec);
  std::string err;
  EXPECT_EQ(Run({spec, "--set", "resources.emulation=deny"}, &err), 2);
  EXPECT_THAT(err, HasSubstr("would only emulate it"));
  EXPECT_THAT(err, HasSubstr("--allow-emulation"));
  err.clear();
  EXPECT_EQ(Run({spec, "--set", "resources.emulation=deny", "--set", "steps=2",
                 "--allow-emulation", "--quiet"},
                &err),
            0)
      << err;
}

// Reads JSON lines from `fd` until one has "event" == `event`, or `timeout`
// passes (then returns null). Lines read on the way go to `seen`.
nlohmann::json NextEvent(int fd, const std::string& event,
                         std::chrono::milliseconds timeout, std::string* buffer,
                         std::vector<nlohmann::json>* seen) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    for (std::size_t nl; (nl = buffer->find('\n')) != std::string::npos;) {
      nlohmann::json line = nlohmann::json::parse(buffer->substr(0, nl));
      buffer->erase(0, nl + 1);
      seen->push_back(line);
      if (line.value("event", "") == event) return line;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return nullptr;
    pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char chunk[4096];
    const ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n <= 0) return nullptr;
    buffer->append(chunk, static_cast<std::size_t>(n));
  }
}

TEST_F(TrainCommandTest, WaitsAfterEachCheckpointUntilItIsAcknowledged) {
  int events = -1, acks = -1;
  const pid_t pid = StartSupervised(WriteSpec(kTinySpec), &events, &acks);
  ASSERT_GT(pid, 0);
  std::string buffer;
  std::vector<nlohmann::json> seen;
  using std::chrono::milliseconds;
  nlohmann::json checkpoint =
      NextEvent(events, "checkpoint", milliseconds(60000), &buffer, &seen);
  ASSERT_FALSE(checkpoint.is_null());
  EXPECT_EQ(checkpoint["step"], 3);
  // Unacknowledged, it trains no further; it says once a second that it waits.
  seen.clear();
  nlohmann::json waiting =
      NextEvent(events, "waiting", milliseconds(5000), &buffer, &seen);
  ASSERT_FALSE(waiting.is_null());
  EXPECT_EQ(waiting["for"], "checkpoint_stored");
  EXPECT_EQ(waiting["step"], 3);
  EXPECT_TRUE(
      NextEvent(events, "step", milliseconds(1500), &buffer, &seen).is_null())
      << "trained past an unacknowledged checkpoint";
  // An acknowledgement of an earlier step does not release it.
  ASSERT_EQ(write(acks, "stored 2\n", 9), 9);
  EXPECT_TRUE(
      NextEvent(events, "step", milliseconds(1500), &buffer, &seen).is_null());
  ASSERT_EQ(write(acks, "stored 3\n", 9), 9);
  nlohmann::json next =
      NextEvent(events, "step", milliseconds(60000), &buffer, &seen);
  ASSERT_FALSE(next.is_null());
  EXPECT_EQ(next["step"], 4);
  // A failed store is reported on stderr and training goes on.
  checkpoint =
      NextEvent(events, "checkpoint", milliseconds(60000), &buffer, &seen);
  ASSERT_FALSE(checkpoint.is_null());
  EXPECT_EQ(checkpoint["step"], 6);
  ASSERT_EQ(write(acks, "failed 6\n", 9), 9);
  nlohmann::json done =
      NextEvent(events, "done", milliseconds(60000), &buffer, &seen);
  ASSERT_FALSE(done.is_null());
  EXPECT_EQ(done["status"], "OK");
  int status = 0;
  waitpid(pid, &status, 0);
  close(events);
  close(acks);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_THAT(Stderr(), HasSubstr("checkpoint of step 6 was not stored"));
}

TEST_F(TrainCommandTest, SupervisorGoneEndsTheWaitForAnAcknowledgement) {
  int events = -1, acks = -1;
  const pid_t pid = StartSupervised(WriteSpec(kTinySpec), &events, &acks);
  ASSERT_GT(pid, 0);
  std::string buffer;
  std::vector<nlohmann::json> seen;
  ASSERT_FALSE(NextEvent(events, "checkpoint", std::chrono::milliseconds(60000),
                         &buffer, &seen)
                   .is_null());
  close(acks);  // the supervisor's end closes: no answer will come
  nlohmann::json done = NextEvent(
      events, "done", std::chrono::milliseconds(60000), &buffer, &seen);
  ASSERT_FALSE(done.is_null());
  EXPECT_EQ(done["status"], "OK");
  int status = 0;
  waitpid(pid, &status, 0);
  close(events);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST_F(TrainCommandTest, SigtermCheckpointsAndResumeFinishesTheJob) {
  const std::string spec = WriteSpec(
      "name: long\nmodel: {builtin: gpt-nano}\n"
      "data: {kind: synthetic, seq_len: 32, vocab_size: 64}\nprecision: fp32\n"
      "batch_size: 4\nsteps: 100000\ncheckpoint: {every_steps: 0}\n"
      "eval: {every_steps: 0, batches: 1}\n");
  const std::string out = (dir_ / "out").string();
  const std::string jsonl = (dir_ / "m.jsonl").string();
  pid_t pid = fork();
  if (pid == 0) {
    execl(HALFTIME_TRAIN_BINARY, HALFTIME_TRAIN_BINARY, spec.c_str(), "--out",
          out.c_str(), "--metrics-jsonl", jsonl.c_str(), "--threads", "1",
          "--quiet", nullptr);
    _exit(127);
  }
  // Wait for a few steps, then stop it as the worker would.
  for (int i = 0; i < 600 && ReadJsonl(jsonl).size() < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GE(ReadJsonl(jsonl).size(), 3u);
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 143);
  const int64_t stopped_at = ReadJsonl(jsonl).back()["step"];
  std::vector<fs::path> checkpoints;
  for (const auto& e : fs::directory_iterator(fs::path(out) / "checkpoints")) {
    checkpoints.push_back(e.path());
  }
  ASSERT_EQ(checkpoints.size(), 1u);

  std::string err;
  ASSERT_EQ(Run({spec, "--set", "steps=" + std::to_string(stopped_at + 2),
                 "--out", out, "--metrics-jsonl", jsonl, "--resume",
                 checkpoints[0].string(), "--threads", "1"},
                &err),
            0)
      << err;
  std::vector<nlohmann::json> all = ReadJsonl(jsonl);
  EXPECT_EQ(all.back()["step"], stopped_at + 2);
  EXPECT_EQ(all[all.size() - 2]["step"], stopped_at + 1)
      << "resumed right after";
}

}  // namespace
}  // namespace halftime
