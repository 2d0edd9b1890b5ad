// The worker-facing WorkerGateway service (gRPC callback API): the
// long-lived Connect stream of each worker and the checkpoint transfers.
// Every method needs a worker token. File I/O of checkpoint transfers runs
// on an Executor, never on a gRPC thread.
#ifndef HALFTIME_SERVER_WORKER_GATEWAY_SERVICE_H_
#define HALFTIME_SERVER_WORKER_GATEWAY_SERVICE_H_

#include "halftime/v1/worker_gateway.grpc.pb.h"
#include "server/auth.h"
#include "server/checkpoints.h"
#include "server/executor.h"
#include "server/job_manager.h"
#include "server/logger.h"

namespace halftime::server {

// Implements halftime.v1.WorkerGateway.
//
// Connect: the first message must be `register` (else INVALID_ARGUMENT);
// the stream then carries heartbeats, reports, results and started notices
// up and Registered, assignments and cancels down. Messages of superseded
// attempts are dropped (counted by the JobManager), not fatal to the
// stream. The stream ends when the worker closes it, when a newer session
// of the same worker registers (ABORTED), when its lease expires
// (UNAVAILABLE) or at shutdown (UNAVAILABLE).
//
// UploadCheckpoint: first chunk job_id/attempt/step, data chunks of at most
// 1 MiB, the last chunk sha256 + total_bytes. Errors: FAILED_PRECONDITION
// for a superseded attempt, DATA_LOSS for a corrupt or truncated upload
// (the previous checkpoint is kept), INVALID_ARGUMENT for malformed
// chunks, NOT_FOUND for an unknown job.
//
// DownloadCheckpoint: the job's latest checkpoint in chunks of at most
// 1 MiB; the last chunk carries sha256 and total_bytes (NOT_FOUND when
// there is none). The file is checked against its record (size, SHA-256)
// as it is read: a missing or corrupt file ends the stream with DATA_LOSS
// in place of the last chunk, and is logged (`checkpoint_unusable`).
//
// Thread-safety: thread-safe.
class WorkerGatewayService : public v1::WorkerGateway::CallbackService {
 public:
  // No pointer is owned; all must outlive the service (and the gRPC server
  // it is registered with).
  WorkerGatewayService(JobManager* jobs, CheckpointFiles* files,
                       Executor* executor, const auth::Authorizer* auth,
                       Logger* logger)
      : jobs_(jobs),
        files_(files),
        executor_(executor),
        auth_(auth),
        logger_(logger) {}

  grpc::ServerBidiReactor<v1::WorkerMessage, v1::SchedulerMessage>* Connect(
      grpc::CallbackServerContext* context) override;
  grpc::ServerReadReactor<v1::CheckpointChunk>* UploadCheckpoint(
      grpc::CallbackServerContext* context,
      v1::UploadCheckpointResponse* response) override;
  grpc::ServerWriteReactor<v1::CheckpointChunk>* DownloadCheckpoint(
      grpc::CallbackServerContext* context,
      const v1::DownloadCheckpointRequest* request) override;

 private:
  JobManager* const jobs_;
  CheckpointFiles* const files_;
  Executor* const executor_;
  const auth::Authorizer* const auth_;
  Logger* const logger_;
};

}  // namespace halftime::server

#endif  // HALFTIME_SERVER_WORKER_GATEWAY_SERVICE_H_
