// The worker daemon against fakes of its edges: a scripted scheduler link,
// a checkpoint store in memory, trainers that replay event lines, and a
// clock moved by hand. Covers reconnect backoff, drains, cancels naming
// another attempt, and the fp32 probe's arithmetic and time floor.
#include "worker/worker.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_cat.h"
#include "engine/events.h"
#include "tests/testing/fake_clock.h"
#include "worker/baseline_probe.h"

namespace halftime {
namespace {

namespace fs = std::filesystem;
namespace events = engine::events;
using ::halftime::testing::FakeClock;
using std::chrono::milliseconds;
using ::testing::AllOf;
using ::testing::Ge;
using ::testing::Le;

// Polls `done` until it holds or 10 s pass.
bool WaitUntil(const std::function<bool()>& done) {
  const auto until =
      std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return done();
}

// The scheduler's side of every fake stream: what the worker wrote, what it
// is sent, and whether a connection is accepted.
struct FakeScheduler {
  std::mutex mu;
  std::condition_variable cv;
  bool accept = true;
  int64_t lease_grace_ms = 0;
  int connects = 0;
  std::vector<v1::WorkerMessage> written;
  std::deque<v1::SchedulerMessage> inbox;  // for the open stream
  bool end_stream = false;
  std::vector<milliseconds> waits;
  std::function<void()> on_wait;  // runs in WaitToReconnect, unlocked

  void Deliver(const v1::SchedulerMessage& message) {
    std::lock_guard<std::mutex> lock(mu);
    inbox.push_back(message);
    cv.notify_all();
  }
  void EndStream() {
    std::lock_guard<std::mutex> lock(mu);
    end_stream = true;
    cv.notify_all();
  }
  std::vector<v1::JobResult> Results() {
    std::lock_guard<std::mutex> lock(mu);
    std::vector<v1::JobResult> results;
    for (const auto& m : written) {
      if (m.has_result()) results.push_back(m.result());
    }
    return results;
  }
  bool Wrote(const std::function<bool(const v1::WorkerMessage&)>& match) {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& m : written) {
      if (match(m)) return true;
    }
    return false;
  }
};

class FakeStream : public SchedulerStream {
 public:
  explicit FakeStream(FakeScheduler* s) : s_(s) {
    std::lock_guard<std::mutex> lock(s_->mu);
    ++s_->connects;
    accepted_ = s_->accept;
    s_->inbox.clear();
    s_->end_stream = false;
  }
  bool Write(const v1::WorkerMessage& message) override {
    std::lock_guard<std::mutex> lock(s_->mu);
    if (!accepted_ || cancelled_ || s_->end_stream) return false;
    s_->written.push_back(message);
    if (message.has_register_()) {
      v1::SchedulerMessage reply;
      reply.mutable_registered()->set_heartbeat_interval_ms(60'000);
      reply.mutable_registered()->set_lease_grace_ms(s_->lease_grace_ms);
      s_->inbox.push_front(reply);
    }
    s_->cv.notify_all();
    return true;
  }
  bool Read(v1::SchedulerMessage* message) override {
    std::unique_lock<std::mutex> lock(s_->mu);
    s_->cv.wait(lock, [&] {
      return !accepted_ || cancelled_ || s_->end_stream || !s_->inbox.empty();
    });
    if (!accepted_ || cancelled_ || s_->end_stream) return false;
    *message = s_->inbox.front();
    s_->inbox.pop_front();
    return true;
  }
  void Cancel() override {
    std::lock_guard<std::mutex> lock(s_->mu);
    cancelled_ = true;
    s_->cv.notify_all();
  }
  absl::Status Finish() override {
    return accepted_ ? absl::OkStatus()
                     : absl::UnavailableError("connection refused");
  }

 private:
  FakeScheduler* const s_;
  bool accepted_ = false;
  bool cancelled_ = false;
};

class FakeLink : public SchedulerLink {
 public:
  explicit FakeLink(FakeScheduler* s) : s_(s) {}
  std::unique_ptr<SchedulerStream> Connect() override {
    return std::make_unique<FakeStream>(s_);
  }
  void WaitToReconnect(milliseconds wait, const std::atomic<bool>&) override {
    std::function<void()> hook;
    {
      std::lock_guard<std::mutex> lock(s_->mu);
      s_->waits.push_back(wait);
      hook = s_->on_wait;
    }
    if (hook) hook();
  }

 private:
  FakeScheduler* const s_;
};

struct Upload {
  CheckpointRef ref;
  std::string bytes;
};

class FakeTransfer : public CheckpointTransfer {
 public:
  absl::Status Upload(const CheckpointRef& ref,
                      const std::string& path) override {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(path);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::lock_guard<std::mutex> lock(mu_);
    uploads_.push_back({ref, bytes});
    return absl::OkStatus();
  }
  absl::StatusOr<int64_t> Download(const std::string& job_id,
                                   const std::string&) override {
    return absl::DataLossError(absl::StrCat("no checkpoint of ", job_id));
  }
  void CancelAll() override {}
  std::vector<struct Upload> uploads() {
    std::lock_guard<std::mutex> lock(mu_);
    return uploads_;
  }

 private:
  std::mutex mu_;
  std::vector<struct Upload> uploads_;
};

// What a fake trainer was asked and did, kept after the worker drops it.
struct TrainerLog {
  std::mutex mu;
  TrainerRunOptions options;
  int stops = 0;
  bool killed = false;
  int steps_emitted = 0;
  std::vector<std::string> acks;

  bool IsProbe() {
    std::lock_guard<std::mutex> lock(mu);
    return std::find(options.args.begin(), options.args.end(),
                     "precision=fp32") != options.args.end();
  }
};

// A trainer whose run is a script on its own thread; its callbacks come
// from there, as a TrainerProcess's do from its reader thread.
class FakeTrainer : public TrainerRun {
 public:
  using Script = std::function<ExitInfo(FakeTrainer&)>;

  FakeTrainer(std::shared_ptr<TrainerLog> log, TrainerRunCallbacks callbacks,
              Script script)
      : log_(std::move(log)), callbacks_(std::move(callbacks)) {
    thread_ = std::thread([this, script] {
      ExitInfo exit = script(*this);
      if (killed()) exit = ExitInfo{-1, 9, false};
      callbacks_.on_exit(exit);
      std::lock_guard<std::mutex> lock(log_->mu);
      exited_ = true;
      cv_.notify_all();
    });
  }
  ~FakeTrainer() override {
    Kill();
    thread_.join();
  }
  void Stop(milliseconds) override {
    std::lock_guard<std::mutex> lock(log_->mu);
    ++log_->stops;
    cv_.notify_all();
  }
  void Kill() override {
    std::lock_guard<std::mutex> lock(log_->mu);
    log_->killed = true;
    cv_.notify_all();
  }
  void Wait() override {
    std::unique_lock<std::mutex> lock(log_->mu);
    cv_.wait(lock, [&] { return exited_; });
  }
  absl::Status Acknowledge(const std::string& line) override {
    std::lock_guard<std::mutex> lock(log_->mu);
    log_->acks.push_back(line);
    cv_.notify_all();
    return absl::OkStatus();
  }
  std::vector<std::string> StderrTail() const override {
    return {"halftime-train: the fake trainer's last words"};
  }

  // Script helpers. Emit is false once the trainer was killed.
  bool Emit(const nlohmann::json& event) {
    if (killed()) return false;
    callbacks_.on_event(event.dump());
    return !killed();
  }
  bool EmitStep(int step, double seconds, double tokens_per_second) {
    {
      std::lock_guard<std::mutex> lock(log_->mu);
      ++log_->steps_emitted;
    }
    return Emit({{events::kKind, events::kStep},
                 {events::kStepNumber, step},
                 {events::kStepSeconds, seconds},
                 {events::kTokensPerSecond, tokens_per_second},
                 {events::kPeakMemoryBytes, 1 << 20}});
  }
  // Blocks until Stop() (true) or Kill() (false).
  bool WaitForStop() {
    std::unique_lock<std::mutex> lock(log_->mu);
    cv_.wait(lock, [&] { return log_->stops > 0 || log_->killed; });
    return !log_->killed;
  }
  // Blocks until `line` is acknowledged (true) or Kill() (false).
  bool WaitForAck(const std::string& line) {
    std::unique_lock<std::mutex> lock(log_->mu);
    cv_.wait(lock, [&] {
      return log_->killed || std::find(log_->acks.begin(), log_->acks.end(),
                                       line) != log_->acks.end();
    });
    return !log_->killed;
  }
  bool killed() {
    std::lock_guard<std::mutex> lock(log_->mu);
    return log_->killed;
  }
  const TrainerRunOptions& options() { return log_->options; }

 private:
  std::shared_ptr<TrainerLog> log_;
  TrainerRunCallbacks callbacks_;
  std::condition_variable cv_;
  bool exited_ = false;
  std::thread thread_;
};

// Starts FakeTrainers: probes (precision=fp32 in the args) run
// `probe_script`, jobs `job_script`.
class FakeLauncher : public TrainerLauncher {
 public:
  FakeTrainer::Script probe_script;
  FakeTrainer::Script job_script;

  absl::StatusOr<std::unique_ptr<TrainerRun>> Start(
      const TrainerRunOptions& options,
      TrainerRunCallbacks callbacks) override {
    auto log = std::make_shared<TrainerLog>();
    log->options = options;
    const bool probe = log->IsProbe();
    {
      std::lock_guard<std::mutex> lock(mu_);
      (probe ? probes_ : jobs_).push_back(log);
    }
    return std::unique_ptr<TrainerRun>(std::make_unique<FakeTrainer>(
        log, std::move(callbacks), probe ? probe_script : job_script));
  }
  std::vector<std::shared_ptr<TrainerLog>> jobs() {
    std::lock_guard<std::mutex> lock(mu_);
    return jobs_;
  }
  std::vector<std::shared_ptr<TrainerLog>> probes() {
    std::lock_guard<std::mutex> lock(mu_);
    return probes_;
  }

 private:
  std::mutex mu_;
  std::vector<std::shared_ptr<TrainerLog>> jobs_, probes_;
};

// Runs until stopped or killed; emits one step first.
ExitInfo RunUntilStopped(FakeTrainer& t) {
  t.EmitStep(1, 0.1, 1000);
  t.WaitForStop();
  return ExitInfo{128 + 15, 0, false};
}

class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/halftime-worker-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    launcher_->job_script = RunUntilStopped;
    launcher_->probe_script = [](FakeTrainer&) {
      return ExitInfo{0, 0, false};
    };
  }
  void TearDown() override {
    if (worker_) worker_->Shutdown();
    if (runner_.joinable()) runner_.join();
    worker_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  WorkerOptions Options() {
    WorkerOptions options;
    options.name = "w1";
    options.trainer_binary = "/nonexistent/halftime-train";
    options.work_dir = dir_ + "/work";
    options.out_root = dir_ + "/out";
    options.capabilities.set_slots(1);
    options.capabilities.set_threads_per_job(1);
    options.capabilities.set_device_name("fake cpu");
    options.min_backoff = milliseconds(100);
    options.max_backoff = milliseconds(800);
    options.stop_grace = milliseconds(1000);
    options.probe_min_steady_time = milliseconds(300);
    return options;
  }

  void StartWorker(WorkerOptions options) {
    WorkerEdges edges;
    edges.link = std::make_unique<FakeLink>(&scheduler_);
    edges.transfer = std::unique_ptr<CheckpointTransfer>(transfer_);
    edges.launcher = std::unique_ptr<TrainerLauncher>(launcher_);
    edges.clock = &clock_;
    auto worker = Worker::Create(std::move(options), std::move(edges), nullptr);
    ASSERT_TRUE(worker.ok()) << worker.status();
    worker_ = std::move(*worker);
    runner_ = std::thread([this] {
      worker_->Run();
      run_ended_ = true;
    });
  }

  bool Registered() {
    return WaitUntil([&] {
      return scheduler_.Wrote(
          [](const v1::WorkerMessage& m) { return m.has_register_(); });
    });
  }

  static v1::SchedulerMessage Assign(const std::string& job, int attempt,
                                     v1::Precision precision) {
    v1::SchedulerMessage m;
    v1::Assignment* a = m.mutable_assignment();
    a->set_job_id(job);
    a->set_attempt(attempt);
    a->mutable_spec()->set_name(job);
    a->mutable_spec()->set_precision(precision);
    a->mutable_spec()->mutable_savings()->set_baseline(v1::BASELINE_MODE_PROBE);
    a->mutable_spec()->mutable_savings()->set_probe_steps(3);
    return m;
  }
  static v1::SchedulerMessage Cancel(const std::string& job, int attempt) {
    v1::SchedulerMessage m;
    m.mutable_cancel()->set_job_id(job);
    m.mutable_cancel()->set_attempt(attempt);
    m.mutable_cancel()->set_reason("user asked");
    return m;
  }
  // The result of `job`'s `attempt`, once sent.
  std::optional<v1::JobResult> ResultOf(const std::string& job, int attempt) {
    std::optional<v1::JobResult> found;
    WaitUntil([&] {
      for (const auto& r : scheduler_.Results()) {
        if (r.job_id() == job && r.attempt() == attempt) found = r;
      }
      return found.has_value();
    });
    return found;
  }

  std::string dir_;
  FakeScheduler scheduler_;
  FakeClock clock_;
  // Owned by the worker once it starts; these pointers stay valid until
  // worker_ is destroyed.
  FakeTransfer* transfer_ = new FakeTransfer;
  FakeLauncher* launcher_ = new FakeLauncher;
  std::unique_ptr<Worker> worker_;
  std::thread runner_;
  std::atomic<bool> run_ended_{false};
};

TEST(ReconnectBackoffTest, DoublesWithJitterUpToTheCap) {
  ReconnectBackoff backoff(milliseconds(100), milliseconds(800), 7);
  const int64_t bounds[] = {100, 200, 400, 800, 800, 800};
  for (int64_t bound : bounds) {
    const auto wait = backoff.Next(absl::Seconds(1), false, milliseconds(0));
    EXPECT_THAT(wait.count(), AllOf(Ge(bound / 2), Le(bound)));
  }
}

TEST(ReconnectBackoffTest, ALongConnectionStartsAfresh) {
  ReconnectBackoff backoff(milliseconds(100), milliseconds(800), 7);
  for (int i = 0; i < 5; ++i) backoff.Next(absl::Seconds(1), false, {});
  EXPECT_THAT(backoff.Next(absl::Seconds(11), false, {}).count(),
              AllOf(Ge(50), Le(100)));
}

TEST(ReconnectBackoffTest, BusyWorkersRetryWithinAQuarterOfTheLeaseGrace) {
  ReconnectBackoff backoff(milliseconds(100), milliseconds(10'000), 7);
  for (int i = 0; i < 8; ++i) backoff.Next(absl::Seconds(1), false, {});
  // Idle: the backoff has grown to its cap.
  EXPECT_GE(backoff.Next(absl::Seconds(1), false, milliseconds(2000)).count(),
            5000);
  // Jobs running and a 2 s grace: at most 500 ms.
  EXPECT_LE(backoff.Next(absl::Seconds(1), true, milliseconds(2000)).count(),
            500);
}

TEST_F(WorkerTest, ReconnectsWithGrowingBackoffWhileTheSchedulerRefuses) {
  scheduler_.accept = false;
  scheduler_.on_wait = [this] {
    std::lock_guard<std::mutex> lock(scheduler_.mu);
    if (scheduler_.waits.size() == 5) worker_->Shutdown();
  };
  StartWorker(Options());
  ASSERT_TRUE(WaitUntil([&] { return run_ended_.load(); }));
  std::lock_guard<std::mutex> lock(scheduler_.mu);
  EXPECT_EQ(scheduler_.connects, 5);
  const int64_t bounds[] = {100, 200, 400, 800, 800};
  ASSERT_EQ(scheduler_.waits.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_THAT(scheduler_.waits[i].count(),
                AllOf(Ge(bounds[i] / 2), Le(bounds[i])))
        << "wait " << i;
  }
}

TEST_F(WorkerTest, AConnectionThatLastedResetsTheBackoff) {
  scheduler_.accept = false;
  scheduler_.on_wait = [this] {
    std::lock_guard<std::mutex> lock(scheduler_.mu);
    // Three refusals grow the backoff; then the scheduler is back.
    if (scheduler_.waits.size() == 3) scheduler_.accept = true;
    if (scheduler_.waits.size() == 4) worker_->Shutdown();
  };
  StartWorker(Options());
  ASSERT_TRUE(Registered());
  clock_.Advance(absl::Seconds(11));
  scheduler_.EndStream();
  ASSERT_TRUE(WaitUntil([&] { return run_ended_.load(); }));
  std::lock_guard<std::mutex> lock(scheduler_.mu);
  ASSERT_EQ(scheduler_.waits.size(), 4u);
  EXPECT_GE(scheduler_.waits[2].count(), 200);  // grown
  EXPECT_LE(scheduler_.waits[3].count(), 100);  // afresh
}

TEST_F(WorkerTest, ReRegistersAfterTheStreamEndsAndServesTheNewOne) {
  StartWorker(Options());
  ASSERT_TRUE(Registered());
  scheduler_.EndStream();
  ASSERT_TRUE(WaitUntil([&] {
    std::lock_guard<std::mutex> lock(scheduler_.mu);
    return scheduler_.connects == 2;
  }));
  scheduler_.Deliver(Cancel("j-unknown", 3));
  const auto result = ResultOf("j-unknown", 3);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->outcome(), v1::JOB_OUTCOME_CANCELLED);
  EXPECT_EQ(result->reason(), "not running on this worker");
}

TEST_F(WorkerTest, ACancelForAnotherAttemptIsIgnored) {
  StartWorker(Options());
  ASSERT_TRUE(Registered());
  v1::SchedulerMessage assign = Assign("j1", 2, v1::PRECISION_FP32);
  scheduler_.Deliver(assign);
  ASSERT_TRUE(WaitUntil([&] { return launcher_->jobs().size() == 1; }));
  ASSERT_TRUE(WaitUntil([&] {
    return scheduler_.Wrote(
        [](const v1::WorkerMessage& m) { return m.has_started(); });
  }));

  scheduler_.Deliver(Cancel("j1", 1));
  const auto stale = ResultOf("j1", 1);
  ASSERT_TRUE(stale.has_value());
  EXPECT_EQ(stale->outcome(), v1::JOB_OUTCOME_CANCELLED);
  EXPECT_EQ(stale->reason(), "not running on this worker");
  auto trainer = launcher_->jobs()[0];
  {
    std::lock_guard<std::mutex> lock(trainer->mu);
    EXPECT_EQ(trainer->stops, 0);
    EXPECT_FALSE(trainer->killed);
  }

  scheduler_.Deliver(Cancel("j1", 2));
  const auto cancelled = ResultOf("j1", 2);
  ASSERT_TRUE(cancelled.has_value());
  EXPECT_EQ(cancelled->outcome(), v1::JOB_OUTCOME_CANCELLED);
  EXPECT_EQ(cancelled->reason(), "cancelled");
  std::lock_guard<std::mutex> lock(trainer->mu);
  EXPECT_EQ(trainer->stops, 1);
}

TEST_F(WorkerTest, DrainCheckpointsUploadsAndHandsTheJobBack) {
  launcher_->job_script = [](FakeTrainer& t) {
    t.EmitStep(1, 0.1, 1000);
    if (!t.WaitForStop()) return ExitInfo{};
    // SIGTERM: write a checkpoint, wait until it is stored, exit.
    const std::string path = t.options().work_dir + "/step-7.ckpt";
    std::ofstream(path) << "weights of step 7";
    t.Emit({{events::kKind, events::kCheckpoint},
            {events::kStepNumber, 7},
            {events::kPath, path}});
    t.WaitForAck("stored 7");
    t.Emit({{events::kKind, events::kDone},
            {events::kStatus, "CANCELLED"},
            {events::kMessage, "stopped by SIGTERM"}});
    return ExitInfo{128 + 15, 0, false};
  };
  StartWorker(Options());
  ASSERT_TRUE(Registered());
  scheduler_.Deliver(Assign("j1", 1, v1::PRECISION_FP32));
  ASSERT_TRUE(WaitUntil([&] {
    return scheduler_.Wrote(
        [](const v1::WorkerMessage& m) { return m.has_started(); });
  }));

  worker_->Drain();
  const auto result = ResultOf("j1", 1);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->outcome(), v1::JOB_OUTCOME_RELEASED);
  EXPECT_EQ(result->reason(), "worker is draining");
  // The checkpoint was stored before the result was sent, and
  // acknowledged to the trainer.
  const auto uploads = transfer_->uploads();
  ASSERT_EQ(uploads.size(), 1u);
  EXPECT_EQ(uploads[0].ref.job_id, "j1");
  EXPECT_EQ(uploads[0].ref.attempt, 1);
  EXPECT_EQ(uploads[0].ref.step, 7);
  EXPECT_EQ(uploads[0].bytes, "weights of step 7");
  EXPECT_TRUE(scheduler_.Wrote([](const v1::WorkerMessage& m) {
    return m.has_heartbeat() && m.heartbeat().draining();
  }));
  // Every job handed back: Run() ends by itself.
  EXPECT_TRUE(WaitUntil([&] { return run_ended_.load(); }));
  // And a drained worker takes no new work.
}

TEST_F(WorkerTest, ADrainingWorkerRefusesNewAssignments) {
  // A trainer slow to checkpoint keeps the drain under way.
  launcher_->job_script = [](FakeTrainer& t) {
    t.EmitStep(1, 0.1, 1000);
    while (!t.killed()) std::this_thread::sleep_for(milliseconds(5));
    return ExitInfo{};
  };
  StartWorker(Options());
  ASSERT_TRUE(Registered());
  scheduler_.Deliver(Assign("j1", 1, v1::PRECISION_FP32));
  ASSERT_TRUE(WaitUntil([&] { return launcher_->jobs().size() == 1; }));
  worker_->Drain();
  scheduler_.Deliver(Assign("j2", 1, v1::PRECISION_FP32));
  const auto refused = ResultOf("j2", 1);
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->outcome(), v1::JOB_OUTCOME_RELEASED);
  EXPECT_EQ(refused->reason(), "worker is draining");
  EXPECT_EQ(launcher_->jobs().size(), 1u);
}

TEST_F(WorkerTest, SavingsAreMeasuredAgainstTheProbesSteadySteps) {
  // The probe: a slow first step (warm-up), then 0.2 s steps until the
  // worker has measured enough and kills it.
  launcher_->probe_script = [](FakeTrainer& t) {
    if (!t.EmitStep(1, 5.0, 100)) return ExitInfo{};
    for (int step = 2; step <= 150; ++step) {
      if (!t.EmitStep(step, 0.2, 500)) return ExitInfo{};
      std::this_thread::sleep_for(milliseconds(5));
    }
    return ExitInfo{0, 0, false};
  };
  // The job: 0.1 s steps, then done.
  launcher_->job_script = [](FakeTrainer& t) {
    t.EmitStep(1, 3.0, 100);
    for (int step = 2; step <= 8; ++step) t.EmitStep(step, 0.1, 1000);
    t.Emit({{events::kKind, events::kDone}, {events::kStatus, "OK"}});
    return ExitInfo{0, 0, false};
  };
  StartWorker(Options());
  ASSERT_TRUE(Registered());
  scheduler_.Deliver(Assign("j1", 1, v1::PRECISION_BF16_MIXED));
  const auto result = ResultOf("j1", 1);
  ASSERT_TRUE(result.has_value());
  ASSERT_EQ(result->outcome(), v1::JOB_OUTCOME_SUCCEEDED) << result->reason();
  ASSERT_TRUE(result->has_savings());
  const v1::Savings& savings = result->savings();
  EXPECT_DOUBLE_EQ(savings.baseline_step_seconds(), 0.2);
  EXPECT_DOUBLE_EQ(savings.step_seconds(), 0.1);
  EXPECT_EQ(savings.precision(), v1::PRECISION_BF16_MIXED);
  EXPECT_EQ(savings.device_name(), "fake cpu");
  EXPECT_FALSE(savings.baseline_degraded());
  EXPECT_DOUBLE_EQ(savings.baseline_tokens_per_second(), 500);
  EXPECT_DOUBLE_EQ(savings.tokens_per_second(), 1000);

  // The probe ran the job's spec in fp32 and was stopped once its steady
  // steps held 0.3 s (min 3 steps), well before its 150 steps.
  ASSERT_EQ(launcher_->probes().size(), 1u);
  auto probe = launcher_->probes()[0];
  std::lock_guard<std::mutex> lock(probe->mu);
  EXPECT_TRUE(probe->killed);
  EXPECT_GE(probe->steps_emitted, 3);
  EXPECT_LT(probe->steps_emitted, 150);
  EXPECT_THAT(probe->options.args,
              ::testing::IsSupersetOf(
                  {std::string("precision=fp32"), std::string("steps=150")}));
}

TEST_F(WorkerTest, AnAdapterJobsProbeTrainsTheSameAdapterOnAnFp32Base) {
  launcher_->probe_script = [](FakeTrainer& t) {
    for (int step = 1; step <= 150; ++step) {
      if (!t.EmitStep(step, 0.2, 500)) return ExitInfo{};
      std::this_thread::sleep_for(milliseconds(5));
    }
    return ExitInfo{0, 0, false};
  };
  launcher_->job_script = [](FakeTrainer& t) {
    for (int step = 1; step <= 6; ++step) t.EmitStep(step, 0.25, 400);
    t.Emit({{events::kKind, events::kDone}, {events::kStatus, "OK"}});
    return ExitInfo{0, 0, false};
  };
  StartWorker(Options());
  ASSERT_TRUE(Registered());
  // An fp32 LoRA job on an nf4 base still has a baseline to save against.
  v1::SchedulerMessage assign = Assign("j1", 1, v1::PRECISION_FP32);
  v1::AdapterSpec* adapter =
      assign.mutable_assignment()->mutable_spec()->mutable_adapter();
  adapter->set_kind(v1::ADAPTER_KIND_LORA);
  adapter->set_base_dtype(v1::BASE_DTYPE_NF4);
  scheduler_.Deliver(assign);
  const auto result = ResultOf("j1", 1);
  ASSERT_TRUE(result.has_value());
  ASSERT_EQ(result->outcome(), v1::JOB_OUTCOME_SUCCEEDED) << result->reason();
  ASSERT_TRUE(result->has_savings());
  ASSERT_EQ(launcher_->probes().size(), 1u);
  auto probe = launcher_->probes()[0];
  std::lock_guard<std::mutex> lock(probe->mu);
  EXPECT_THAT(
      probe->options.args,
      ::testing::IsSupersetOf({std::string("precision=fp32"),
                               std::string("adapter.base_dtype=fp32")}));
}

TEST_F(WorkerTest, ACancelDuringTheProbeEndsTheAttemptBeforeItsTrainer) {
  launcher_->probe_script = [](FakeTrainer& t) {
    t.EmitStep(1, 0.2, 500);
    t.WaitForStop();  // killed by the cancel
    return ExitInfo{0, 0, false};
  };
  StartWorker(Options());
  ASSERT_TRUE(Registered());
  scheduler_.Deliver(Assign("j1", 1, v1::PRECISION_BF16_MIXED));
  ASSERT_TRUE(WaitUntil([&] { return launcher_->probes().size() == 1; }));
  scheduler_.Deliver(Cancel("j1", 1));
  const auto result = ResultOf("j1", 1);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->outcome(), v1::JOB_OUTCOME_CANCELLED);
  EXPECT_EQ(result->reason(), "cancelled before start");
  EXPECT_TRUE(launcher_->jobs().empty());
}

TEST_F(WorkerTest, ABadSpecFailsPermanentlyWithTheTrainersWords) {
  launcher_->job_script = [](FakeTrainer& t) {
    t.Emit({{events::kKind, events::kDone},
            {events::kStatus, "INVALID_ARGUMENT"},
            {events::kMessage, "data.path: no such file"}});
    return ExitInfo{events::kExitBadInput, 0, false};
  };
  StartWorker(Options());
  ASSERT_TRUE(Registered());
  scheduler_.Deliver(Assign("j1", 1, v1::PRECISION_FP32));
  const auto result = ResultOf("j1", 1);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->outcome(), v1::JOB_OUTCOME_FAILED);
  EXPECT_EQ(result->reason(), "data.path: no such file (trainer exit code 2)");
  EXPECT_TRUE(result->permanent());
  EXPECT_THAT(
      result->stderr_tail(),
      ::testing::ElementsAre("halftime-train: the fake trainer's last words"));
}

TEST_F(WorkerTest, ACorruptCheckpointAtTheSchedulerFailsPermanently) {
  StartWorker(Options());
  ASSERT_TRUE(Registered());
  v1::SchedulerMessage assign = Assign("j1", 2, v1::PRECISION_FP32);
  assign.mutable_assignment()->set_has_checkpoint(true);
  scheduler_.Deliver(assign);
  const auto result = ResultOf("j1", 2);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->outcome(), v1::JOB_OUTCOME_FAILED);
  EXPECT_THAT(result->reason(),
              ::testing::HasSubstr("not resuming from a corrupt checkpoint"));
  EXPECT_TRUE(result->permanent());
  EXPECT_TRUE(launcher_->jobs().empty());
}

TEST(BaselineProbeTest, FastStepsAreMeasuredForTheMinimumSteadyTime) {
  // 10 ms steps: three steady steps would be 30 ms of measurement; the
  // probe keeps going until its steady steps hold 300 ms.
  FakeClock clock;
  FakeLauncher launcher;
  launcher.probe_script = [&clock](FakeTrainer& t) {
    for (int step = 1; step <= 150; ++step) {
      clock.Advance(absl::Milliseconds(10));
      if (!t.EmitStep(step, 0.01, 3200)) return ExitInfo{};
      std::this_thread::sleep_for(milliseconds(2));
    }
    return ExitInfo{0, 0, false};
  };
  ProbeOptions options;
  options.trainer_binary = "/nonexistent/halftime-train";
  options.spec_path = "/nonexistent/spec.json";
  options.work_dir = "/tmp";
  options.min_steps = 3;
  options.min_steady_time = milliseconds(300);
  options.fingerprint = "fp";
  auto baseline =
      RunBaselineProbe(launcher, clock, options, [] { return false; });
  ASSERT_TRUE(baseline.ok()) << baseline.status();
  EXPECT_DOUBLE_EQ(baseline->step_seconds, 0.01);
  EXPECT_DOUBLE_EQ(baseline->tokens_per_second, 3200);
  EXPECT_EQ(baseline->fingerprint, "fp");
  auto probe = launcher.probes().at(0);
  std::lock_guard<std::mutex> lock(probe->mu);
  // 2 warm-up steps + 30 steady ones of 10 ms at the least.
  EXPECT_GE(probe->steps_emitted, 32);
  EXPECT_LT(probe->steps_emitted, 150);
  // The probe's cost is the whole run's, on the clock.
  EXPECT_NEAR(baseline->probe_seconds, 0.01 * probe->steps_emitted, 1e-9);
}

TEST(BaselineProbeTest, AProbeThatFailsGivesNoBaseline) {
  FakeClock clock;
  FakeLauncher launcher;
  launcher.probe_script = [](FakeTrainer& t) {
    t.EmitStep(1, 0.2, 100);
    return ExitInfo{events::kExitFailure, 0, false};
  };
  ProbeOptions options;
  options.work_dir = "/tmp";
  auto baseline =
      RunBaselineProbe(launcher, clock, options, [] { return false; });
  EXPECT_EQ(baseline.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(baseline.status().message(),
              ::testing::HasSubstr("fp32 probe failed (exit code 1)"));
}

}  // namespace
}  // namespace halftime
