// Checks every service applies to requests before the JobManager sees them.
//
// Malformed requests: gRPC answers a unary or server-streaming request whose
// bytes do not parse as the method's request message (garbage, truncated
// messages, a string field holding invalid UTF-8) with UNIMPLEMENTED and an
// empty message, which reads as "this server lacks the method". The
// interceptor made by MalformedRequestInterceptorFactory turns exactly those
// replies into INVALID_ARGUMENT naming the method and the likely cause.
// (On streams a message that does not parse ends the read side; the
// services answer as for an early end of stream.)
//
// Submissions: CheckSubmitRequest is the one validation a job spec gets in
// the scheduler; the JobManager takes its result as valid.
//
// Arguments: job ids are required and short, so an error never echoes a
// megabyte of caller-chosen bytes back (status messages travel in HTTP/2
// trailers, whose size clients limit).
#ifndef HALFTIME_SERVER_REQUEST_CHECKS_H_
#define HALFTIME_SERVER_REQUEST_CHECKS_H_

#include <grpcpp/support/server_interceptor.h>

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "halftime/v1/job_spec.pb.h"
#include "halftime/v1/scheduler.pb.h"

namespace halftime::server {

// Longest job id accepted in a request, in bytes (ids are "j-000042").
inline constexpr std::size_t kMaxJobIdBytes = 64;
// Longest free text accepted in a request (a cancel reason), in bytes.
inline constexpr std::size_t kMaxReasonBytes = 4096;

// Longest idempotency key accepted, in bytes.
inline constexpr std::size_t kMaxIdempotencyKeyBytes = 128;

// The spec a SubmitJobRequest carries, defaults applied and validated:
// `spec` (defaults filled, then checked) or `spec_text` (parsed as a YAML
// or JSON spec), exactly one of them; its paths inside the worker's data
// root; an idempotency key of at most kMaxIdempotencyKeyBytes.
// INVALID_ARGUMENT names the field (every problem of a spec at once).
absl::StatusOr<v1::JobSpec> CheckSubmitRequest(
    const v1::SubmitJobRequest& request);

// INVALID_ARGUMENT naming `field` when `job_id` is empty or longer than
// kMaxJobIdBytes; OK otherwise (whether the job exists is not checked).
absl::Status CheckJobIdArgument(absl::string_view field,
                                absl::string_view job_id);

// The message of the INVALID_ARGUMENT a malformed request to `method`
// ("/halftime.v1.Scheduler/GetJob") gets.
std::string MalformedRequestMessage(absl::string_view method);

// Install with ServerBuilder::experimental().SetInterceptorCreators.
//
// Thread-safety: thread-safe (stateless).
class MalformedRequestInterceptorFactory
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;
};

}  // namespace halftime::server

#endif  // HALFTIME_SERVER_REQUEST_CHECKS_H_
