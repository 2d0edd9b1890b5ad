// libFuzzer target: the WorkerGateway of a real scheduler in the process.
//
// One scheduler per process (state carries over between inputs). An input
// is a GatewayScript (see fuzz_input.proto): a worker's Connect stream
// (register, heartbeats, started, reports, results with fuzzed fields, or
// raw bytes), checkpoint uploads and downloads, and a user submitting and
// cancelling the jobs the worker gets. Steps can refer to the assignments
// received so far, so the fuzzer reaches running jobs with their current
// attempt. Inputs starting with '#' are text protos (the seeds in
// corpus/fuzz_worker_gateway/); other inputs that do not parse as a
// GatewayScript are sent as raw messages after a valid register.
//
// Every status (of the stream, of each upload, download, submit and cancel)
// must be clean (see Unclean in harness.h), and unary calls must answer
// before their deadline.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "server/checkpoints.h"
#include "tests/fuzz/harness.h"

namespace {

namespace v1 = halftime::v1;
using halftime::fuzz::GatewayStep;
using halftime::fuzz::RawConnect;

constexpr size_t kMaxSteps = 32;
constexpr absl::Duration kDeadline = absl::Seconds(20);
constexpr int kJanitorPeriod = 200;

halftime::fuzz::TestScheduler& Scheduler() {
  static halftime::fuzz::TestScheduler* scheduler = [] {
    halftime::server::ServerOptions options;
    options.durable = false;
    // Short leases so jobs of workers that hung up are requeued (and
    // retried, and failed) while the fuzzer runs.
    options.lease_grace = absl::Seconds(2);
    options.heartbeat_interval = absl::Milliseconds(500);
    options.tick_interval = absl::Milliseconds(50);
    return &halftime::fuzz::StartForever(options);
  }();
  return *scheduler;
}

grpc::Channel* Channel() {
  // Over loopback TCP: with gRPC 1.51 every in-process bidi stream keeps
  // ~16 KB after it ended (over TCP nothing grows), which would exhaust
  // memory in a long run.
  static std::shared_ptr<grpc::Channel> channel = Scheduler().TcpChannel();
  return channel.get();
}

// HALFTIME_FUZZ_VERBOSE=1 prints every status (to see what seeds reach).
bool Verbose() {
  static const bool verbose = std::getenv("HALFTIME_FUZZ_VERBOSE") != nullptr;
  return verbose;
}

void Check(const char* what, const grpc::Status& status) {
  if (Verbose()) {
    std::fprintf(stderr, "%s: %d %s\n", what, status.error_code(),
                 status.error_message().c_str());
  }
  std::string why = halftime::fuzz::Unclean(status);
  if (why.empty() &&
      status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    why = "no answer within the deadline";
  }
  if (!why.empty()) {
    std::fprintf(stderr, "fuzz_worker_gateway: %s: %s\n", what, why.c_str());
    std::abort();
  }
}

// One input's worker session.
class Session {
 public:
  ~Session() { HangUp(); }

  void Run(const GatewayStep& step) {
    switch (step.step_case()) {
      case GatewayStep::kSend:
        Send(step);
        break;
      case GatewayStep::kUpload:
        Upload(step);
        break;
      case GatewayStep::kSubmit: {
        v1::SubmitJobRequest request;
        *request.mutable_spec() = step.submit();
        Unary(halftime::fuzz::SUBMIT_JOB, request.SerializeAsString());
        break;
      }
      case GatewayStep::kCancel: {
        v1::CancelJobRequest request;
        request.set_job_id(Reference(step).job_id());
        request.set_reason("fuzz");
        Unary(halftime::fuzz::CANCEL_JOB, request.SerializeAsString());
        break;
      }
      case GatewayStep::kWaitMs:
        if (connect_ != nullptr) {
          connect_->WaitFor(connect_->Received().size(),
                            absl::Milliseconds(std::min(step.wait_ms(), 50u)));
        }
        break;
      case GatewayStep::kDownload: {
        v1::DownloadCheckpointRequest request;
        request.set_job_id(Reference(step).job_id());
        Check("DownloadCheckpoint",
              halftime::fuzz::Download(Channel(), request.SerializeAsString(),
                                       kDeadline)
                  .first);
        break;
      }
      case GatewayStep::kHangUp:
        HangUp();
        break;
      default:
        break;
    }
  }

  // Sends `bytes` on the stream, opening it first.
  void SendBytes(const std::string& bytes, bool is_register) {
    if (connect_ == nullptr) {
      connect_ = std::make_unique<RawConnect>(Channel(), kDeadline);
    }
    size_t before = connect_->Received().size();
    connect_->Send(bytes);
    // The answer to a register (and the first assignments) come at once.
    if (is_register) connect_->WaitFor(before, absl::Milliseconds(200));
    if (Verbose()) {
      for (const v1::SchedulerMessage& m : connect_->Received()) {
        std::fprintf(stderr, "  received %s\n", m.ShortDebugString().c_str());
      }
    }
  }

  void HangUp() {
    if (connect_ == nullptr) return;
    Remember();
    Check("Connect", connect_->HangUp());
    connect_.reset();
  }

 private:
  // Adds the assignments received on the stream to assignments_.
  void Remember() {
    if (connect_ == nullptr) return;
    std::vector<v1::SchedulerMessage> received = connect_->Received();
    for (size_t i = seen_; i < received.size(); ++i) {
      if (received[i].has_assignment()) {
        v1::RunningJob job;
        job.set_job_id(received[i].assignment().job_id());
        job.set_attempt(received[i].assignment().attempt());
        assignments_.push_back(job);
      }
    }
    seen_ = received.size();
  }

  // The job (and attempt) a step refers to; the empty job when it refers
  // to none or nothing was assigned yet.
  v1::RunningJob Reference(const GatewayStep& step) {
    Remember();
    v1::RunningJob job;
    if (step.assignment() == 0 || assignments_.empty()) return job;
    job = assignments_[(step.assignment() - 1) % assignments_.size()];
    job.set_attempt(job.attempt() + step.attempt_delta());
    return job;
  }

  void Send(const GatewayStep& step) {
    const halftime::fuzz::ConnectMessage& send = step.send();
    if (send.kind_case() == halftime::fuzz::ConnectMessage::kRaw) {
      SendBytes(send.raw(), false);
      return;
    }
    v1::WorkerMessage m = send.message();
    if (step.assignment() > 0) {
      v1::RunningJob job = Reference(step);
      switch (m.kind_case()) {
        case v1::WorkerMessage::kReport:
          m.mutable_report()->set_job_id(job.job_id());
          m.mutable_report()->set_attempt(job.attempt());
          break;
        case v1::WorkerMessage::kResult:
          m.mutable_result()->set_job_id(job.job_id());
          m.mutable_result()->set_attempt(job.attempt());
          break;
        case v1::WorkerMessage::kStarted:
          m.mutable_started()->set_job_id(job.job_id());
          m.mutable_started()->set_attempt(job.attempt());
          break;
        case v1::WorkerMessage::kHeartbeat:
          *m.mutable_heartbeat()->add_running_jobs() = job;
          break;
        case v1::WorkerMessage::kRegister:
          *m.mutable_register_()->add_running_jobs() = job;
          break;
        default:
          break;
      }
    }
    SendBytes(m.SerializeAsString(), m.has_register_());
  }

  void Upload(const GatewayStep& step) {
    halftime::fuzz::Upload upload = step.upload();
    if (step.assignment() > 0) {
      v1::RunningJob job = Reference(step);
      if (upload.chunks().empty()) upload.add_chunks();
      upload.mutable_chunks(0)->set_job_id(job.job_id());
      upload.mutable_chunks(0)->set_attempt(job.attempt());
    }
    if (upload.seal()) {
      if (upload.chunks().empty()) upload.add_chunks();
      std::string all;
      for (const auto& chunk : upload.chunks()) all += chunk.data();
      v1::CheckpointChunk* last =
          upload.mutable_chunks(upload.chunks_size() - 1);
      last->set_sha256(halftime::server::Sha256Hex(all));
      last->set_total_bytes(static_cast<int64_t>(all.size()));
    }
    std::vector<std::string> chunks;
    for (const auto& chunk : upload.chunks()) {
      chunks.push_back(chunk.SerializeAsString());
    }
    for (const std::string& raw : upload.raw_chunks()) chunks.push_back(raw);
    v1::UploadCheckpointResponse response;
    Check("UploadCheckpoint",
          halftime::fuzz::UploadRaw(Channel(), chunks, kDeadline, &response));
  }

  void Unary(halftime::fuzz::SchedulerMethod method,
             const std::string& request) {
    Check(halftime::fuzz::MethodName(method),
          halftime::fuzz::CallScheduler(Channel(), method, request, kDeadline)
              .status);
  }

  std::unique_ptr<RawConnect> connect_;
  size_t seen_ = 0;
  std::vector<v1::RunningJob> assignments_;
};

// Cancels every active job, so the queue stays small.
void Janitor() {
  v1::ListJobsRequest list;
  list.add_states(v1::JOB_STATE_QUEUED);
  list.add_states(v1::JOB_STATE_ASSIGNED);
  list.add_states(v1::JOB_STATE_RUNNING);
  list.set_page_size(1000);
  auto r = halftime::fuzz::CallScheduler(Channel(), halftime::fuzz::LIST_JOBS,
                                         list.SerializeAsString(), kDeadline);
  v1::ListJobsResponse jobs;
  if (!r.status.ok() || !jobs.ParseFromString(r.first)) return;
  for (const v1::Job& job : jobs.jobs()) {
    v1::CancelJobRequest cancel;
    cancel.set_job_id(job.id());
    cancel.set_reason("fuzz janitor");
    halftime::fuzz::CallScheduler(Channel(), halftime::fuzz::CANCEL_JOB,
                                  cancel.SerializeAsString(), kDeadline);
  }
}

// Inputs that are not a GatewayScript: a valid register, then the input
// cut into raw messages ([length byte][bytes]...).
void RunRaw(const uint8_t* data, size_t size) {
  Session session;
  v1::WorkerMessage hello;
  hello.mutable_register_()->set_name("fuzz-raw");
  hello.mutable_register_()->mutable_capabilities()->set_device_kind(
      v1::DEVICE_KIND_CPU);
  hello.mutable_register_()->mutable_capabilities()->set_slots(1);
  session.SendBytes(hello.SerializeAsString(), true);
  size_t at = 0;
  for (size_t n = 0; at < size && n < kMaxSteps; ++n) {
    size_t length = data[at++];
    length = std::min(length, size - at);
    session.SendBytes(
        std::string(reinterpret_cast<const char*>(data + at), length), false);
    at += length;
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  halftime::fuzz::InitStatefulServerFuzzer(argc, argv);
  Scheduler();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static int inputs = 0;
  if (++inputs % kJanitorPeriod == 0) Janitor();
  halftime::fuzz::GatewayScript script;
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  const bool parsed = size > 0 && data[0] == '#'
                          ? halftime::fuzz::ParseTextQuietly(text, &script)
                          : script.ParseFromArray(data, static_cast<int>(size));
  if (!parsed) {
    if (size > 0 && data[0] == '#') return 0;
    RunRaw(data, size);
    return 0;
  }
  Session session;
  int n = 0;
  for (const GatewayStep& step : script.steps()) {
    if (n++ == static_cast<int>(kMaxSteps)) break;
    session.Run(step);
  }
  return 0;
}
