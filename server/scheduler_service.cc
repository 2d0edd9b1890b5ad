#include "server/scheduler_service.h"

#include <atomic>
#include <deque>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/spec.h"
#include "common/status.h"
#include "server/request_checks.h"

namespace halftime::server {
namespace {

// Events read per ReadEvents call of a watch.
constexpr int kWatchBatch = 128;

// Finishes a unary reactor with a StatusOr: the value goes to `response`.
// Finishes `reactor` with `status` unless it is OK; true when it did, so a
// handler returns.
bool Refused(grpc::ServerUnaryReactor* reactor, const absl::Status& status) {
  if (status.ok()) return false;
  reactor->Finish(ToGrpcStatus(status));
  return true;
}

template <typename T>
void FinishWith(grpc::ServerUnaryReactor* reactor, absl::StatusOr<T> result,
                T* response) {
  if (result.ok()) *response = *std::move(result);
  reactor->Finish(ToGrpcStatus(result.status()));
}

// Streams a job's durable events; woken by the JobManager when more become
// durable. Deletes itself after OnDone (reference counted, so a wake-up in
// flight keeps it alive).
class WatchReactor : public grpc::ServerWriteReactor<v1::JobEvent> {
 public:
  WatchReactor(JobManager* jobs, std::string job_id, int64_t after,
               bool include_reports)
      : jobs_(jobs),
        job_id_(std::move(job_id)),
        next_after_(after),
        include_reports_(include_reports) {}

  // Subscribes and sends what is there; or finishes with `error`.
  void Start(const absl::Status& error) {
    if (!error.ok()) {
      FinishOnce(ToGrpcStatus(error));
      return;
    }
    listener_ = std::make_shared<Listener>(this);
    absl::StatusOr<uint64_t> subscription = jobs_->Watch(job_id_, listener_);
    if (!subscription.ok()) {
      FinishOnce(ToGrpcStatus(subscription.status()));
      return;
    }
    subscription_ = *subscription;
    Pump();
  }

  void OnWriteDone(bool ok) override ABSL_LOCKS_EXCLUDED(mu_) {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        FinishLocked(
            grpc::Status(grpc::StatusCode::CANCELLED, "watcher went away"));
        return;
      }
    }
    Pump();
  }

  void OnCancel() override ABSL_LOCKS_EXCLUDED(mu_) {
    FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled"));
  }

  void OnDone() override {
    if (subscription_ != 0) jobs_->Unwatch(job_id_, subscription_);
    if (listener_ != nullptr) listener_->Detach();
    Unref();
  }

 private:
  class Listener : public EventListener {
   public:
    explicit Listener(WatchReactor* reactor) : reactor_(reactor) {}
    void OnEvents() override ABSL_LOCKS_EXCLUDED(mu_) {
      WatchReactor* reactor;
      {
        absl::MutexLock lock(&mu_);
        reactor = reactor_;
        if (reactor != nullptr) reactor->Ref();
      }
      if (reactor == nullptr) return;
      reactor->Pump();
      reactor->Unref();
    }
    void Detach() ABSL_LOCKS_EXCLUDED(mu_) {
      absl::MutexLock lock(&mu_);
      reactor_ = nullptr;
    }

   private:
    absl::Mutex mu_;
    WatchReactor* reactor_ ABSL_GUARDED_BY(mu_);
  };

  void Ref() { refs_.fetch_add(1); }
  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

  void FinishOnce(const grpc::Status& status) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    FinishLocked(status);
  }

  void FinishLocked(const grpc::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  // Writes the next event when no write is in flight; finishes at the end.
  // Events of an archived job come from the store, read under mu_ on the
  // calling (reactor or commit) thread: the one place a watch blocks on I/O.
  void Pump() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    while (!finished_ && !writing_) {
      if (buffer_.empty()) {
        absl::StatusOr<JobManager::EventBatch> batch =
            jobs_->ReadEvents(job_id_, next_after_, kWatchBatch);
        if (!batch.ok()) {
          FinishLocked(ToGrpcStatus(batch.status()));
          return;
        }
        if (batch->events.empty()) {
          if (batch->end) FinishLocked(grpc::Status::OK);
          return;  // woken when more events are durable
        }
        for (v1::JobEvent& event : batch->events) {
          next_after_ = event.sequence();
          if (!include_reports_ && event.kind() == v1::JOB_EVENT_KIND_REPORT) {
            continue;
          }
          buffer_.push_back(std::move(event));
        }
        continue;
      }
      current_ = std::move(buffer_.front());
      buffer_.pop_front();
      writing_ = true;
      StartWrite(&current_);
    }
  }

  JobManager* const jobs_;
  const std::string job_id_;
  std::shared_ptr<Listener> listener_;
  uint64_t subscription_ = 0;
  std::atomic<int> refs_{1};

  absl::Mutex mu_;
  int64_t next_after_ ABSL_GUARDED_BY(mu_);
  const bool include_reports_;
  std::deque<v1::JobEvent> buffer_ ABSL_GUARDED_BY(mu_);
  v1::JobEvent current_ ABSL_GUARDED_BY(mu_);  // in flight
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

grpc::ServerUnaryReactor* SchedulerService::SubmitJob(
    grpc::CallbackServerContext* context, const v1::SubmitJobRequest* request,
    v1::SubmitJobResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (Refused(reactor, auth_->Check(*context, auth::Role::kUser)))
    return reactor;
  auto done = [reactor, response](absl::StatusOr<v1::SubmitJobResponse> r) {
    FinishWith(reactor, std::move(r), response);
  };
  // The one validation of the spec in the scheduler.
  absl::StatusOr<v1::JobSpec> spec = CheckSubmitRequest(*request);
  if (!spec.ok()) {
    reactor->Finish(ToGrpcStatus(spec.status()));
    return reactor;
  }
  jobs_->SubmitJob(*std::move(spec), request->idempotency_key(),
                   std::move(done));
  return reactor;
}

grpc::ServerUnaryReactor* SchedulerService::GetJob(
    grpc::CallbackServerContext* context, const v1::GetJobRequest* request,
    v1::Job* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (Refused(reactor, auth_->Check(*context, auth::Role::kUser)))
    return reactor;
  if (Refused(reactor, CheckJobIdArgument("job_id", request->job_id())))
    return reactor;
  FinishWith(reactor, jobs_->GetJob(request->job_id()), response);
  return reactor;
}

grpc::ServerUnaryReactor* SchedulerService::ListJobs(
    grpc::CallbackServerContext* context, const v1::ListJobsRequest* request,
    v1::ListJobsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (Refused(reactor, auth_->Check(*context, auth::Role::kUser)))
    return reactor;
  FinishWith(reactor, jobs_->ListJobs(*request), response);
  return reactor;
}

grpc::ServerUnaryReactor* SchedulerService::CancelJob(
    grpc::CallbackServerContext* context, const v1::CancelJobRequest* request,
    v1::Job* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (Refused(reactor, auth_->Check(*context, auth::Role::kUser)))
    return reactor;
  absl::Status s = CheckJobIdArgument("job_id", request->job_id());
  if (s.ok() && request->reason().size() > kMaxReasonBytes) {
    s = absl::InvalidArgumentError(
        absl::StrCat("reason: ", request->reason().size(),
                     " bytes long; the limit is ", kMaxReasonBytes));
  }
  if (Refused(reactor, s)) return reactor;
  jobs_->CancelJob(request->job_id(), request->reason(),
                   [reactor, response](absl::StatusOr<v1::Job> r) {
                     FinishWith(reactor, std::move(r), response);
                   });
  return reactor;
}

grpc::ServerWriteReactor<v1::JobEvent>* SchedulerService::WatchJob(
    grpc::CallbackServerContext* context, const v1::WatchJobRequest* request) {
  auto* reactor =
      new WatchReactor(jobs_, request->job_id(), request->after_sequence(),
                       request->include_reports());
  absl::Status error = auth_->Check(*context, auth::Role::kUser);
  if (error.ok()) error = CheckJobIdArgument("job_id", request->job_id());
  if (error.ok() && request->after_sequence() < 0) {
    error = absl::InvalidArgumentError("after_sequence: must not be negative");
  }
  reactor->Start(error);
  return reactor;
}

grpc::ServerUnaryReactor* SchedulerService::ListWorkers(
    grpc::CallbackServerContext* context,
    const v1::ListWorkersRequest* /*request*/,
    v1::ListWorkersResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (Refused(reactor, auth_->Check(*context, auth::Role::kUser)))
    return reactor;
  *response = jobs_->ListWorkers();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* SchedulerService::GetSavings(
    grpc::CallbackServerContext* context, const v1::GetSavingsRequest* request,
    v1::GetSavingsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (Refused(reactor, auth_->Check(*context, auth::Role::kUser)))
    return reactor;
  // An empty id asks for the fleet's totals.
  if (!request->job_id().empty()) {
    if (Refused(reactor, CheckJobIdArgument("job_id", request->job_id())))
      return reactor;
  }
  FinishWith(reactor, jobs_->GetSavings(request->job_id()), response);
  return reactor;
}

grpc::ServerUnaryReactor* SchedulerService::GetJobLogs(
    grpc::CallbackServerContext* context, const v1::GetJobLogsRequest* request,
    v1::GetJobLogsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (Refused(reactor, auth_->Check(*context, auth::Role::kUser)))
    return reactor;
  if (Refused(reactor, CheckJobIdArgument("job_id", request->job_id())))
    return reactor;
  FinishWith(reactor, jobs_->GetJobLogs(request->job_id()), response);
  return reactor;
}

}  // namespace halftime::server
