// Turns a failed scheduler call into one sentence for the user and the
// CLI's exit code: "cannot reach scheduler at 127.0.0.1:50051: connection
// refused" (1), "job j-000099 not found" (2), "authentication failed: check
// --token-file" (1), the scheduler's own message for INVALID_ARGUMENT (2).
//
// Thread-safety: pure functions, thread-safe.
#ifndef HALFTIME_CLIENT_RPC_ERROR_H_
#define HALFTIME_CLIENT_RPC_ERROR_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/channel.h"

namespace halftime {

// What the failed call was about, to phrase the sentence.
struct RpcErrorContext {
  // Scheduler address as the user gave it.
  std::string target;
  // Deadline of the call.
  absl::Duration timeout = absl::Seconds(10);
  // The job id the user typed, if the call names one.
  std::string job_id;
  // How the channel is secured, to explain failed connections.
  ChannelSecurity security = ChannelSecurity::kPlaintext;
};

struct CliError {
  int exit_code;
  std::string message;  // One or more lines, no trailing newline.
};

// `status` must not be OK.
CliError DescribeRpcError(const absl::Status& status,
                          const RpcErrorContext& context);

}  // namespace halftime

#endif  // HALFTIME_CLIENT_RPC_ERROR_H_
