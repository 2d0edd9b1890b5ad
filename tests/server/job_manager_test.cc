#include "server/job_manager.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <future>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/baseline_fingerprint.h"
#include "server/request_checks.h"
#include "server/sqlite_store.h"
#include "tests/server/test_util.h"

namespace halftime::server {
namespace {

using testing::CpuCaps;
using testing::CudaCaps;
using testing::FakeClock;
using ::testing::HasSubstr;
using testing::RecordingSink;
using testing::Spec;

// A store that fails writes while `failing` is set, like a full disk: the
// mutation is not written and its callback gets RESOURCE_EXHAUSTED, in
// order with the others.
class FailingStore : public Store {
 public:
  explicit FailingStore(Store* inner) : inner_(inner) {}
  std::atomic<bool> failing{false};

  absl::StatusOr<StoreSnapshot> Load() override { return inner_->Load(); }
  void Apply(StoreMutation mutation, Done done) override {
    if (!failing || mutation.empty()) {
      inner_->Apply(std::move(mutation), std::move(done));
      return;
    }
    inner_->Apply(StoreMutation{}, [done = std::move(done)](absl::Status s) {
      done(s.ok()
               ? absl::ResourceExhaustedError("scheduler storage is full: test")
               : s);
    });
  }
  void DiscardQueued(const absl::Status& status) override {
    inner_->DiscardQueued(status);
  }
  absl::StatusOr<std::vector<v1::JobEvent>> ReadEvents(
      const std::string& job_id, int64_t after, int64_t limit) override {
    return inner_->ReadEvents(job_id, after, limit);
  }
  absl::StatusOr<std::vector<JobRecord>> ReadJobs(
      const JobQuery& query) override {
    return inner_->ReadJobs(query);
  }
  absl::StatusOr<std::vector<std::string>> ReadLogs(
      const std::string& job_id) override {
    return inner_->ReadLogs(job_id);
  }
  void Close() override {}

 private:
  Store* inner_;
};

class JobManagerTest : public ::testing::Test {
 protected:
  JobManagerTest() { Open(); }
  ~JobManagerTest() override { Close(); }

  void Open() {
    auto store = SqliteStore::Open(
        testing::StoreOptions(dir_.path() + "/halftime.db", false));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    metrics_ = *SchedulerMetrics::Create("");
    PriceTable prices;
    prices.by_device["Test GPU"] = 3.6;
    savings_ = std::make_unique<SavingsLedger>(prices, metrics_.get());
    files_ = *CheckpointFiles::Create(dir_.path());
    auto jobs =
        JobManager::Create(options_, store_.get(), &clock_, metrics_.get(),
                           savings_.get(), files_.get(), &logger_);
    ASSERT_TRUE(jobs.ok()) << jobs.status();
    jobs_ = *std::move(jobs);
  }

  void Close() {
    if (jobs_ != nullptr) jobs_->Shutdown();
    if (store_ != nullptr) store_->Close();
    jobs_.reset();
    store_.reset();
  }

  void Reopen() {
    Close();
    Open();
  }

  // Waits until every queued store write is durable (and its callbacks ran:
  // messages to workers are out).
  void Flush() {
    if (store_ == nullptr) return;
    std::promise<void> done;
    store_->Apply(StoreMutation{}, [&](absl::Status) { done.set_value(); });
    done.get_future().wait();
  }

  absl::StatusOr<v1::SubmitJobResponse> Submit(const v1::JobSpec& spec,
                                               const std::string& key = "") {
    v1::SubmitJobRequest request;
    *request.mutable_spec() = spec;
    request.set_idempotency_key(key);
    return SubmitRequest(request);
  }

  // As the Scheduler service submits: the request checked once, then the
  // manager.
  absl::StatusOr<v1::SubmitJobResponse> SubmitRequest(
      const v1::SubmitJobRequest& request) {
    absl::StatusOr<v1::JobSpec> spec = CheckSubmitRequest(request);
    if (!spec.ok()) return spec.status();
    std::promise<absl::StatusOr<v1::SubmitJobResponse>> done;
    jobs_->SubmitJob(*std::move(spec), request.idempotency_key(),
                     [&](absl::StatusOr<v1::SubmitJobResponse> r) {
                       done.set_value(std::move(r));
                     });
    return done.get_future().get();
  }

  std::string SubmitId(const v1::JobSpec& spec) {
    auto r = Submit(spec);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->job().id() : "";
  }

  absl::StatusOr<v1::Job> Cancel(const std::string& id) {
    std::promise<absl::StatusOr<v1::Job>> done;
    jobs_->CancelJob(id, "test",
                     [&](absl::StatusOr<v1::Job> r) { done.set_value(r); });
    return done.get_future().get();
  }

  uint64_t Register(const std::string& name, const v1::WorkerCapabilities& caps,
                    std::shared_ptr<RecordingSink> sink,
                    std::vector<v1::RunningJob> running = {}) {
    v1::RegisterWorker request;
    request.set_name(name);
    *request.mutable_capabilities() = caps;
    for (auto& r : running) *request.add_running_jobs() = r;
    sink->set_before_take([this] { Flush(); });
    auto session = jobs_->RegisterWorker(request, sink);
    EXPECT_TRUE(session.ok()) << session.status();
    return session.ok() ? *session : 0;
  }

  v1::Job Get(const std::string& id) {
    auto job = jobs_->GetJob(id);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : v1::Job();
  }

  absl::Status Started(const std::string& w, uint64_t s, const std::string& id,
                       int attempt) {
    v1::JobStarted m;
    m.set_job_id(id);
    m.set_attempt(attempt);
    return jobs_->JobStarted(w, s, m);
  }

  absl::Status Report(const std::string& w, uint64_t s, const std::string& id,
                      int attempt, int64_t step, int64_t total = 100) {
    v1::JobReport m;
    m.set_job_id(id);
    m.set_attempt(attempt);
    m.mutable_report()->set_step(step);
    m.mutable_report()->set_total_steps(total);
    m.mutable_report()->set_loss(1.0 / static_cast<double>(step));
    return jobs_->Report(w, s, m);
  }

  absl::Status Result(const std::string& w, uint64_t s, const std::string& id,
                      int attempt, v1::JobOutcome outcome,
                      bool permanent = false) {
    v1::JobResult m;
    m.set_job_id(id);
    m.set_attempt(attempt);
    m.set_outcome(outcome);
    m.set_reason(outcome == v1::JOB_OUTCOME_FAILED ? "boom" : "");
    m.set_permanent(permanent);
    m.add_stderr_tail("last line");
    return jobs_->Result(w, s, m);
  }

  std::vector<v1::JobEvent> Events(const std::string& id, int64_t after = 0) {
    Flush();
    std::vector<v1::JobEvent> all;
    for (;;) {
      auto batch = jobs_->ReadEvents(id, after, 3);
      EXPECT_TRUE(batch.ok()) << batch.status();
      if (!batch.ok() || batch->events.empty()) break;
      for (auto& e : batch->events) {
        after = e.sequence();
        all.push_back(e);
      }
    }
    return all;
  }

  // Value of the metric line starting with `prefix` ("name{labels}").
  double Metric(const std::string& prefix) {
    for (absl::string_view line : absl::StrSplit(metrics_->Render(), '\n')) {
      if (absl::StartsWith(line, prefix + " ")) {
        double v = 0;
        EXPECT_TRUE(absl::SimpleAtod(line.substr(prefix.size() + 1), &v));
        return v;
      }
    }
    ADD_FAILURE() << "no metric " << prefix;
    return -1;
  }

  testing::TempDir dir_;
  FakeClock clock_;
  Logger logger_{nullptr};
  JobManagerOptions options_;
  std::unique_ptr<SqliteStore> store_;
  std::unique_ptr<SchedulerMetrics> metrics_;
  std::unique_ptr<SavingsLedger> savings_;
  std::unique_ptr<CheckpointFiles> files_;
  std::unique_ptr<JobManager> jobs_;
};

TEST_F(JobManagerTest, WholeLifecycleIsRecordedAsGaplessEvents) {
  auto sink = std::make_shared<RecordingSink>();
  uint64_t s = Register("w1", CpuCaps(), sink);
  std::vector<v1::SchedulerMessage> first = sink->Take();
  ASSERT_EQ(first.size(), 1u);
  EXPECT_TRUE(first[0].has_registered());
  EXPECT_EQ(first[0].registered().lease_grace_ms(), 15000);

  auto submitted = Submit(Spec("life"));
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  std::string id = submitted->job().id();
  EXPECT_EQ(id, "j-000001");
  EXPECT_FALSE(submitted->deduplicated());
  auto assignments = sink->TakeAssignments();
  ASSERT_EQ(assignments.size(), 1u);
  EXPECT_EQ(assignments[0].job_id(), id);
  EXPECT_EQ(assignments[0].attempt(), 1);
  EXPECT_FALSE(assignments[0].has_checkpoint());
  EXPECT_EQ(Get(id).state(), v1::JOB_STATE_ASSIGNED);

  ASSERT_TRUE(Started("w1", s, id, 1).ok());
  EXPECT_EQ(Get(id).state(), v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(Report("w1", s, id, 1, 1).ok());
  ASSERT_TRUE(Report("w1", s, id, 1, 100).ok());
  ASSERT_TRUE(Result("w1", s, id, 1, v1::JOB_OUTCOME_SUCCEEDED).ok());
  v1::Job job = Get(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.latest_report().step(), 100);
  EXPECT_EQ(job.worker(), "w1");
  EXPECT_EQ(job.resolved_precision(), v1::PRECISION_FP32);

  std::vector<v1::JobEvent> events = Events(id);
  ASSERT_EQ(events.size(), 6u);
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence(), static_cast<int64_t>(i + 1));
    EXPECT_EQ(events[i].job_id(), id);
  }
  EXPECT_EQ(events[0].state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(events[1].state(), v1::JOB_STATE_ASSIGNED);
  EXPECT_EQ(events[2].state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(events[3].kind(), v1::JOB_EVENT_KIND_REPORT);
  EXPECT_EQ(events[3].report().step(), 1);
  EXPECT_EQ(events[4].report().step(), 100);
  EXPECT_EQ(events[5].state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.last_event_sequence(), 6);
  auto end = jobs_->ReadEvents(id, 6, 10);
  ASSERT_TRUE(end.ok());
  EXPECT_TRUE(end->end);
  EXPECT_EQ(jobs_->GetJobLogs(id)->lines(0), "last line");
  EXPECT_EQ(Metric("halftime_jobs{state=\"succeeded\"}"), 1);
  EXPECT_EQ(Metric("halftime_jobs{state=\"queued\"}"), 0);
}

TEST_F(JobManagerTest, HighestPriorityFirstThenFifo) {
  std::string a = SubmitId(Spec("a", v1::PRECISION_FP32, 0));
  std::string b = SubmitId(Spec("b", v1::PRECISION_FP32, 5));
  std::string c = SubmitId(Spec("c", v1::PRECISION_FP32, 5));
  std::string d = SubmitId(Spec("d", v1::PRECISION_FP32, 0));
  EXPECT_EQ(Get(a).queue_reason(), "no worker connected");
  auto sink = std::make_shared<RecordingSink>();
  uint64_t s = Register("w1", CpuCaps(1), sink);
  std::vector<std::string> order;
  for (int i = 0; i < 4; ++i) {
    auto assignments = sink->TakeAssignments();
    ASSERT_EQ(assignments.size(), 1u);
    order.push_back(assignments[0].job_id());
    ASSERT_TRUE(
        Result("w1", s, order.back(), 1, v1::JOB_OUTCOME_SUCCEEDED).ok());
  }
  EXPECT_EQ(order, (std::vector<std::string>{b, c, a, d}));
}

TEST_F(JobManagerTest, WaitsForANativeWorkerAndResolvesAuto) {
  std::string bf16 = SubmitId(Spec("bf16", v1::PRECISION_BF16_MIXED));
  std::string automatic = SubmitId(Spec("auto", v1::PRECISION_AUTO));
  auto old_gpu = std::make_shared<RecordingSink>();
  Register("v100", CudaCaps("7.0", 4), old_gpu);
  EXPECT_EQ(Get(bf16).state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(Get(bf16).queue_reason(),
            "no worker runs bf16-mixed natively; it needs a worker with "
            "native bf16 (a CPU with avx512_bf16 or amx_bf16, or a CUDA GPU "
            "of compute capability 8.0 or newer)");
  EXPECT_TRUE(Get(bf16).unplaceable());
  EXPECT_EQ(Metric("halftime_jobs_unplaceable{precision=\"bf16-mixed\"}"), 1);
  EXPECT_EQ(Metric("halftime_jobs_unplaceable{precision=\"auto\"}"), 0);
  // auto runs fp16-mixed on the sm70 GPU.
  auto assignments = old_gpu->TakeAssignments();
  ASSERT_EQ(assignments.size(), 1u);
  EXPECT_EQ(assignments[0].job_id(), automatic);
  EXPECT_EQ(assignments[0].spec().precision(), v1::PRECISION_FP16_MIXED);
  EXPECT_EQ(assignments[0].spec().loss_scaling().mode(),
            v1::LOSS_SCALING_MODE_DYNAMIC);
  EXPECT_EQ(Get(automatic).resolved_precision(), v1::PRECISION_FP16_MIXED);
  EXPECT_EQ(Get(automatic).spec().precision(), v1::PRECISION_AUTO);

  auto cpu = std::make_shared<RecordingSink>();
  Register("cpu", CpuCaps(1, /*bf16=*/true), cpu);
  EXPECT_EQ(Metric("halftime_jobs_unplaceable{precision=\"bf16-mixed\"}"), 0);
  assignments = cpu->TakeAssignments();
  ASSERT_EQ(assignments.size(), 1u);
  EXPECT_EQ(assignments[0].job_id(), bf16);
  EXPECT_EQ(Get(bf16).queue_reason(), "");
}

TEST_F(JobManagerTest, AJobTooBigForEveryWorkerWaitsWithTheNumbers) {
  // A LoRA job on gpt-small whose batch outgrows a 1 GiB worker.
  v1::JobSpec big = Spec("big", v1::PRECISION_FP32);
  big.mutable_model()->set_builtin("gpt-small");
  big.mutable_data()->set_seq_len(1024);
  big.set_batch_size(4);
  big.mutable_adapter()->set_kind(v1::ADAPTER_KIND_LORA);
  const std::string id = SubmitId(big);
  v1::WorkerCapabilities small = CpuCaps(1);
  small.set_memory_bytes(int64_t{1} << 30);
  auto sink = std::make_shared<RecordingSink>();
  Register("small", small, sink);
  EXPECT_TRUE(sink->TakeAssignments().empty());
  const v1::Job job = Get(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
  EXPECT_TRUE(job.unplaceable());
  EXPECT_THAT(job.queue_reason(), ::testing::HasSubstr("needs an estimated"));
  EXPECT_THAT(job.queue_reason(),
              ::testing::HasSubstr("the largest capable worker has 1.0 GiB"));
  ASSERT_TRUE(job.has_memory_estimate());
  EXPECT_GT(job.memory_estimate().total_bytes(), int64_t{1} << 30);
  EXPECT_EQ(Metric("halftime_jobs_unplaceable{precision=\"fp32\"}"), 1);
  // A worker with room takes it, with its estimate.
  auto roomy = std::make_shared<RecordingSink>();
  Register("roomy", CpuCaps(1), roomy);
  ASSERT_EQ(roomy->TakeAssignments().size(), 1u);
  EXPECT_EQ(Metric("halftime_jobs_unplaceable{precision=\"fp32\"}"), 0);
  EXPECT_EQ(Get(id).memory_estimate().precision(), v1::PRECISION_FP32);
}

TEST_F(JobManagerTest, QueueReasonChangesAreEventsAndEmulationIsOptIn) {
  std::string denied = SubmitId(Spec("deny", v1::PRECISION_BF16_MIXED));
  // The first reason is an event right after the submission's.
  std::vector<v1::JobEvent> events = Events(denied);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].kind(), v1::JOB_EVENT_KIND_QUEUE_REASON);
  EXPECT_EQ(events[1].message(), "no worker connected");
  auto cpu = std::make_shared<RecordingSink>();
  Register("cpu", CpuCaps(2, /*bf16=*/false), cpu);
  // A worker that only emulates bf16: the job stays queued, and the new
  // reason (what would let it run) is the next event.
  EXPECT_TRUE(cpu->TakeAssignments().empty());
  events = Events(denied);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[2].kind(), v1::JOB_EVENT_KIND_QUEUE_REASON);
  EXPECT_THAT(events[2].message(),
              ::testing::HasSubstr("set resources.emulation: allow"));
  EXPECT_EQ(Get(denied).queue_reason(), events[2].message());
  EXPECT_TRUE(Get(denied).unplaceable());
  EXPECT_EQ(Metric("halftime_jobs_unplaceable{precision=\"bf16-mixed\"}"), 1);
  // An unchanged reason adds no event.
  SubmitId(Spec("fp32", v1::PRECISION_FP32));
  EXPECT_EQ(Events(denied).size(), 3u);

  v1::JobSpec spec = Spec("allow", v1::PRECISION_BF16_MIXED);
  spec.mutable_resources()->set_emulation(v1::EMULATION_ALLOW);
  std::string allowed = SubmitId(spec);
  auto assignments = cpu->TakeAssignments();
  ASSERT_EQ(assignments.size(), 2u);
  EXPECT_EQ(assignments[1].job_id(), allowed);
  EXPECT_EQ(assignments[1].spec().resources().emulation(), v1::EMULATION_ALLOW);
  const v1::Job job = Get(allowed);
  EXPECT_TRUE(job.emulated());
  EXPECT_FALSE(job.unplaceable());
  events = Events(allowed);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_THAT(events[1].message(), ::testing::HasSubstr("emulated"));
}

TEST_F(JobManagerTest, SlotsAndDraining) {
  auto sink = std::make_shared<RecordingSink>();
  uint64_t s = Register("w1", CpuCaps(2), sink);
  std::string a = SubmitId(Spec("a"));
  std::string b = SubmitId(Spec("b"));
  std::string c = SubmitId(Spec("c"));
  EXPECT_EQ(sink->TakeAssignments().size(), 2u);
  EXPECT_EQ(Get(c).queue_reason(), "waiting for a free slot");
  v1::Heartbeat draining;
  draining.set_draining(true);
  jobs_->Heartbeat("w1", s, draining);
  EXPECT_EQ(jobs_->ListWorkers().workers(0).state(), v1::WORKER_STATE_DRAINING);
  ASSERT_TRUE(Result("w1", s, a, 1, v1::JOB_OUTCOME_SUCCEEDED).ok());
  EXPECT_TRUE(sink->TakeAssignments().empty());
  EXPECT_EQ(Get(c).state(), v1::JOB_STATE_QUEUED);
  jobs_->Heartbeat("w1", s, v1::Heartbeat());
  auto assignments = sink->TakeAssignments();
  ASSERT_EQ(assignments.size(), 1u);
  EXPECT_EQ(assignments[0].job_id(), c);
  (void)b;
}

TEST_F(JobManagerTest, LeaseExpiryRequeuesWithNextAttemptAndCheckpoint) {
  auto w1 = std::make_shared<RecordingSink>();
  uint64_t s1 = Register("w1", CpuCaps(), w1);
  std::string id = SubmitId(Spec("lease"));
  ASSERT_EQ(w1->TakeAssignments().size(), 1u);
  ASSERT_TRUE(Started("w1", s1, id, 1).ok());

  // A checkpoint uploaded by attempt 1.
  auto upload = files_->BeginUpload(id, 1, 40);
  ASSERT_TRUE(upload.ok());
  ASSERT_TRUE((*upload)->Write("weights").ok());
  auto record = (*upload)->Finish(Sha256Hex("weights"), 7);
  ASSERT_TRUE(record.ok()) << record.status();
  std::promise<absl::Status> recorded;
  jobs_->RecordCheckpoint(*record,
                          [&](absl::Status st) { recorded.set_value(st); });
  ASSERT_TRUE(recorded.get_future().get().ok());

  // Heartbeats keep the lease.
  clock_.Advance(absl::Seconds(10));
  jobs_->Heartbeat("w1", s1, v1::Heartbeat());
  clock_.Advance(absl::Seconds(10));
  jobs_->Tick();
  EXPECT_EQ(Get(id).state(), v1::JOB_STATE_RUNNING);

  // Silence past the grace period loses the worker.
  clock_.Advance(absl::Seconds(6));
  jobs_->Tick();
  v1::Job job = Get(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(job.attempt(), 2);
  EXPECT_EQ(jobs_->ListWorkers().workers(0).state(), v1::WORKER_STATE_LOST);
  EXPECT_EQ(w1->closed().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Metric("halftime_job_restarts_total"), 1);

  auto w2 = std::make_shared<RecordingSink>();
  Register("w2", CpuCaps(), w2);
  auto assignments = w2->TakeAssignments();
  ASSERT_EQ(assignments.size(), 1u);
  EXPECT_EQ(assignments[0].attempt(), 2);
  EXPECT_TRUE(assignments[0].has_checkpoint());
  EXPECT_EQ(assignments[0].checkpoint_step(), 40);
}

TEST_F(JobManagerTest, StaleAttemptsAreRejectedAndCounted) {
  auto w1 = std::make_shared<RecordingSink>();
  uint64_t s1 = Register("w1", CpuCaps(), w1);
  std::string id = SubmitId(Spec("stale"));
  ASSERT_TRUE(Started("w1", s1, id, 1).ok());
  clock_.Advance(absl::Seconds(16));
  jobs_->Tick();
  auto w2 = std::make_shared<RecordingSink>();
  uint64_t s2 = Register("w2", CpuCaps(), w2);
  ASSERT_EQ(w2->TakeAssignments().size(), 1u);
  ASSERT_TRUE(Started("w2", s2, id, 2).ok());

  // w1 comes back still running attempt 1: told to stop it.
  auto w1b = std::make_shared<RecordingSink>();
  v1::RunningJob running;
  running.set_job_id(id);
  running.set_attempt(1);
  uint64_t s1b = Register("w1", CpuCaps(), w1b, {running});
  auto messages = w1b->Take();
  ASSERT_FALSE(messages.empty());
  ASSERT_TRUE(messages[0].has_registered());
  ASSERT_EQ(messages[0].registered().stale_jobs_size(), 1);
  EXPECT_EQ(messages[0].registered().stale_jobs(0).job_id(), id);
  EXPECT_EQ(Metric("halftime_stale_messages_total{kind=\"running\"}"), 1);

  // Its late report and result are rejected, counted, and cancelled.
  absl::Status late = Report("w1", s1b, id, 1, 50);
  EXPECT_EQ(late.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(late.message(), HasSubstr("superseded"));
  EXPECT_EQ(Result("w1", s1b, id, 1, v1::JOB_OUTCOME_SUCCEEDED).code(),
            absl::StatusCode::kFailedPrecondition);
  // The old session's messages too.
  EXPECT_EQ(Report("w1", s1, id, 1, 51).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Metric("halftime_stale_messages_total{kind=\"report\"}"), 2);
  EXPECT_EQ(Metric("halftime_stale_messages_total{kind=\"result\"}"), 1);
  bool cancelled = false;
  for (const auto& m : w1b->Take()) {
    if (m.has_cancel() && m.cancel().attempt() == 1) cancelled = true;
  }
  EXPECT_TRUE(cancelled);
  EXPECT_EQ(jobs_->CheckUpload(id, 1).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Metric("halftime_stale_messages_total{kind=\"upload\"}"), 1);
  v1::Job job = Get(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(job.worker(), "w2");
  EXPECT_EQ(job.latest_report().step(), 0);
}

TEST_F(JobManagerTest, StaleResultIsNotAnsweredWithACancel) {
  // A worker confirms a Cancel of a run it does not know with a CANCELLED
  // result; answering that stale result with another Cancel looped forever.
  auto w1 = std::make_shared<RecordingSink>();
  uint64_t s1 = Register("w1", CpuCaps(), w1);
  std::string id = SubmitId(Spec("stale-result"));
  ASSERT_TRUE(Started("w1", s1, id, 1).ok());
  clock_.Advance(absl::Seconds(16));
  jobs_->Tick();  // w1 lost: attempt 2 waits for a worker
  auto w1b = std::make_shared<RecordingSink>();
  uint64_t s1b = Register("w1", CpuCaps(), w1b);
  w1b->Take();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Result("w1", s1b, id, 1, v1::JOB_OUTCOME_CANCELLED).code(),
              absl::StatusCode::kFailedPrecondition);
  }
  for (const auto& m : w1b->Take()) {
    EXPECT_FALSE(m.has_cancel()) << m.DebugString();
  }
  // A stale report still gets one: that run may still be going.
  EXPECT_EQ(Report("w1", s1b, id, 1, 7).code(),
            absl::StatusCode::kFailedPrecondition);
  auto messages = w1b->Take();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].cancel().attempt(), 1);
}

TEST_F(JobManagerTest, WorkersHearOfAChangeOnlyOnceItIsDurable) {
  // Hold the store's writer thread: later mutations queue up unwritten, as
  // if the scheduler were killed before it could write them.
  std::promise<void> held;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  store_->Apply(StoreMutation{}, [&](absl::Status) {
    held.set_value();
    released.wait();
  });
  held.get_future().wait();

  auto sink = std::make_shared<RecordingSink>();  // no Flush hook: held
  v1::RegisterWorker request;
  request.set_name("w1");
  *request.mutable_capabilities() = CpuCaps();
  ASSERT_TRUE(jobs_->RegisterWorker(request, sink).ok());
  std::promise<absl::StatusOr<v1::SubmitJobResponse>> submitted;
  v1::SubmitJobRequest submit;
  *submit.mutable_spec() = Spec("held");
  submit.set_idempotency_key("held-key");
  absl::StatusOr<v1::JobSpec> checked = CheckSubmitRequest(submit);
  ASSERT_TRUE(checked.ok()) << checked.status();
  jobs_->SubmitJob(*std::move(checked), submit.idempotency_key(),
                   [&](absl::StatusOr<v1::SubmitJobResponse> r) {
                     submitted.set_value(std::move(r));
                   });
  // Placed in memory, not durable: a crash now forgets the job, so the
  // worker must not run it (after a restart the id and attempt 1 would be
  // handed out again).
  EXPECT_EQ(Get("j-000001").state(), v1::JOB_STATE_ASSIGNED);
  EXPECT_TRUE(sink->Take().empty());
  {
    auto other = SqliteStore::Open(
        testing::StoreOptions(dir_.path() + "/halftime.db", false));
    ASSERT_TRUE(other.ok()) << other.status();
    auto snapshot = (*other)->Load();
    ASSERT_TRUE(snapshot.ok()) << snapshot.status();
    EXPECT_TRUE(snapshot->jobs.empty());
    (*other)->Close();
  }

  release.set_value();
  auto response = submitted.get_future().get();
  ASSERT_TRUE(response.ok()) << response.status();
  Flush();
  auto messages = sink->Take();
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_TRUE(messages[0].has_registered());
  ASSERT_TRUE(messages[1].has_assignment());
  EXPECT_EQ(messages[1].assignment().job_id(), response->job().id());
  EXPECT_EQ(messages[1].assignment().attempt(), 1);
}

TEST_F(JobManagerTest, MaxRestartsBoundsRetries) {
  v1::JobSpec spec = Spec("flaky");
  spec.set_max_restarts(1);
  std::string id = SubmitId(spec);
  auto sink = std::make_shared<RecordingSink>();
  uint64_t s = Register("w1", CpuCaps(), sink);
  ASSERT_TRUE(Result("w1", s, id, 1, v1::JOB_OUTCOME_FAILED).ok());
  v1::Job job = Get(id);
  EXPECT_EQ(job.attempt(), 2);
  // Requeued and placed again at once on the same worker.
  EXPECT_EQ(job.state(), v1::JOB_STATE_ASSIGNED);
  ASSERT_TRUE(Result("w1", s, id, 2, v1::JOB_OUTCOME_FAILED).ok());
  job = Get(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.failure_reason(), "boom (gave up after 1 restart)");
}

TEST_F(JobManagerTest, PermanentFailureFailsAtOnceAndReleaseDoesNotCount) {
  v1::JobSpec spec = Spec("p");
  spec.set_max_restarts(0);
  std::string released = SubmitId(spec);
  auto sink = std::make_shared<RecordingSink>();
  uint64_t s = Register("w1", CpuCaps(), sink);
  ASSERT_TRUE(Result("w1", s, released, 1, v1::JOB_OUTCOME_RELEASED).ok());
  EXPECT_EQ(Get(released).attempt(), 2);
  EXPECT_EQ(Get(released).state(), v1::JOB_STATE_ASSIGNED);

  spec.set_max_restarts(5);
  ASSERT_TRUE(Result("w1", s, released, 2, v1::JOB_OUTCOME_SUCCEEDED).ok());
  std::string bad = SubmitId(spec);
  ASSERT_TRUE(Result("w1", s, bad, 1, v1::JOB_OUTCOME_FAILED,
                     /*permanent=*/true)
                  .ok());
  EXPECT_EQ(Get(bad).state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(Get(bad).failure_reason(), "boom");
  EXPECT_EQ(Get(bad).attempt(), 1);
}

TEST_F(JobManagerTest, CancelInEveryState) {
  // Unknown.
  auto missing = Cancel("j-000099");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "job j-000099 not found");
  EXPECT_EQ(jobs_->GetJob("j-000099").status().code(),
            absl::StatusCode::kNotFound);

  // QUEUED: at once.
  std::string queued = SubmitId(Spec("q"));
  auto cancelled = Cancel(queued);
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->state(), v1::JOB_STATE_CANCELLED);

  // Terminal.
  EXPECT_EQ(Cancel(queued).status().code(),
            absl::StatusCode::kFailedPrecondition);

  // ASSIGNED / RUNNING: via the worker.
  auto sink = std::make_shared<RecordingSink>();
  uint64_t s = Register("w1", CpuCaps(2), sink);
  std::string assigned = SubmitId(Spec("a"));
  std::string running = SubmitId(Spec("r"));
  ASSERT_TRUE(Started("w1", s, running, 1).ok());
  sink->Take();
  auto pending = Cancel(assigned);
  ASSERT_TRUE(pending.ok());
  EXPECT_EQ(pending->state(), v1::JOB_STATE_ASSIGNED);
  auto messages = sink->Take();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].cancel().job_id(), assigned);
  EXPECT_EQ(messages[0].cancel().attempt(), 1);
  ASSERT_TRUE(Result("w1", s, assigned, 1, v1::JOB_OUTCOME_CANCELLED).ok());
  EXPECT_EQ(Get(assigned).state(), v1::JOB_STATE_CANCELLED);

  ASSERT_TRUE(Cancel(running).ok());
  EXPECT_EQ(Get(running).state(), v1::JOB_STATE_RUNNING);
  // Its worker goes away before confirming: cancelled at once.
  jobs_->WorkerDisconnected("w1", s);
  auto gone = Cancel(running);
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ(gone->state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(Get(running).state(), v1::JOB_STATE_CANCELLED);
}

TEST_F(JobManagerTest, CancelPendingWhenWorkerLeaseExpires) {
  auto sink = std::make_shared<RecordingSink>();
  uint64_t s = Register("w1", CpuCaps(), sink);
  std::string id = SubmitId(Spec("c"));
  ASSERT_TRUE(Started("w1", s, id, 1).ok());
  ASSERT_TRUE(Cancel(id).ok());
  clock_.Advance(absl::Seconds(20));
  jobs_->Tick();
  EXPECT_EQ(Get(id).state(), v1::JOB_STATE_CANCELLED);
}

TEST_F(JobManagerTest, IdempotentSubmit) {
  auto first = Submit(Spec("x"), "key-1");
  auto again = Submit(Spec("x"), "key-1");
  auto other = Submit(Spec("x"), "key-2");
  ASSERT_TRUE(first.ok() && again.ok() && other.ok());
  EXPECT_EQ(first->job().id(), again->job().id());
  EXPECT_FALSE(first->deduplicated());
  EXPECT_TRUE(again->deduplicated());
  EXPECT_NE(other->job().id(), first->job().id());
  EXPECT_EQ(Metric("halftime_jobs_submitted_total"), 2);
  // Survives a restart.
  Reopen();
  auto after = Submit(Spec("x"), "key-1");
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->deduplicated());
  EXPECT_EQ(after->job().id(), first->job().id());
  EXPECT_EQ(SubmitId(Spec("y")), "j-000003");
}

TEST_F(JobManagerTest, FinishedJobsLeaveMemoryAndAreReadFromTheStore) {
  auto sink = std::make_shared<RecordingSink>();
  uint64_t s = Register("w1", testing::CpuCaps(1), sink);
  // j-1 succeeds, j-2 is cancelled while queued, j-3 runs, j-4 and j-5 wait.
  std::vector<std::string> ids;
  for (int i = 1; i <= 5; ++i) {
    auto r = Submit(Spec(absl::StrCat("job", i)), absl::StrCat("key-", i));
    ASSERT_TRUE(r.ok()) << r.status();
    ids.push_back(r->job().id());
  }
  ASSERT_TRUE(Cancel(ids[1]).ok());
  ASSERT_TRUE(Result("w1", s, ids[0], 1, v1::JOB_OUTCOME_SUCCEEDED).ok());
  Flush();
  EXPECT_EQ(jobs_->live_jobs(), 3);  // j-3 (assigned), j-4, j-5

  // Every read still sees the finished ones, from the store.
  EXPECT_EQ(Get(ids[0]).state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(Get(ids[1]).state(), v1::JOB_STATE_CANCELLED);
  std::vector<v1::JobEvent> events = Events(ids[0]);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(events.back().sequence(), Get(ids[0]).last_event_sequence());
  auto end = jobs_->ReadEvents(ids[0], events.back().sequence(), 10);
  ASSERT_TRUE(end.ok());
  EXPECT_TRUE(end->end);
  auto again = Submit(Spec("job1"), "key-1");
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->deduplicated());
  EXPECT_EQ(again->job().id(), ids[0]);
  auto cancel = Cancel(ids[0]);
  EXPECT_EQ(cancel.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(cancel.status().message(), HasSubstr("already succeeded"));
  EXPECT_EQ(Cancel("j-000099").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(jobs_->GetJobLogs(ids[0]).ok());
  EXPECT_TRUE(jobs_->GetSavings(ids[1]).ok());

  // Listing merges memory and store, newest first, in complete pages.
  std::vector<std::string> listed;
  v1::ListJobsRequest page;
  page.set_page_size(2);
  for (;;) {
    auto r = jobs_->ListJobs(page);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_LE(r->jobs_size(), 2);
    for (const v1::Job& job : r->jobs()) listed.push_back(job.id());
    if (r->next_page_token().empty()) break;
    EXPECT_EQ(r->jobs_size(), 2);
    page.set_page_token(r->next_page_token());
  }
  EXPECT_EQ(listed,
            (std::vector<std::string>{ids[4], ids[3], ids[2], ids[1], ids[0]}));
  v1::ListJobsRequest finished;
  finished.add_states(v1::JOB_STATE_SUCCEEDED);
  finished.add_states(v1::JOB_STATE_CANCELLED);
  auto done = jobs_->ListJobs(finished);
  ASSERT_TRUE(done.ok());
  ASSERT_EQ(done->jobs_size(), 2);
  EXPECT_EQ(done->jobs(0).id(), ids[1]);
  EXPECT_EQ(done->jobs(1).id(), ids[0]);

  // A restart loads only the live jobs.
  Reopen();
  EXPECT_EQ(jobs_->live_jobs(), 3);
  EXPECT_EQ(Get(ids[0]).state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(Metric("halftime_jobs{state=\"succeeded\"}"), 1);
  EXPECT_EQ(Metric("halftime_jobs{state=\"cancelled\"}"), 1);
  EXPECT_EQ(SubmitId(Spec("next")), "j-000006");
}

TEST_F(JobManagerTest, RestartAfterOnlyFinishedJobsContinuesTheIds) {
  // Nothing live is loaded, yet ids continue after the newest stored job
  // and the gauges count the finished ones.
  ASSERT_EQ(SubmitId(Spec("a")), "j-000001");
  ASSERT_EQ(SubmitId(Spec("b")), "j-000002");
  ASSERT_TRUE(Cancel("j-000001").ok());
  ASSERT_TRUE(Cancel("j-000002").ok());
  Flush();
  Reopen();
  EXPECT_EQ(jobs_->live_jobs(), 0);
  EXPECT_EQ(Metric("halftime_jobs{state=\"cancelled\"}"), 2);
  EXPECT_EQ(Metric("halftime_jobs{state=\"queued\"}"), 0);
  EXPECT_EQ(SubmitId(Spec("c")), "j-000003");
  EXPECT_EQ(Get("j-000002").state(), v1::JOB_STATE_CANCELLED);
}

TEST_F(JobManagerTest, AFailedWriteIsNeitherAcknowledgedNorActedOn) {
  // The fixture's manager is replaced by one over a store that can fail.
  jobs_->Shutdown();
  jobs_.reset();
  FailingStore failing(store_.get());
  auto created = JobManager::Create(options_, &failing, &clock_, metrics_.get(),
                                    savings_.get(), files_.get(), &logger_);
  ASSERT_TRUE(created.ok()) << created.status();
  jobs_ = *std::move(created);
  auto sink = std::make_shared<RecordingSink>();
  uint64_t s = Register("w1", testing::CpuCaps(1), sink);
  std::string running = SubmitId(Spec("running"));
  ASSERT_EQ(sink->TakeAssignments().size(), 1u);
  ASSERT_TRUE(Started("w1", s, running, 1).ok());
  ASSERT_TRUE(Report("w1", s, running, 1, 1).ok());

  failing.failing = true;
  auto refused = Submit(Spec("refused"), "key-r");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  // Retried with its key while still full: refused again, not "deduplicated"
  // against a job that was never stored.
  auto retried = Submit(Spec("refused"), "key-r");
  EXPECT_FALSE(retried.ok());
  EXPECT_FALSE(Report("w1", s, running, 1, 2).ok());
  Flush();
  // The worker was disconnected, to re-register against the stored state.
  EXPECT_FALSE(sink->closed().ok());
  v1::ListJobsRequest all;
  auto listed = jobs_->ListJobs(all);
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->jobs_size(), 1) << "an unstored job is shown";
  EXPECT_EQ(listed->jobs(0).id(), running);
  EXPECT_EQ(Get(running).latest_report().step(), 1);

  failing.failing = false;
  sink = std::make_shared<RecordingSink>();
  std::vector<v1::RunningJob> runs(1);
  runs[0].set_job_id(running);
  runs[0].set_attempt(1);
  s = Register("w1", testing::CpuCaps(1), sink, runs);
  ASSERT_TRUE(Report("w1", s, running, 1, 3).ok());
  auto stored = Submit(Spec("refused"), "key-r");
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_FALSE(stored->deduplicated());
  EXPECT_EQ(Get(running).state(), v1::JOB_STATE_RUNNING);
  // The stored history has no gaps, and a restart finds what was answered.
  std::vector<v1::JobEvent> events = Events(running);
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence(), static_cast<int64_t>(i + 1));
  }
  jobs_->Shutdown();
  jobs_.reset();
  Reopen();
  EXPECT_EQ(Get(stored->job().id()).spec().name(), "refused");
  EXPECT_EQ(Get(running).latest_report().step(), 3);
}

TEST_F(JobManagerTest, ReportsWithImpossibleStepsAreRefused) {
  auto sink = std::make_shared<RecordingSink>();
  uint64_t s = Register("w1", testing::CpuCaps(1), sink);
  std::string id = SubmitId(Spec("x"));
  absl::Status negative = Report("w1", s, id, 1, -5);
  EXPECT_EQ(negative.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(negative.message(), HasSubstr("must not be negative"));
  // Huge figures are taken without overflowing (UBSan would abort).
  ASSERT_TRUE(Report("w1", s, id, 1, 10, INT64_MAX).ok());
  ASSERT_TRUE(Report("w1", s, id, 1, INT64_MAX, INT64_MAX).ok());
  EXPECT_EQ(Get(id).latest_report().step(), INT64_MAX);
}

TEST_F(JobManagerTest, InvalidSubmitsNameTheField) {
  v1::JobSpec spec = Spec("x");
  spec.clear_name();
  auto r = Submit(spec);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("name"));

  v1::SubmitJobRequest text;
  text.set_spec_text(
      "name: t\nmodel: {builtin: mlp}\ndata: {kind: synthetic}\nsteps: "
      "10\nprecision: bf17-mixed\n");
  r = SubmitRequest(text);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("precision"));

  text.set_spec_text(
      "name: t\nmodel: {builtin: mlp}\ndata: {kind: synthetic}\nsteps: 10\n");
  r = SubmitRequest(text);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->job().spec().name(), "t");

  *text.mutable_spec() = Spec("both");
  EXPECT_EQ(SubmitRequest(text).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SubmitRequest(v1::SubmitJobRequest()).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::SubmitJobRequest long_key;
  *long_key.mutable_spec() = Spec("k");
  long_key.set_idempotency_key(std::string(129, 'k'));
  EXPECT_EQ(SubmitRequest(long_key).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(JobManagerTest, WatchResumesWithoutGapsOrDuplicates) {
  auto sink = std::make_shared<RecordingSink>();
  uint64_t s = Register("w1", CpuCaps(), sink);
  std::string id = SubmitId(Spec("watch"));
  ASSERT_TRUE(Started("w1", s, id, 1).ok());
  for (int step = 1; step <= 5; ++step) {
    ASSERT_TRUE(Report("w1", s, id, 1, step, 5).ok());
  }
  std::vector<v1::JobEvent> all = Events(id);
  ASSERT_EQ(all.size(), 8u);
  std::vector<v1::JobEvent> tail = Events(id, 4);
  ASSERT_EQ(tail.size(), 4u);
  EXPECT_EQ(tail[0].sequence(), 5);
  EXPECT_EQ(tail[0].report().step(), 2);

  // A listener is woken once more events are durable.
  struct Counter : EventListener {
    std::atomic<int> calls{0};
    void OnEvents() override { ++calls; }
  };
  auto counter = std::make_shared<Counter>();
  auto sub = jobs_->Watch(id, counter);
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(Result("w1", s, id, 1, v1::JOB_OUTCOME_SUCCEEDED).ok());
  Flush();
  EXPECT_GE(counter->calls.load(), 1);
  jobs_->Unwatch(id, *sub);

  // Finished: served from the store, also after a restart.
  Reopen();
  std::vector<v1::JobEvent> stored = Events(id, 7);
  ASSERT_EQ(stored.size(), 2u);
  EXPECT_EQ(stored[0].sequence(), 8);
  EXPECT_EQ(stored[1].state(), v1::JOB_STATE_SUCCEEDED);
  auto end = jobs_->ReadEvents(id, 9, 10);
  ASSERT_TRUE(end.ok());
  EXPECT_TRUE(end->end);
  EXPECT_EQ(jobs_->ReadEvents(id, -1, 10).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(JobManagerTest, ReportEventsAreDownsampled) {
  Close();
  options_.max_report_events = 10;
  Open();
  auto sink = std::make_shared<RecordingSink>();
  uint64_t s = Register("w1", CpuCaps(), sink);
  std::string id = SubmitId(Spec("many"));
  for (int step = 1; step <= 1000; ++step) {
    ASSERT_TRUE(Report("w1", s, id, 1, step, 1000).ok());
  }
  EXPECT_EQ(Get(id).latest_report().step(), 1000);
  std::vector<int64_t> steps;
  for (const auto& e : Events(id)) {
    if (e.kind() == v1::JOB_EVENT_KIND_REPORT)
      steps.push_back(e.report().step());
  }
  ASSERT_GE(steps.size(), 10u);
  EXPECT_LE(steps.size(), 12u);
  EXPECT_EQ(steps.front(), 1);
  EXPECT_EQ(steps.back(), 1000);
}

TEST_F(JobManagerTest, RestartKeepsStateAndReattachesRunningJobs) {
  auto sink = std::make_shared<RecordingSink>();
  uint64_t s = Register("w1", CpuCaps(2), sink);
  std::string running = SubmitId(Spec("running"));
  std::string orphan = SubmitId(Spec("orphan"));
  ASSERT_TRUE(Started("w1", s, running, 1).ok());
  ASSERT_TRUE(Started("w1", s, orphan, 1).ok());
  ASSERT_TRUE(Report("w1", s, running, 1, 1).ok());
  std::string queued = SubmitId(Spec("queued"));
  int64_t last_seq = Get(running).last_event_sequence();

  Reopen();
  EXPECT_EQ(Get(running).state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(Get(running).latest_report().step(), 1);
  EXPECT_EQ(Get(queued).state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(Events(running).size(), static_cast<size_t>(last_seq));

  // The worker reconnects, still running one of its two jobs.
  auto again = std::make_shared<RecordingSink>();
  v1::RunningJob r;
  r.set_job_id(running);
  r.set_attempt(1);
  uint64_t s2 = Register("w1", CpuCaps(2), again, {r});
  auto messages = again->Take();
  ASSERT_FALSE(messages.empty());
  EXPECT_EQ(messages[0].registered().stale_jobs_size(), 0);
  EXPECT_EQ(Get(running).state(), v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(Report("w1", s2, running, 1, 2).ok());
  // The one it lost is requeued (attempt 2) and placed again.
  EXPECT_EQ(Get(orphan).attempt(), 2);
  EXPECT_EQ(Get(orphan).state(), v1::JOB_STATE_ASSIGNED);
  ASSERT_TRUE(Result("w1", s2, running, 1, v1::JOB_OUTCOME_SUCCEEDED).ok());
  EXPECT_EQ(Get(running).state(), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(JobManagerTest, WorkersThatDoNotComeBackAfterARestartLoseTheirJobs) {
  auto sink = std::make_shared<RecordingSink>();
  uint64_t s = Register("w1", CpuCaps(), sink);
  std::string id = SubmitId(Spec("j"));
  ASSERT_TRUE(Started("w1", s, id, 1).ok());
  Reopen();
  clock_.Advance(absl::Seconds(14));
  jobs_->Tick();
  EXPECT_EQ(Get(id).state(), v1::JOB_STATE_RUNNING);
  clock_.Advance(absl::Seconds(2));
  jobs_->Tick();
  EXPECT_EQ(Get(id).state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(Get(id).attempt(), 2);
}

TEST_F(JobManagerTest, ListJobsPagesNewestFirst) {
  for (int i = 0; i < 5; ++i) SubmitId(Spec(absl::StrCat("j", i)));
  ASSERT_TRUE(Cancel("j-000002").ok());
  v1::ListJobsRequest request;
  request.set_page_size(2);
  std::vector<std::string> ids;
  for (int page = 0; page < 5; ++page) {
    auto r = jobs_->ListJobs(request);
    ASSERT_TRUE(r.ok());
    for (const auto& j : r->jobs()) ids.push_back(j.id());
    if (r->next_page_token().empty()) break;
    request.set_page_token(r->next_page_token());
  }
  EXPECT_EQ(ids, (std::vector<std::string>{"j-000005", "j-000004", "j-000003",
                                           "j-000002", "j-000001"}));
  v1::ListJobsRequest cancelled;
  cancelled.add_states(v1::JOB_STATE_CANCELLED);
  auto r = jobs_->ListJobs(cancelled);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->jobs_size(), 1);
  EXPECT_EQ(r->jobs(0).id(), "j-000002");
  v1::ListJobsRequest bad;
  bad.set_page_token("garbage!");
  EXPECT_EQ(jobs_->ListJobs(bad).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(JobManagerTest, SavingsAreDerivedStoredAndTotalled) {
  auto sink = std::make_shared<RecordingSink>();
  v1::WorkerCapabilities caps = CudaCaps("9.0");
  uint64_t s = Register("gpu", caps, sink);
  std::string id = SubmitId(Spec("s", v1::PRECISION_BF16_MIXED));
  ASSERT_TRUE(Report("gpu", s, id, 1, 100, 100).ok());
  v1::JobResult result;
  result.set_job_id(id);
  result.set_attempt(1);
  result.set_outcome(v1::JOB_OUTCOME_SUCCEEDED);
  v1::Savings* m = result.mutable_savings();
  m->set_precision(v1::PRECISION_BF16_MIXED);
  m->set_baseline_step_seconds(0.3);
  m->set_step_seconds(0.1);
  m->set_baseline_peak_memory_bytes(1000);
  m->set_peak_memory_bytes(600);
  m->set_probe_seconds(3);
  m->set_device_name("NVIDIA Test GPU");
  ASSERT_TRUE(jobs_->Result("gpu", s, result).ok());
  v1::Savings saved = Get(id).savings();
  EXPECT_DOUBLE_EQ(saved.speedup(), 3.0);
  EXPECT_EQ(saved.memory_saved_bytes(), 400);
  EXPECT_DOUBLE_EQ(saved.memory_saved_ratio(), 0.4);
  EXPECT_NEAR(saved.device_seconds_saved(), 100 * 0.2 - 3, 1e-9);
  EXPECT_NEAR(saved.cost_saved(), 17.0 / 3600 * 3.6, 1e-9);
  std::vector<v1::JobEvent> events = Events(id);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events[events.size() - 2].kind(), v1::JOB_EVENT_KIND_SAVINGS);
  EXPECT_NEAR(Metric("halftime_savings_device_seconds_total{precision=\"bf16-"
                     "mixed\"}"),
              17, 1e-9);
  Reopen();
  auto fleet = jobs_->GetSavings("");
  ASSERT_TRUE(fleet.ok());
  ASSERT_EQ(fleet->totals_size(), 1);
  EXPECT_EQ(fleet->totals(0).jobs(), 1);
  EXPECT_NEAR(fleet->totals(0).device_seconds_saved(), 17, 1e-9);
  EXPECT_EQ(fleet->job_ids(0), id);
  EXPECT_NEAR(Metric("halftime_savings_device_seconds_total{precision=\"bf16-"
                     "mixed\"}"),
              17, 1e-9);
  auto one = jobs_->GetSavings(id);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->jobs_size(), 1);
  EXPECT_EQ(jobs_->GetSavings("j-000042").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(JobManagerTest, CachedBaselineTravelsWithTheAssignment) {
  auto sink = std::make_shared<RecordingSink>();
  const v1::WorkerCapabilities caps = CudaCaps("9.0");
  uint64_t s = Register("gpu", caps, sink);
  v1::JobSpec probe = Spec("probe", v1::PRECISION_BF16_MIXED);
  probe.mutable_savings()->set_baseline(v1::BASELINE_MODE_PROBE);
  std::string first = SubmitId(probe);
  auto assignments = sink->TakeAssignments();
  ASSERT_EQ(assignments.size(), 1u);
  EXPECT_FALSE(assignments[0].has_cached_baseline());
  const std::string fingerprint =
      BaselineFingerprint(assignments[0].spec(), caps);

  // Cached before any probe: nothing to reuse, the worker will probe.
  v1::JobSpec cached = Spec("cached", v1::PRECISION_BF16_MIXED);
  cached.mutable_savings()->set_baseline(v1::BASELINE_MODE_CACHED);
  std::string early = SubmitId(cached);

  v1::JobResult result;
  result.set_job_id(first);
  result.set_attempt(1);
  result.set_outcome(v1::JOB_OUTCOME_SUCCEEDED);
  v1::Savings* m = result.mutable_savings();
  m->set_precision(v1::PRECISION_BF16_MIXED);
  m->set_baseline(v1::BASELINE_MODE_PROBE);
  m->set_fingerprint(fingerprint);
  m->set_baseline_step_seconds(0.3);
  m->set_baseline_tokens_per_second(1000);
  m->set_step_seconds(0.1);
  m->set_baseline_peak_memory_bytes(1000);
  m->set_peak_memory_bytes(600);
  m->set_probe_seconds(3);
  m->set_device_name("NVIDIA Test GPU");
  ASSERT_TRUE(jobs_->Result("gpu", s, result).ok());
  assignments = sink->TakeAssignments();
  ASSERT_EQ(assignments.size(), 1u);
  EXPECT_EQ(assignments[0].job_id(), early);
  EXPECT_TRUE(assignments[0].has_cached_baseline())
      << "the probe finished before the cached job was placed";
  ASSERT_TRUE(Result("gpu", s, early, 1, v1::JOB_OUTCOME_SUCCEEDED).ok());

  // A restarted scheduler still has it (loaded from the stored savings).
  Reopen();
  sink = std::make_shared<RecordingSink>();
  s = Register("gpu", caps, sink);
  std::string later = SubmitId(cached);
  assignments = sink->TakeAssignments();
  ASSERT_EQ(assignments.size(), 1u);
  EXPECT_EQ(assignments[0].job_id(), later);
  ASSERT_TRUE(assignments[0].has_cached_baseline());
  const v1::Savings& b = assignments[0].cached_baseline();
  EXPECT_EQ(b.fingerprint(), fingerprint);
  EXPECT_EQ(b.baseline(), v1::BASELINE_MODE_CACHED);
  EXPECT_DOUBLE_EQ(b.baseline_step_seconds(), 0.3);
  EXPECT_DOUBLE_EQ(b.baseline_tokens_per_second(), 1000);
  EXPECT_EQ(b.baseline_peak_memory_bytes(), 1000);
  EXPECT_EQ(b.device_name(), "NVIDIA Test GPU");
  EXPECT_EQ(b.step_seconds(), 0) << "only the baseline travels";
  ASSERT_TRUE(Result("gpu", s, later, 1, v1::JOB_OUTCOME_SUCCEEDED).ok());

  // Another batch shape is another fingerprint: no reuse.
  v1::JobSpec other = cached;
  other.set_batch_size(3);
  SubmitId(other);
  assignments = sink->TakeAssignments();
  ASSERT_EQ(assignments.size(), 1u);
  EXPECT_FALSE(assignments[0].has_cached_baseline());
  // Probe mode never gets one.
  SubmitId(probe);
}

}  // namespace
}  // namespace halftime::server
