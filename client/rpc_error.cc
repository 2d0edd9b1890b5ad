#include "client/rpc_error.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/cli.h"
#include "client/render.h"

namespace halftime {

std::string DescribeUnavailable(absl::string_view grpc_message) {
  const std::string text = absl::AsciiStrToLower(grpc_message);
  if (absl::StrContains(text, "connection refused")) {
    return "connection refused";
  }
  if (absl::StrContains(text, "dns resolution failed") ||
      absl::StrContains(text, "name resolution") ||
      absl::StrContains(text, "domain name not found")) {
    return "cannot resolve the host name";
  }
  if (absl::StrContains(text, "handshake") || absl::StrContains(text, "ssl") ||
      absl::StrContains(text, "tls")) {
    return "TLS handshake failed (check --tls-ca, --tls-cert and --tls-key)";
  }
  if (absl::StrContains(text, "socket closed") ||
      absl::StrContains(text, "connection reset") ||
      absl::StrContains(text, "broken pipe")) {
    return "the connection was closed (a plaintext client talking to a TLS "
           "scheduler, or the other way round?)";
  }
  if (absl::StrContains(text, "deadline") ||
      absl::StrContains(text, "timed out") ||
      absl::StrContains(text, "timeout")) {
    return "connection timed out";
  }
  if (absl::StrContains(text, "no route to host")) return "no route to host";
  if (absl::StrContains(text, "network is unreachable")) {
    return "network is unreachable";
  }
  if (grpc_message.empty()) return "unavailable";
  return OneLine(grpc_message);
}

CliError DescribeRpcError(const absl::Status& status,
                          const RpcErrorContext& context) {
  const std::string message = std::string(status.message());
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
      return {kExitFailure,
              absl::StrCat("cannot reach scheduler at ", context.target, ": ",
                           DescribeUnavailable(message))};
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
