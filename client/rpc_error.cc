#include "client/rpc_error.h"

#include "absl/strings/str_cat.h"
#include "client/cli.h"

namespace halftime {

CliError DescribeRpcError(const absl::Status& status,
                          const RpcErrorContext& context) {
  const std::string message = std::string(status.message());
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
      return {
          kExitFailure,
          absl::StrCat("cannot reach scheduler at ", context.target, ": ",
                       DescribeConnectionFailure(message, context.security))};
    case absl::StatusCode::kDeadlineExceeded:
      return {kExitFailure, absl::StrCat("scheduler at ", context.target,
                                         " did not answer within ",
                                         absl::FormatDuration(context.timeout),
                                         " (raise --timeout?)")};
    case absl::StatusCode::kNotFound:
      if (!context.job_id.empty()) {
        return {kExitBadInput,
                absl::StrCat("job ", context.job_id, " not found")};
      }
      return {kExitBadInput, message.empty() ? "not found" : message};
    case absl::StatusCode::kInvalidArgument:
      return {kExitBadInput,
              message.empty() ? "the scheduler rejected the request" : message};
    case absl::StatusCode::kUnauthenticated:
      return {kExitFailure,
              absl::StrCat(
                  "authentication failed: check --token-file",
                  message.empty() ? "" : absl::StrCat(" (", message, ")"))};
    case absl::StatusCode::kPermissionDenied:
      return {kExitFailure,
              absl::StrCat("permission denied",
                           message.empty() ? "" : absl::StrCat(": ", message))};
    case absl::StatusCode::kUnimplemented:
      return {kExitFailure,
              absl::StrCat("the scheduler at ", context.target,
                           " does not support this call (older version?)",
                           message.empty() ? "" : absl::StrCat(": ", message))};
    case absl::StatusCode::kResourceExhausted:
      return {kExitFailure,
              absl::StrCat("the scheduler is out of resources: ", message)};
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return {kExitFailure, message};
    default:
      return {kExitFailure,
              absl::StrCat("scheduler call failed (",
                           absl::StatusCodeToString(status.code()), ")",
                           message.empty() ? "" : absl::StrCat(": ", message))};
  }
}

}  // namespace halftime
