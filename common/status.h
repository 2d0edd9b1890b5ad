// The one place where absl::Status becomes grpc::Status and back. Code
// inside Halftime speaks absl::Status; only the gRPC edge converts.
//
// Thread-safety: pure functions, thread-safe.
#ifndef HALFTIME_COMMON_STATUS_H_
#define HALFTIME_COMMON_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace halftime {

// Same code and message. Codes map one to one (both follow google.rpc.Code).
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace halftime

#endif  // HALFTIME_COMMON_STATUS_H_
