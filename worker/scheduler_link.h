// The worker daemon's edges to the scheduler: the Connect stream that
// carries registration, heartbeats, reports and results up and
// assignments and cancels down (SchedulerLink), and the checkpoint
// uploads and downloads beside it (CheckpointTransfer). The gRPC
// implementations live here too; tests give the Worker fakes.
#ifndef HALFTIME_WORKER_SCHEDULER_LINK_H_
#define HALFTIME_WORKER_SCHEDULER_LINK_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/channel.h"
#include "halftime/v1/worker_gateway.grpc.pb.h"

namespace halftime {

// One open Connect stream.
//
// Thread-safety: one thread reads while another writes (the Worker
// serializes its writers); Cancel() may be called from any thread, at any
// time, and makes a blocked Read() return false.
class SchedulerStream {
 public:
  virtual ~SchedulerStream() = default;

  // False once the stream is broken or closed.
  virtual bool Write(const v1::WorkerMessage& message) = 0;
  // Blocks for the next message; false when the stream has ended.
  virtual bool Read(v1::SchedulerMessage* message) = 0;
  virtual void Cancel() = 0;
  // After Read() returned false: why the stream ended (OK when the
  // scheduler closed it), worded for the log.
  virtual absl::Status Finish() = 0;
};

// Opens Connect streams to the scheduler.
//
// Thread-safety: implementations are thread-safe.
class SchedulerLink {
 public:
  virtual ~SchedulerLink() = default;

  // A new stream; it may fail on its first Write or Read.
  virtual std::unique_ptr<SchedulerStream> Connect() = 0;
  // Waits up to `wait` before the next Connect, returning early once a
  // Connect could succeed (the network healed) or `stopping` is set.
  virtual void WaitToReconnect(std::chrono::milliseconds wait,
                               const std::atomic<bool>& stopping) = 0;
};

// Which checkpoint an upload carries.
struct CheckpointRef {
  std::string job_id;
  int attempt = 0;
  int64_t step = 0;
};

// Moves checkpoint files between this worker and the scheduler's store.
//
// Thread-safety: implementations are thread-safe; transfers may run at
// once from several threads.
class CheckpointTransfer {
 public:
  virtual ~CheckpointTransfer() = default;

  // Uploads the file at `path` as `ref`. NOT_FOUND when the file cannot be
  // read; CANCELLED after CancelAll(); otherwise the transfer's failure.
  virtual absl::Status Upload(const CheckpointRef& ref,
                              const std::string& path) = 0;
  // Downloads `job_id`'s latest checkpoint to `path`, verified against the
  // scheduler's checksum, and returns its step. DATA_LOSS only when the
  // scheduler's own copy is corrupt or missing (no retry can help);
  // bytes garbled on the way are UNAVAILABLE.
  virtual absl::StatusOr<int64_t> Download(const std::string& job_id,
                                           const std::string& path) = 0;
  // Cancels the transfers in flight and refuses new ones (CANCELLED).
  virtual void CancelAll() = 0;
};

// Sets the deadline (none when zero) and runs `decorate` on a call's
// context; every call to the scheduler is prepared so.
void PrepareGatewayContext(
    grpc::ClientContext* context, std::chrono::milliseconds deadline,
    const std::function<void(grpc::ClientContext*)>& decorate);

// The link over a gRPC channel to the WorkerGateway service.
//
// Thread-safety: thread-safe.
class GrpcSchedulerLink : public SchedulerLink {
 public:
  // `decorate` (may be empty) sets per-call credentials on each context;
  // `security` words connection errors.
  GrpcSchedulerLink(std::shared_ptr<grpc::Channel> channel,
                    std::function<void(grpc::ClientContext*)> decorate,
                    ChannelSecurity security);

  std::unique_ptr<SchedulerStream> Connect() override;
  void WaitToReconnect(std::chrono::milliseconds wait,
                       const std::atomic<bool>& stopping) override;

 private:
  const std::shared_ptr<grpc::Channel> channel_;
  const std::unique_ptr<v1::WorkerGateway::Stub> stub_;
  const std::function<void(grpc::ClientContext*)> decorate_;
  const ChannelSecurity security_;
};

// Checkpoint transfers over the WorkerGateway service, in 1 MiB chunks,
// SHA-256 checked; a transfer fails once no chunk has moved for a minute
// (TransferWatchdog), within an outer cap of hours.
//
// Thread-safety: thread-safe.
class GrpcCheckpointTransfer : public CheckpointTransfer {
 public:
  GrpcCheckpointTransfer(std::shared_ptr<grpc::Channel> channel,
                         std::function<void(grpc::ClientContext*)> decorate);

  absl::Status Upload(const CheckpointRef& ref,
                      const std::string& path) override
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<int64_t> Download(const std::string& job_id,
                                   const std::string& path) override
      ABSL_LOCKS_EXCLUDED(mu_);
  void CancelAll() override ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // Keeps one call where CancelAll() reaches it, for its lifetime.
  class Registration;

  const std::unique_ptr<v1::WorkerGateway::Stub> stub_;
  const std::function<void(grpc::ClientContext*)> decorate_;

  // The calls in flight, where CancelAll() reaches them.
  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::set<grpc::ClientContext*> in_flight_ ABSL_GUARDED_BY(mu_);
};

}  // namespace halftime

#endif  // HALFTIME_WORKER_SCHEDULER_LINK_H_
