// The user-facing Scheduler service (gRPC callback API). Every method
// checks the caller's user token, hands the work to the JobManager and
// converts its absl::Status to grpc::Status once, here. No method blocks a
// gRPC thread waiting: SubmitJob/CancelJob finish from the store's commit
// callback, WatchJob is a reactor woken when events become durable.
#ifndef HALFTIME_SERVER_SCHEDULER_SERVICE_H_
#define HALFTIME_SERVER_SCHEDULER_SERVICE_H_

#include "halftime/v1/scheduler.grpc.pb.h"
#include "server/auth.h"
#include "server/job_manager.h"

namespace halftime::server {

// Implements halftime.v1.Scheduler.
//
// Thread-safety: thread-safe (stateless; the JobManager is).
class SchedulerService : public v1::Scheduler::CallbackService {
 public:
  // Neither pointer is owned; both must outlive the service.
  SchedulerService(JobManager* jobs, const auth::Authorizer* auth)
      : jobs_(jobs), auth_(auth) {}

  grpc::ServerUnaryReactor* SubmitJob(grpc::CallbackServerContext* context,
                                      const v1::SubmitJobRequest* request,
                                      v1::SubmitJobResponse* response) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* context,
                                   const v1::GetJobRequest* request,
                                   v1::Job* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* context,
                                     const v1::ListJobsRequest* request,
                                     v1::ListJobsResponse* response) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* context,
                                      const v1::CancelJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerWriteReactor<v1::JobEvent>* WatchJob(
      grpc::CallbackServerContext* context,
      const v1::WatchJobRequest* request) override;
  grpc::ServerUnaryReactor* ListWorkers(
      grpc::CallbackServerContext* context,
      const v1::ListWorkersRequest* request,
      v1::ListWorkersResponse* response) override;
  grpc::ServerUnaryReactor* GetSavings(
      grpc::CallbackServerContext* context,
      const v1::GetSavingsRequest* request,
      v1::GetSavingsResponse* response) override;
  grpc::ServerUnaryReactor* GetJobLogs(
      grpc::CallbackServerContext* context,
      const v1::GetJobLogsRequest* request,
      v1::GetJobLogsResponse* response) override;

 private:
  JobManager* const jobs_;
  const auth::Authorizer* const auth_;
};

}  // namespace halftime::server

#endif  // HALFTIME_SERVER_SCHEDULER_SERVICE_H_
