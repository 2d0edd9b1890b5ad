#include "server/worker_gateway_service.h"

#include <atomic>
#include <deque>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status.h"
#include "server/request_checks.h"

namespace halftime::server {
namespace {

// One worker's Connect stream. Reference counted: the JobManager reaches it
// through a Session (WorkerSink) that may outlive it.
class ConnectReactor
    : public grpc::ServerBidiReactor<v1::WorkerMessage, v1::SchedulerMessage> {
 public:
  explicit ConnectReactor(JobManager* jobs) : jobs_(jobs) {}

  void Start(const absl::Status& error) {
    if (!error.ok()) {
      Close(ToGrpcStatus(error));
      return;
    }
    session_ = std::make_shared<Session>(this);
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      if (session_id_ == 0) {
        // Nothing registered: the worker hung up at once, or its first
        // message did not parse (both end the read side alike).
        Close(ToGrpcStatus(absl::InvalidArgumentError(
            "the first message of Connect must be register; the stream "
            "ended, or its first message was not a valid WorkerMessage")));
        return;
      }
      Disconnect();
      Close(grpc::Status::OK);
      return;
    }
    if (Handle()) StartRead(&in_);
  }

  void OnWriteDone(bool ok) override ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    out_.pop_front();
    if (ok && !out_.empty()) {
      StartWrite(&out_.front());
      return;
    }
    writing_ = false;
    if (!ok) out_.clear();
    if (finish_pending_) {
      finish_pending_ = false;
      Finish(pending_status_);
    }
  }

  void OnDone() override {
    Disconnect();
    if (session_ != nullptr) session_->Detach();
    Unref();
  }

 private:
  // The JobManager's handle on this stream.
  class Session : public WorkerSink {
   public:
    explicit Session(ConnectReactor* reactor) : reactor_(reactor) {}
    // Each takes mu_ and then the reactor's: mu_ is acquired before it.
    void Send(const v1::SchedulerMessage& message) override
        ABSL_LOCKS_EXCLUDED(mu_) {
      absl::MutexLock lock(&mu_);
      if (reactor_ != nullptr) reactor_->Enqueue(message);
    }
    void Close(const absl::Status& status) override ABSL_LOCKS_EXCLUDED(mu_) {
      absl::MutexLock lock(&mu_);
      if (reactor_ != nullptr) reactor_->Close(ToGrpcStatus(status));
    }
    void Detach() ABSL_LOCKS_EXCLUDED(mu_) {
      absl::MutexLock lock(&mu_);
      reactor_ = nullptr;
    }

   private:
    absl::Mutex mu_;
    ConnectReactor* reactor_ ABSL_GUARDED_BY(mu_);  // null after OnDone
  };

  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

  // Dispatches in_; false when the stream was finished.
  bool Handle() {
    if (session_id_ == 0) {
      if (in_.kind_case() != v1::WorkerMessage::kRegister) {
        Close(ToGrpcStatus(absl::InvalidArgumentError(
            "the first message of Connect must be register")));
        return false;
      }
      name_ = in_.register_().name();
      absl::StatusOr<uint64_t> session =
          jobs_->RegisterWorker(in_.register_(), session_);
      if (!session.ok()) {
        Close(ToGrpcStatus(session.status()));
        return false;
      }
      session_id_ = *session;
      return true;
    }
    absl::Status status;
    switch (in_.kind_case()) {
      case v1::WorkerMessage::kHeartbeat:
        jobs_->Heartbeat(name_, session_id_, in_.heartbeat());
        break;
      case v1::WorkerMessage::kReport:
        status = jobs_->Report(name_, session_id_, in_.report());
        break;
      case v1::WorkerMessage::kResult:
        status = jobs_->Result(name_, session_id_, in_.result());
        break;
      case v1::WorkerMessage::kStarted:
        status = jobs_->JobStarted(name_, session_id_, in_.started());
        break;
      case v1::WorkerMessage::kRegister:
        Close(ToGrpcStatus(absl::InvalidArgumentError(
            "register: sent twice on one Connect stream")));
        return false;
      default:
        break;  // unknown kinds (newer workers) are ignored
    }
    // Rejected messages (stale attempts) are counted and logged by the
    // JobManager; they do not end the stream.
    (void)status;
    return true;
  }

  // Tells the JobManager once that the stream ended.
  void Disconnect() {
    if (session_id_ != 0 && !disconnected_.exchange(true)) {
      jobs_->WorkerDisconnected(name_, session_id_);
    }
  }

  void Enqueue(const v1::SchedulerMessage& message) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (closed_) return;
    out_.push_back(message);
    if (!writing_) {
      writing_ = true;
      StartWrite(&out_.front());
    }
  }

  void Close(const grpc::Status& status) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (closed_) return;
    closed_ = true;
    if (writing_) {
      finish_pending_ = true;
      pending_status_ = status;
    } else {
      Finish(status);
    }
  }

  JobManager* const jobs_;
  std::shared_ptr<Session> session_;
  std::atomic<int> refs_{1};
  // Read side: touched only by the reaction that owns the pending read.
  v1::WorkerMessage in_;
  std::string name_;
  uint64_t session_id_ = 0;
  std::atomic<bool> disconnected_{false};

  absl::Mutex mu_;
  std::deque<v1::SchedulerMessage> out_
      ABSL_GUARDED_BY(mu_);  // front in flight
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_pending_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status pending_status_ ABSL_GUARDED_BY(mu_);
};

// Receives a checkpoint; file writes run on the executor.
class UploadReactor : public grpc::ServerReadReactor<v1::CheckpointChunk> {
 public:
  UploadReactor(JobManager* jobs, CheckpointFiles* files, Executor* executor,
                Logger* logger, v1::UploadCheckpointResponse* response)
      : jobs_(jobs),
        files_(files),
        executor_(executor),
        logger_(logger),
        response_(response) {}

  void Start(const absl::Status& error) {
    if (!error.ok()) {
      Finish(ToGrpcStatus(error));
      return;
    }
    StartRead(&chunk_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      if (upload_ == nullptr) {
        Fail(absl::InvalidArgumentError(
            "upload: no chunks (the first carries job_id, attempt, step)"));
      } else if (!have_end_) {
        Fail(absl::DataLossError(absl::StrCat(
            "checkpoint of ", job_id_,
            " is truncated: the stream ended without sha256/total_bytes")));
      } else {
        executor_->Post([this] { Complete(); });
      }
      return;
    }
    if (have_end_) {
      Fail(absl::InvalidArgumentError(
          "upload: chunk after the one carrying sha256"));
      return;
    }
    if (static_cast<int64_t>(chunk_.data().size()) > kMaxCheckpointChunkBytes) {
      Fail(absl::InvalidArgumentError("data: chunk larger than 1 MiB"));
      return;
    }
    if (!chunk_.sha256().empty()) {
      have_end_ = true;
      sha256_ = chunk_.sha256();
      total_bytes_ = chunk_.total_bytes();
    }
    bool first = !started_;
    if (first) {
      started_ = true;
      job_id_ = chunk_.job_id();
      if (job_id_.empty()) {
        Fail(absl::InvalidArgumentError("job_id: required in the first chunk"));
        return;
      }
      if (absl::Status s = CheckJobIdArgument("job_id", job_id_); !s.ok()) {
        Fail(s);
        return;
      }
      if (chunk_.step() < 0) {
        Fail(absl::InvalidArgumentError("step: must not be negative"));
        return;
      }
      if (absl::Status s = jobs_->CheckUpload(job_id_, chunk_.attempt());
          !s.ok()) {
        Fail(s);
        return;
      }
    }
    executor_->Post([this, first] {
      if (first) {
        absl::StatusOr<std::unique_ptr<CheckpointUpload>> upload =
            files_->BeginUpload(job_id_, chunk_.attempt(), chunk_.step());
        if (!upload.ok()) {
          Fail(upload.status());
          return;
        }
        upload_ = *std::move(upload);
      }
      if (absl::Status s = upload_->Write(chunk_.data()); !s.ok()) {
        Fail(s);
        return;
      }
      StartRead(&chunk_);
    });
  }

  void OnDone() override { delete this; }

 private:
  void Fail(const absl::Status& status) {
    if (logger_->enabled()) {
      logger_->Log("checkpoint_rejected",
                   {{"job", job_id_},
                    {"code", absl::StatusCodeToString(status.code())},
                    {"error", std::string(status.message())}});
    }
    upload_.reset();  // removes the temporary file
    Finish(ToGrpcStatus(status));
  }

  // Runs on the executor: verify, fsync, rename, record.
  void Complete() {
    absl::StatusOr<CheckpointRecord> record =
        upload_->Finish(sha256_, total_bytes_);
    if (!record.ok()) {
      Fail(record.status());
      return;
    }
    upload_.reset();
    jobs_->RecordCheckpoint(
        *record, [this, record = *record](absl::Status status) {
          if (!status.ok()) {
            files_->Remove(record.path);
            Fail(status);
            return;
          }
          response_->set_step(record.step);
          response_->set_bytes(record.bytes);
          if (logger_->enabled()) {
            logger_->Log("checkpoint_stored",
                         {{"job", record.job_id},
                          {"attempt", absl::StrCat(record.attempt)},
                          {"step", absl::StrCat(record.step)},
                          {"bytes", absl::StrCat(record.bytes)}});
          }
          Finish(grpc::Status::OK);
        });
  }

  JobManager* const jobs_;
  CheckpointFiles* const files_;
  Executor* const executor_;
  Logger* const logger_;
  v1::UploadCheckpointResponse* const response_;
  // Only one of: a reaction or an executor task, runs at a time.
  v1::CheckpointChunk chunk_;
  std::unique_ptr<CheckpointUpload> upload_;
  std::string job_id_;
  bool started_ = false;
  bool have_end_ = false;
  std::string sha256_;
  int64_t total_bytes_ = 0;
};

// Sends a job's latest checkpoint; file reads run on the executor. The file
// is verified against its record as it is read (CheckpointReader): a
// corrupt one ends the stream with DATA_LOSS instead of its last chunk, so
// the worker never resumes from it.
class DownloadReactor : public grpc::ServerWriteReactor<v1::CheckpointChunk> {
 public:
  DownloadReactor(Executor* executor, Logger* logger)
      : executor_(executor), logger_(logger) {}

  void Start(const absl::StatusOr<CheckpointRecord>& record) {
    if (!record.ok()) {
      Finish(ToGrpcStatus(record.status()));
      return;
    }
    executor_->Post([this, record = *record] {
      absl::StatusOr<std::unique_ptr<CheckpointReader>> reader =
          CheckpointReader::Open(record);
      if (!reader.ok()) {
        Fail(record, reader.status());
        return;
      }
      reader_ = *std::move(reader);
      SendNext();
    });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "download aborted"));
      return;
    }
    if (last_) {
      Finish(grpc::Status::OK);
      return;
    }
    executor_->Post([this] { SendNext(); });
  }

  void OnDone() override { delete this; }

 private:
  void Fail(const CheckpointRecord& record, const absl::Status& status) {
    if (logger_->enabled()) {
      logger_->Log("checkpoint_unusable",
                   {{"job", record.job_id},
                    {"step", absl::StrCat(record.step)},
                    {"path", record.path},
                    {"error", std::string(status.message())}});
    }
    Finish(ToGrpcStatus(status));
  }

  // Runs on the executor.
  void SendNext() {
    chunk_.Clear();
    const CheckpointRecord& record = reader_->record();
    if (absl::Status s = reader_->Next(kMaxCheckpointChunkBytes,
                                       chunk_.mutable_data(), &last_);
        !s.ok()) {
      Fail(record, s);
      return;
    }
    if (first_) {
      first_ = false;
      chunk_.set_job_id(record.job_id);
      chunk_.set_attempt(record.attempt);
      chunk_.set_step(record.step);
    }
    if (last_) {
      chunk_.set_sha256(record.sha256);
      chunk_.set_total_bytes(record.bytes);
    }
    StartWrite(&chunk_);
  }

  Executor* const executor_;
  Logger* const logger_;
  std::unique_ptr<CheckpointReader> reader_;
  v1::CheckpointChunk chunk_;
  bool first_ = true;
  bool last_ = false;
};

}  // namespace

grpc::ServerBidiReactor<v1::WorkerMessage, v1::SchedulerMessage>*
WorkerGatewayService::Connect(grpc::CallbackServerContext* context) {
  auto* reactor = new ConnectReactor(jobs_);
  reactor->Start(auth_->Check(*context, auth::Role::kWorker));
  return reactor;
}

grpc::ServerReadReactor<v1::CheckpointChunk>*
WorkerGatewayService::UploadCheckpoint(grpc::CallbackServerContext* context,
                                       v1::UploadCheckpointResponse* response) {
  auto* reactor =
      new UploadReactor(jobs_, files_, executor_, logger_, response);
  reactor->Start(auth_->Check(*context, auth::Role::kWorker));
  return reactor;
}

grpc::ServerWriteReactor<v1::CheckpointChunk>*
WorkerGatewayService::DownloadCheckpoint(
    grpc::CallbackServerContext* context,
    const v1::DownloadCheckpointRequest* request) {
  auto* reactor = new DownloadReactor(executor_, logger_);
  absl::Status error = auth_->Check(*context, auth::Role::kWorker);
  if (error.ok()) error = CheckJobIdArgument("job_id", request->job_id());
  if (!error.ok()) {
    reactor->Start(error);
  } else {
    reactor->Start(jobs_->LatestCheckpoint(request->job_id()));
  }
  return reactor;
}

}  // namespace halftime::server
