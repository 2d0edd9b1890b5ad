// A fake halftime-scheduler for CLI tests: a sync Scheduler service with
// canned jobs, workers, savings and logs, served in-process on a free
// localhost port. It records what the CLI sent (submits, watch resume
// points, authorization headers) and can misbehave on demand (break a watch
// stream, reject tokens, fail calls with a chosen status).
//
// Thread-safety: the service's fields are guarded by `mutex`; tests set them
// before running the CLI or under the lock.
#ifndef HALFTIME_TESTS_CLIENT_FAKE_SCHEDULER_H_
#define HALFTIME_TESTS_CLIENT_FAKE_SCHEDULER_H_

#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/spec.h"
#include "halftime/v1/scheduler.grpc.pb.h"

namespace halftime::testing {

inline google::protobuf::Timestamp SecondsAgo(int seconds) {
  return google::protobuf::util::TimeUtil::GetCurrentTime() -
         google::protobuf::util::TimeUtil::SecondsToDuration(seconds);
}

// A job as the scheduler would return it, spec loaded from examples/.
inline v1::Job MakeJob(const std::string& id, const std::string& spec_file,
                       v1::JobState state) {
  v1::Job job;
  job.set_id(id);
  absl::StatusOr<v1::JobSpec> spec = LoadJobSpecFile(spec_file);
  if (spec.ok()) *job.mutable_spec() = *spec;
  job.set_state(state);
  job.set_attempt(1);
  *job.mutable_submit_time() = SecondsAgo(300);
  if (state != v1::JOB_STATE_QUEUED) {
    job.set_worker("cpu-worker-1");
    job.set_resolved_precision(job.spec().precision());
    *job.mutable_start_time() = SecondsAgo(250);
    v1::TrainingReport* report = job.mutable_latest_report();
    report->set_step(state == v1::JOB_STATE_SUCCEEDED ? job.spec().steps()
                                                      : 120);
    report->set_total_steps(job.spec().steps());
    report->set_loss(2.3456);
    report->set_loss_scale(32768);
    report->set_skipped_steps(3);
    report->set_tokens_per_second(12345);
    report->set_step_seconds(0.25);
    report->set_peak_memory_bytes(int64_t{300} << 20);
    report->set_precision(job.spec().precision());
  } else {
    job.set_queue_reason("no worker runs bf16-mixed natively");
  }
  if (state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
      state == v1::JOB_STATE_CANCELLED) {
    *job.mutable_end_time() = SecondsAgo(10);
  }
  if (state == v1::JOB_STATE_FAILED) {
    job.set_failure_reason("loss scale stuck at min_scale for 10 steps");
  }
  return job;
}

inline v1::Savings MakeSavings() {
  v1::Savings savings;
  savings.set_precision(v1::PRECISION_BF16_MIXED);
  savings.set_baseline_step_seconds(0.45);
  savings.set_step_seconds(0.25);
  savings.set_speedup(1.8);
  savings.set_baseline_tokens_per_second(7000);
  savings.set_tokens_per_second(12600);
  savings.set_baseline_peak_memory_bytes(int64_t{800} << 20);
  savings.set_peak_memory_bytes(int64_t{500} << 20);
  savings.set_memory_saved_bytes(int64_t{300} << 20);
  savings.set_memory_saved_ratio(0.375);
  savings.set_device_seconds_saved(59.5);
  savings.set_probe_seconds(4.5);
  savings.set_cost_saved(0.0123);
  savings.set_device_hour_price(0.75);
  savings.set_device_name("Intel Xeon (avx512_bf16)");
  savings.set_baseline(v1::BASELINE_MODE_PROBE);
  return savings;
}

// The events of a whole run: queued, assigned, running, `steps` reports
// (overflow at step 3, a checkpoint after the middle step, eval loss at the
// end), savings, then the terminal `outcome`.
inline std::vector<v1::JobEvent> MakeRunEvents(const std::string& job_id,
                                               int steps,
                                               v1::JobState outcome) {
  std::vector<v1::JobEvent> events;
  auto add = [&](v1::JobEventKind kind, v1::JobState state) {
    v1::JobEvent& event = events.emplace_back();
    event.set_job_id(job_id);
    event.set_sequence(static_cast<int64_t>(events.size()));
    event.set_kind(kind);
    event.set_state(state);
    event.set_attempt(1);
    *event.mutable_time() = SecondsAgo(60);
    return &event;
  };
  add(v1::JOB_EVENT_KIND_STATE_CHANGED, v1::JOB_STATE_QUEUED);
  add(v1::JOB_EVENT_KIND_STATE_CHANGED, v1::JOB_STATE_ASSIGNED)
      ->set_worker("cpu-worker-1");
  add(v1::JOB_EVENT_KIND_STATE_CHANGED, v1::JOB_STATE_RUNNING)
      ->set_worker("cpu-worker-1");
  int64_t skipped = 0;
  for (int step = 1; step <= steps; ++step) {
    v1::JobEvent* event = add(v1::JOB_EVENT_KIND_REPORT, v1::JOB_STATE_RUNNING);
    v1::TrainingReport* report = event->mutable_report();
    report->set_step(step);
    report->set_total_steps(steps);
    report->set_loss(4.0 - 0.1 * step);
    report->set_overflow(step == 3);
    if (step == 3) ++skipped;
    report->set_skipped_steps(skipped);
    report->set_loss_scale(step >= 3 ? 32768 : 65536);
    report->set_tokens_per_second(12345);
    report->set_step_seconds(0.25);
    report->set_precision(v1::PRECISION_FP16_MIXED);
    report->set_attempt(1);
    if (step == steps) report->set_eval_loss(3.5);
    if (step == steps / 2) {
      v1::JobEvent* checkpoint =
          add(v1::JOB_EVENT_KIND_CHECKPOINT, v1::JOB_STATE_RUNNING);
      checkpoint->mutable_report()->set_step(step);
    }
  }
  if (outcome == v1::JOB_STATE_SUCCEEDED) {
    *add(v1::JOB_EVENT_KIND_SAVINGS, v1::JOB_STATE_RUNNING)->mutable_savings() =
        MakeSavings();
  }
  v1::JobEvent* end = add(v1::JOB_EVENT_KIND_STATE_CHANGED, outcome);
  if (outcome == v1::JOB_STATE_FAILED) {
    end->set_message("loss scale stuck at min_scale for 10 steps");
  }
  if (outcome == v1::JOB_STATE_CANCELLED) end->set_message("by alice");
  return events;
}

class FakeScheduler final : public v1::Scheduler::Service {
 public:
  std::mutex mutex;
  std::map<std::string, v1::Job> jobs;
  std::vector<std::string> job_order;  // Newest first.
  std::vector<v1::Worker> workers;
  v1::GetSavingsResponse fleet_savings;
  std::map<std::string, v1::Savings> job_savings;
  std::map<std::string, std::vector<std::string>> logs;
  std::map<std::string, std::vector<v1::JobEvent>> events;
  // First WatchJob call ends with UNAVAILABLE after this many events (0:
  // never).
  int break_watch_after = 0;
  // WatchJob waits for the client to go away after sending its events.
  bool hold_watch_open = false;
  // Each call fails with this status while set (e.g. UNAUTHENTICATED).
  grpc::Status forced_status = grpc::Status::OK;
  // Events each submitted job gets (job_id filled in), for submit --watch.
  std::vector<v1::JobEvent> submitted_job_events;
  // SubmitJob fails with UNAVAILABLE this many times first.
  int submit_unavailable_times = 0;
  // Non-empty: calls must carry "authorization: Bearer <required_token>".
  std::string required_token;

  // What the CLI sent.
  std::atomic<int> calls{0};
  std::vector<v1::SubmitJobRequest> submits;
  std::vector<int64_t> watch_after_sequences;
  std::vector<std::string> authorization_headers;
  std::vector<v1::ListJobsRequest> list_requests;
  std::vector<v1::CancelJobRequest> cancels;
  std::condition_variable watch_started;

  void AddJob(const v1::Job& job) {
    std::lock_guard<std::mutex> lock(mutex);
    jobs[job.id()] = job;
    job_order.insert(job_order.begin(), job.id());
  }

  grpc::Status SubmitJob(grpc::ServerContext* context,
                         const v1::SubmitJobRequest* request,
                         v1::SubmitJobResponse* response) override {
    std::lock_guard<std::mutex> lock(mutex);
    if (grpc::Status status = Admit(context); !status.ok()) return status;
    submits.push_back(*request);
    if (submit_unavailable_times > 0) {
      --submit_unavailable_times;
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "try again");
    }
    for (const auto& [id, key] : keys_) {
      if (key == request->idempotency_key()) {
        *response->mutable_job() = jobs[id];
        response->set_deduplicated(true);
        return grpc::Status::OK;
      }
    }
    v1::Job job;
    job.set_id(absl::StrFormat("j-%06d", static_cast<int>(jobs.size()) + 1));
    *job.mutable_spec() = request->spec();
    job.set_state(v1::JOB_STATE_QUEUED);
    job.set_attempt(1);
    *job.mutable_submit_time() = SecondsAgo(0);
    jobs[job.id()] = job;
    job_order.insert(job_order.begin(), job.id());
    keys_.emplace_back(job.id(), request->idempotency_key());
    for (v1::JobEvent event : submitted_job_events) {
      event.set_job_id(job.id());
      events[job.id()].push_back(event);
    }
    *response->mutable_job() = job;
    return grpc::Status::OK;
  }

  grpc::Status GetJob(grpc::ServerContext* context,
                      const v1::GetJobRequest* request,
                      v1::Job* response) override {
    std::lock_guard<std::mutex> lock(mutex);
    if (grpc::Status status = Admit(context); !status.ok()) return status;
    auto it = jobs.find(request->job_id());
    if (it == jobs.end()) return NotFound(request->job_id());
    *response = it->second;
    return grpc::Status::OK;
  }

  grpc::Status ListJobs(grpc::ServerContext* context,
                        const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override {
    std::lock_guard<std::mutex> lock(mutex);
    if (grpc::Status status = Admit(context); !status.ok()) return status;
    list_requests.push_back(*request);
    std::vector<const v1::Job*> matching;
    for (const std::string& id : job_order) {
      const v1::Job& job = jobs[id];
      bool wanted = request->states().empty();
      for (int state : request->states()) wanted |= job.state() == state;
      if (wanted) matching.push_back(&job);
    }
    std::size_t start =
        request->page_token().empty() ? 0 : std::stoul(request->page_token());
    const std::size_t size =
        request->page_size() > 0
            ? static_cast<std::size_t>(request->page_size())
            : 50;
    std::size_t end = std::min(matching.size(), start + size);
    for (std::size_t i = start; i < end; ++i) {
      *response->add_jobs() = *matching[i];
    }
    if (end < matching.size())
      response->set_next_page_token(std::to_string(end));
    return grpc::Status::OK;
  }

  grpc::Status CancelJob(grpc::ServerContext* context,
                         const v1::CancelJobRequest* request,
                         v1::Job* response) override {
    std::lock_guard<std::mutex> lock(mutex);
    if (grpc::Status status = Admit(context); !status.ok()) return status;
    cancels.push_back(*request);
    auto it = jobs.find(request->job_id());
    if (it == jobs.end()) return NotFound(request->job_id());
    v1::Job& job = it->second;
    if (job.state() == v1::JOB_STATE_SUCCEEDED ||
        job.state() == v1::JOB_STATE_FAILED ||
        job.state() == v1::JOB_STATE_CANCELLED) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          absl::StrCat("job ", job.id(), " is finished"));
    }
    if (job.state() == v1::JOB_STATE_QUEUED) {
      job.set_state(v1::JOB_STATE_CANCELLED);
      job.set_failure_reason(request->reason());
    }
    *response = job;
    return grpc::Status::OK;
  }

  grpc::Status WatchJob(grpc::ServerContext* context,
                        const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobEvent>* writer) override {
    std::vector<v1::JobEvent> to_send;
    bool break_stream = false;
    bool hold = false;
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (grpc::Status status = Admit(context); !status.ok()) return status;
      watch_after_sequences.push_back(request->after_sequence());
      if (jobs.count(request->job_id()) == 0)
        return NotFound(request->job_id());
      for (const v1::JobEvent& event : events[request->job_id()]) {
        if (event.sequence() <= request->after_sequence()) continue;
        if (!request->include_reports() &&
            event.kind() == v1::JOB_EVENT_KIND_REPORT) {
          continue;
        }
        to_send.push_back(event);
      }
      if (break_watch_after > 0 && watch_after_sequences.size() == 1) {
        break_stream = true;
        if (to_send.size() > static_cast<std::size_t>(break_watch_after)) {
          to_send.resize(static_cast<std::size_t>(break_watch_after));
        }
      }
      hold = hold_watch_open;
    }
    watch_started.notify_all();
    for (const v1::JobEvent& event : to_send) {
      if (!writer->Write(event)) return grpc::Status::CANCELLED;
    }
    if (break_stream) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "stream reset");
    }
    while (hold && !context->IsCancelled()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return grpc::Status::OK;
  }

  grpc::Status ListWorkers(grpc::ServerContext* context,
                           const v1::ListWorkersRequest* /*request*/,
                           v1::ListWorkersResponse* response) override {
    std::lock_guard<std::mutex> lock(mutex);
    if (grpc::Status status = Admit(context); !status.ok()) return status;
    for (const v1::Worker& worker : workers) *response->add_workers() = worker;
    return grpc::Status::OK;
  }

  grpc::Status GetSavings(grpc::ServerContext* context,
                          const v1::GetSavingsRequest* request,
                          v1::GetSavingsResponse* response) override {
    std::lock_guard<std::mutex> lock(mutex);
    if (grpc::Status status = Admit(context); !status.ok()) return status;
    if (request->job_id().empty()) {
      *response = fleet_savings;
      return grpc::Status::OK;
    }
    if (jobs.count(request->job_id()) == 0) return NotFound(request->job_id());
    auto it = job_savings.find(request->job_id());
    if (it != job_savings.end()) {
      *response->add_jobs() = it->second;
      response->add_job_ids(request->job_id());
    }
    response->set_currency("USD");
    return grpc::Status::OK;
  }

  grpc::Status GetJobLogs(grpc::ServerContext* context,
                          const v1::GetJobLogsRequest* request,
                          v1::GetJobLogsResponse* response) override {
    std::lock_guard<std::mutex> lock(mutex);
    if (grpc::Status status = Admit(context); !status.ok()) return status;
    if (jobs.count(request->job_id()) == 0) return NotFound(request->job_id());
    for (const std::string& line : logs[request->job_id()]) {
      response->add_lines(line);
    }
    return grpc::Status::OK;
  }

 private:
  // Counts the call, records its token and applies forced_status and
  // required_token. Requires mutex held.
  grpc::Status Admit(grpc::ServerContext* context) {
    ++calls;
    const auto& metadata = context->client_metadata();
    auto it = metadata.find("authorization");
    std::string header;
    if (it != metadata.end())
      header.assign(it->second.data(), it->second.size());
    authorization_headers.push_back(header);
    if (!required_token.empty() && header != "Bearer " + required_token) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "unknown bearer token");
    }
    return forced_status;
  }

  static grpc::Status NotFound(const std::string& id) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("job ", id, " does not exist"));
  }

  std::vector<std::pair<std::string, std::string>> keys_;
};

// Serves `service` on 127.0.0.1 at a free port until destroyed.
class FakeServer {
 public:
  explicit FakeServer(grpc::Service* service,
                      std::shared_ptr<grpc::ServerCredentials> credentials =
                          grpc::InsecureServerCredentials()) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", credentials, &port_);
    builder.RegisterService(service);
    server_ = builder.BuildAndStart();
  }

  ~FakeServer() {
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(1));
  }

  int port() const { return port_; }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

// A localhost port nothing listens on (bound, then released).
inline int ClosedPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

}  // namespace halftime::testing

#endif  // HALFTIME_TESTS_CLIENT_FAKE_SCHEDULER_H_
