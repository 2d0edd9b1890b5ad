// Integration tests: a real SchedulerServer on port 0 (fake clock, no
// ticker), users and workers played by gRPC clients in the test.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <deque>
#include <fstream>
#include <future>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "halftime/v1/scheduler.grpc.pb.h"
#include "halftime/v1/worker_gateway.grpc.pb.h"
#include "server/checkpoints.h"
#include "server/server.h"
#include "tests/server/test_util.h"

namespace halftime::server {
namespace {

using testing::CpuCaps;
using testing::FakeClock;
using testing::Spec;

constexpr absl::Duration kWait = absl::Seconds(10);

// The header a real client's channel adds (common/channel.h); here per call.
void AddBearerToken(grpc::ClientContext* context, const std::string& token) {
  if (!token.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", token));
  }
}

// A worker played over a real Connect stream.
class TestWorker {
 public:
  TestWorker(std::shared_ptr<grpc::Channel> channel, std::string token = "")
      : stub_(v1::WorkerGateway::NewStub(channel)), token_(std::move(token)) {}

  ~TestWorker() { Drop(); }

  // Opens the stream and registers; returns Registered (or the status).
  absl::StatusOr<v1::Registered> Connect(
      const std::string& name, const v1::WorkerCapabilities& caps,
      std::vector<v1::RunningJob> running = {}) {
    AddBearerToken(&context_, token_);
    stream_ = stub_->Connect(&context_);
    reader_ = std::thread([this] {
      v1::SchedulerMessage m;
      while (stream_->Read(&m)) {
        std::lock_guard<std::mutex> lock(mu_);
        inbox_.push_back(m);
        cv_.notify_all();
      }
      std::lock_guard<std::mutex> lock(mu_);
      ended_ = true;
      cv_.notify_all();
    });
    v1::WorkerMessage m;
    m.mutable_register_()->set_name(name);
    *m.mutable_register_()->mutable_capabilities() = caps;
    for (auto& r : running) *m.mutable_register_()->add_running_jobs() = r;
    stream_->Write(m);
    auto first = Next();
    if (!first.has_value()) {
      // The server ended the stream: collect its status.
      if (reader_.joinable()) reader_.join();
      finish_status_ = stream_->Finish();
      stream_.reset();
      return FromGrpcStatus(finish_status_);
    }
    if (!first->has_registered()) {
      return absl::InternalError("first message is not registered");
    }
    return first->registered();
  }

  // The next message, or nullopt when the stream ended or nothing came.
  std::optional<v1::SchedulerMessage> Next(absl::Duration timeout = kWait) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                 [this] { return !inbox_.empty() || ended_; });
    if (inbox_.empty()) return std::nullopt;
    v1::SchedulerMessage m = inbox_.front();
    inbox_.pop_front();
    return m;
  }

  // Skips to the next message of `kind`.
  std::optional<v1::SchedulerMessage> NextOf(
      v1::SchedulerMessage::KindCase kind) {
    for (;;) {
      auto m = Next();
      if (!m.has_value() || m->kind_case() == kind) return m;
    }
  }

  v1::Assignment NextAssignment() {
    auto m = NextOf(v1::SchedulerMessage::kAssignment);
    EXPECT_TRUE(m.has_value()) << "no assignment";
    return m.has_value() ? m->assignment() : v1::Assignment();
  }

  void Send(const v1::WorkerMessage& m) { stream_->Write(m); }

  void Started(const std::string& id, int attempt) {
    v1::WorkerMessage m;
    m.mutable_started()->set_job_id(id);
    m.mutable_started()->set_attempt(attempt);
    Send(m);
  }
  void Report(const std::string& id, int attempt, int64_t step) {
    v1::WorkerMessage m;
    m.mutable_report()->set_job_id(id);
    m.mutable_report()->set_attempt(attempt);
    m.mutable_report()->mutable_report()->set_step(step);
    m.mutable_report()->mutable_report()->set_total_steps(100);
    m.mutable_report()->mutable_report()->set_loss(2.0 / step);
    Send(m);
  }
  void Result(const std::string& id, int attempt, v1::JobOutcome outcome) {
    v1::WorkerMessage m;
    m.mutable_result()->set_job_id(id);
    m.mutable_result()->set_attempt(attempt);
    m.mutable_result()->set_outcome(outcome);
    Send(m);
  }

  // Breaks the stream (like a crashed worker).
  void Drop() {
    if (stream_ == nullptr) return;
    context_.TryCancel();
    if (reader_.joinable()) reader_.join();
    finish_status_ = stream_->Finish();
    stream_.reset();
  }

  grpc::Status finish_status() const { return finish_status_; }

 private:
  std::unique_ptr<v1::WorkerGateway::Stub> stub_;
  std::string token_;
  grpc::ClientContext context_;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::WorkerMessage, v1::SchedulerMessage>>
      stream_;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::SchedulerMessage> inbox_;
  bool ended_ = false;
  grpc::Status finish_status_;
};

class IntegrationTest : public ::testing::Test {
 protected:
  void StartServer(const std::string& token_file = "") {
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "";
    options.data_dir = dir_.path();
    options.tick_interval = absl::ZeroDuration();
    options.token_file = token_file;
    options.log = nullptr;
    auto server = SchedulerServer::Start(options, &clock_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    users_ = v1::Scheduler::NewStub(channel_);
    gateway_ = v1::WorkerGateway::NewStub(channel_);
  }

  void StopServer() {
    server_->Shutdown(absl::Seconds(2));
    server_.reset();
  }

  void TearDown() override {
    if (server_ != nullptr) StopServer();
  }

  std::string Submit(const v1::JobSpec& spec) {
    grpc::ClientContext context;
    AddBearerToken(&context, user_token_);
    v1::SubmitJobRequest request;
    *request.mutable_spec() = spec;
    v1::SubmitJobResponse response;
    grpc::Status s = users_->SubmitJob(&context, request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return response.job().id();
  }

  v1::Job Get(const std::string& id) {
    grpc::ClientContext context;
    AddBearerToken(&context, user_token_);
    v1::GetJobRequest request;
    request.set_job_id(id);
    v1::Job job;
    grpc::Status s = users_->GetJob(&context, request, &job);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return job;
  }

  // Polls GetJob until `done` holds (worker messages are asynchronous).
  v1::Job WaitFor(const std::string& id,
                  const std::function<bool(const v1::Job&)>& done) {
    absl::Time deadline = absl::Now() + kWait;
    v1::Job job;
    while (absl::Now() < deadline) {
      job = Get(id);
      if (done(job)) return job;
      absl::SleepFor(absl::Milliseconds(2));
    }
    ADD_FAILURE() << "timed out; job is " << job.ShortDebugString();
    return job;
  }

  v1::Job WaitState(const std::string& id, v1::JobState state) {
    return WaitFor(id,
                   [state](const v1::Job& j) { return j.state() == state; });
  }

  // Watches from `after` to the end; returns the events and the status.
  std::pair<std::vector<v1::JobEvent>, grpc::Status> Watch(
      const std::string& id, int64_t after = 0, bool reports = true) {
    grpc::ClientContext context;
    AddBearerToken(&context, user_token_);
    context.set_deadline(absl::ToChronoTime(absl::Now() + kWait));
    v1::WatchJobRequest request;
    request.set_job_id(id);
    request.set_after_sequence(after);
    request.set_include_reports(reports);
    auto reader = users_->WatchJob(&context, request);
    std::vector<v1::JobEvent> events;
    v1::JobEvent event;
    while (reader->Read(&event)) events.push_back(event);
    return {events, reader->Finish()};
  }

  grpc::Status Upload(const std::string& id, int attempt, int64_t step,
                      const std::string& data, const std::string& sha,
                      int64_t total, v1::UploadCheckpointResponse* response) {
    grpc::ClientContext context;
    AddBearerToken(&context, worker_token_);
    auto writer = gateway_->UploadCheckpoint(&context, response);
    v1::CheckpointChunk chunk;
    chunk.set_job_id(id);
    chunk.set_attempt(attempt);
    chunk.set_step(step);
    size_t half = data.size() / 2;
    chunk.set_data(data.substr(0, half));
    writer->Write(chunk);
    chunk.Clear();
    chunk.set_data(data.substr(half));
    chunk.set_sha256(sha);
    chunk.set_total_bytes(total);
    writer->Write(chunk);
    writer->WritesDone();
    return writer->Finish();
  }

  std::pair<std::string, grpc::Status> Download(const std::string& id,
                                                v1::CheckpointChunk* last) {
    grpc::ClientContext context;
    AddBearerToken(&context, worker_token_);
    v1::DownloadCheckpointRequest request;
    request.set_job_id(id);
    auto reader = gateway_->DownloadCheckpoint(&context, request);
    std::string data;
    v1::CheckpointChunk chunk;
    while (reader->Read(&chunk)) {
      data += chunk.data();
      *last = chunk;
    }
    return {data, reader->Finish()};
  }

  double Metric(const std::string& prefix) {
    std::string text = server_->metrics()->Render();
    size_t at = text.find("\n" + prefix + " ");
    if (at == std::string::npos) return -1;
    return std::stod(text.substr(at + prefix.size() + 2));
  }

  testing::TempDir dir_;
  FakeClock clock_;
  std::unique_ptr<SchedulerServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Scheduler::Stub> users_;
  std::unique_ptr<v1::WorkerGateway::Stub> gateway_;
  std::string user_token_, worker_token_;
};

TEST_F(IntegrationTest, WholeLifeOfAJobWatchedInOrder) {
  StartServer();
  TestWorker worker(channel_);
  auto registered = worker.Connect("w1", CpuCaps());
  ASSERT_TRUE(registered.ok()) << registered.status();
  EXPECT_EQ(registered->heartbeat_interval_ms(), 2000);

  std::string id = Submit(Spec("life"));
  EXPECT_EQ(id, "j-000001");
  // A watcher that starts before the job runs and follows it to the end.
  std::pair<std::vector<v1::JobEvent>, grpc::Status> watched;
  std::thread watcher([&] { watched = Watch(id); });

  v1::Assignment a = worker.NextAssignment();
  EXPECT_EQ(a.job_id(), id);
  EXPECT_EQ(a.attempt(), 1);
  EXPECT_EQ(a.spec().precision(), v1::PRECISION_FP32);
  worker.Started(id, 1);
  for (int step = 1; step <= 3; ++step) worker.Report(id, 1, step);
  v1::WorkerMessage result;
  result.mutable_result()->set_job_id(id);
  result.mutable_result()->set_attempt(1);
  result.mutable_result()->set_outcome(v1::JOB_OUTCOME_SUCCEEDED);
  result.mutable_result()->add_stderr_tail("done");
  v1::Savings* s = result.mutable_result()->mutable_savings();
  s->set_precision(v1::PRECISION_FP32);
  s->set_baseline_step_seconds(0.2);
  s->set_step_seconds(0.2);
  worker.Send(result);
  watcher.join();

  ASSERT_TRUE(watched.second.ok()) << watched.second.error_message();
  std::vector<v1::JobEvent>& events = watched.first;
  ASSERT_EQ(events.size(), 8u);
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence(), static_cast<int64_t>(i + 1));
  }
  EXPECT_EQ(events[0].state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(events[1].state(), v1::JOB_STATE_ASSIGNED);
  EXPECT_EQ(events[2].state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(events[3].report().step(), 1);
  EXPECT_EQ(events[5].report().step(), 3);
  EXPECT_EQ(events[6].kind(), v1::JOB_EVENT_KIND_SAVINGS);
  EXPECT_EQ(events[7].state(), v1::JOB_STATE_SUCCEEDED);

  // Resuming after sequence 5 without reports: only what follows.
  auto resumed = Watch(id, 5, /*reports=*/false);
  ASSERT_TRUE(resumed.second.ok());
  ASSERT_EQ(resumed.first.size(), 2u);
  EXPECT_EQ(resumed.first[0].sequence(), 7);

  grpc::ClientContext context;
  v1::GetJobLogsRequest logs_request;
  logs_request.set_job_id(id);
  v1::GetJobLogsResponse logs;
  ASSERT_TRUE(users_->GetJobLogs(&context, logs_request, &logs).ok());
  ASSERT_EQ(logs.lines_size(), 1);
  EXPECT_EQ(logs.lines(0), "done");

  grpc::ClientContext missing_context;
  v1::GetJobRequest missing;
  missing.set_job_id("j-000099");
  v1::Job job;
  grpc::Status status = users_->GetJob(&missing_context, missing, &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(status.error_message(), "job j-000099 not found");
}

TEST_F(IntegrationTest, WorkerDropsMidJobAndASecondWorkerResumes) {
  StartServer();
  TestWorker w1(channel_);
  ASSERT_TRUE(w1.Connect("w1", CpuCaps()).ok());
  std::string id = Submit(Spec("drop"));
  ASSERT_EQ(w1.NextAssignment().attempt(), 1);
  w1.Started(id, 1);
  WaitState(id, v1::JOB_STATE_RUNNING);
  std::string blob(3 << 19, 'x');  // 1.5 MiB: more than one chunk back
  v1::UploadCheckpointResponse uploaded;
  ASSERT_TRUE(Upload(id, 1, 10, blob, Sha256Hex(blob),
                     static_cast<int64_t>(blob.size()), &uploaded)
                  .ok());
  EXPECT_EQ(uploaded.step(), 10);

  w1.Drop();
  // Within the grace period the job stays.
  clock_.Advance(absl::Seconds(10));
  server_->jobs()->Tick();
  EXPECT_EQ(Get(id).state(), v1::JOB_STATE_RUNNING);
  clock_.Advance(absl::Seconds(6));
  server_->jobs()->Tick();
  v1::Job job = Get(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(job.attempt(), 2);

  TestWorker w2(channel_);
  ASSERT_TRUE(w2.Connect("w2", CpuCaps()).ok());
  v1::Assignment a = w2.NextAssignment();
  EXPECT_EQ(a.job_id(), id);
  EXPECT_EQ(a.attempt(), 2);
  EXPECT_TRUE(a.has_checkpoint());
  EXPECT_EQ(a.checkpoint_step(), 10);
  v1::CheckpointChunk last;
  auto [data, status] = Download(id, &last);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(data, blob);
  EXPECT_EQ(last.sha256(), Sha256Hex(blob));
  EXPECT_EQ(last.total_bytes(), static_cast<int64_t>(blob.size()));

  // The first worker comes back late, still on attempt 1: its job is
  // listed as stale, its report rejected (counted) and answered by a
  // Cancel, its upload refused.
  TestWorker late(channel_);
  v1::RunningJob running;
  running.set_job_id(id);
  running.set_attempt(1);
  auto registered = late.Connect("w1", CpuCaps(), {running});
  ASSERT_TRUE(registered.ok());
  ASSERT_EQ(registered->stale_jobs_size(), 1);
  EXPECT_EQ(registered->stale_jobs(0).attempt(), 1);
  late.Report(id, 1, 11);
  auto cancel = late.NextOf(v1::SchedulerMessage::kCancel);
  ASSERT_TRUE(cancel.has_value());
  EXPECT_EQ(cancel->cancel().job_id(), id);
  EXPECT_EQ(cancel->cancel().attempt(), 1);
  EXPECT_EQ(Metric("halftime_stale_messages_total{kind=\"report\"}"), 1);
  EXPECT_EQ(
      Upload(id, 1, 12, "late", Sha256Hex("late"), 4, &uploaded).error_code(),
      grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Get(id).latest_report().step(), 0);

  w2.Started(id, 2);
  w2.Report(id, 2, 11);
  w2.Result(id, 2, v1::JOB_OUTCOME_SUCCEEDED);
  WaitState(id, v1::JOB_STATE_SUCCEEDED);
}

TEST_F(IntegrationTest, SchedulerRestartLosesNothingAndWorkerReattaches) {
  StartServer();
  std::string id;
  {
    TestWorker w1(channel_);
    ASSERT_TRUE(w1.Connect("w1", CpuCaps(2)).ok());
    id = Submit(Spec("restart"));
    w1.NextAssignment();
    w1.Started(id, 1);
    w1.Report(id, 1, 1);
    WaitFor(id, [](const v1::Job& j) { return j.latest_report().step() == 1; });
    StopServer();
    // The stream ends with the server.
    EXPECT_FALSE(w1.NextOf(v1::SchedulerMessage::kAssignment).has_value());
  }
  std::string queued_id;
  StartServer();
  v1::Job job = Get(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(job.latest_report().step(), 1);
  queued_id = Submit(Spec("after"));
  EXPECT_EQ(queued_id, "j-000002");

  TestWorker again(channel_);
  v1::RunningJob running;
  running.set_job_id(id);
  running.set_attempt(1);
  auto registered = again.Connect("w1", CpuCaps(2), {running});
  ASSERT_TRUE(registered.ok());
  EXPECT_EQ(registered->stale_jobs_size(), 0);
  EXPECT_EQ(again.NextAssignment().job_id(), queued_id);
  again.Report(id, 1, 2);
  again.Result(id, 1, v1::JOB_OUTCOME_SUCCEEDED);
  WaitState(id, v1::JOB_STATE_SUCCEEDED);
  auto [events, status] = Watch(id);
  ASSERT_TRUE(status.ok());
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence(), static_cast<int64_t>(i + 1));
  }
  EXPECT_EQ(events.back().state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(Get(id).attempt(), 1);
}

TEST_F(IntegrationTest, CancelARunningJobThroughItsWorker) {
  StartServer();
  TestWorker w1(channel_);
  ASSERT_TRUE(w1.Connect("w1", CpuCaps()).ok());
  std::string id = Submit(Spec("cancel"));
  w1.NextAssignment();
  w1.Started(id, 1);
  WaitState(id, v1::JOB_STATE_RUNNING);
  grpc::ClientContext context;
  v1::CancelJobRequest request;
  request.set_job_id(id);
  request.set_reason("changed my mind");
  v1::Job job;
  ASSERT_TRUE(users_->CancelJob(&context, request, &job).ok());
  auto cancel = w1.NextOf(v1::SchedulerMessage::kCancel);
  ASSERT_TRUE(cancel.has_value());
  EXPECT_EQ(cancel->cancel().reason(), "changed my mind");
  w1.Result(id, 1, v1::JOB_OUTCOME_CANCELLED);
  job = WaitState(id, v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(job.failure_reason(), "cancelled: changed my mind");
  grpc::ClientContext again;
  EXPECT_EQ(users_->CancelJob(&again, request, &job).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(IntegrationTest, CorruptCheckpointIsRejectedAndThePreviousKept) {
  StartServer();
  TestWorker w1(channel_);
  ASSERT_TRUE(w1.Connect("w1", CpuCaps()).ok());
  std::string id = Submit(Spec("ckpt"));
  w1.NextAssignment();
  w1.Started(id, 1);
  WaitState(id, v1::JOB_STATE_RUNNING);
  v1::CheckpointChunk last;
  EXPECT_EQ(Download(id, &last).second.error_code(),
            grpc::StatusCode::NOT_FOUND);
  v1::UploadCheckpointResponse response;
  ASSERT_TRUE(
      Upload(id, 1, 10, "good bytes", Sha256Hex("good bytes"), 10, &response)
          .ok());
  grpc::Status corrupt =
      Upload(id, 1, 20, "bad bytes!", Sha256Hex("bad bytes?"), 10, &response);
  EXPECT_EQ(corrupt.error_code(), grpc::StatusCode::DATA_LOSS);
  grpc::Status truncated =
      Upload(id, 1, 30, "short", Sha256Hex("short"), 99, &response);
  EXPECT_EQ(truncated.error_code(), grpc::StatusCode::DATA_LOSS);
  auto [data, status] = Download(id, &last);
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(data, "good bytes");
  EXPECT_EQ(last.step(), 10);
  EXPECT_EQ(
      Upload("j-000077", 1, 1, "x", Sha256Hex("x"), 1, &response).error_code(),
      grpc::StatusCode::NOT_FOUND);
}

TEST_F(IntegrationTest, TokensAreRequiredPerRole) {
  std::string tokens = dir_.path() + "/tokens";
  std::ofstream(tokens) << "user user-secret\nworker worker-secret\n";
  StartServer(tokens);
  v1::ListJobsRequest request;
  v1::ListJobsResponse response;
  {
    grpc::ClientContext context;
    EXPECT_EQ(users_->ListJobs(&context, request, &response).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    AddBearerToken(&context, "wrong");
    EXPECT_EQ(users_->ListJobs(&context, request, &response).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    AddBearerToken(&context, "worker-secret");
    EXPECT_EQ(users_->ListJobs(&context, request, &response).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    grpc::ClientContext context;
    AddBearerToken(&context, "user-secret");
    EXPECT_TRUE(users_->ListJobs(&context, request, &response).ok());
  }
  {
    TestWorker anonymous(channel_);
    auto r = anonymous.Connect("w", CpuCaps());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated);
    TestWorker as_user(channel_, "user-secret");
    r = as_user.Connect("w", CpuCaps());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied);
    TestWorker worker(channel_, "worker-secret");
    EXPECT_TRUE(worker.Connect("w", CpuCaps()).ok());
  }
  // Health checks stay open (HealthCheckRequest{} -> status SERVING).
  grpc::GenericStub generic(channel_);
  grpc::Slice empty("");
  grpc::ByteBuffer request_buffer(&empty, 1), reply;
  std::promise<grpc::Status> done;
  grpc::ClientContext context;
  generic.UnaryCall(&context, "/grpc.health.v1.Health/Check",
                    grpc::StubOptions(), &request_buffer, &reply,
                    [&](grpc::Status s) { done.set_value(s); });
  grpc::Status health = done.get_future().get();
  ASSERT_TRUE(health.ok()) << health.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(reply.Dump(&slices).ok());
  std::string bytes;
  for (const auto& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  EXPECT_EQ(bytes, std::string("\x08\x01"));
}

}  // namespace
}  // namespace halftime::server
