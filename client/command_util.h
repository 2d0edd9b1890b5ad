// Helpers the verbs share: one unary call with deadline and retries, and
// printing a CliError. Internal to client/.
//
// Thread-safety: the functions keep no state; thread-safe.
#ifndef HALFTIME_CLIENT_COMMAND_UTIL_H_
#define HALFTIME_CLIENT_COMMAND_UTIL_H_

#include <grpcpp/client_context.h>
#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "client/commands.h"
#include "client/rpc_error.h"
#include "common/channel.h"
#include "common/status.h"

namespace halftime {

enum class RetryPolicy {
  // Calls safe to repeat: reads, and SubmitJob (idempotency key).
  kRetryUnavailable,
  kNoRetry,
};

// Attempts of a retried call, and the pause before the second one (tripled
// for each further attempt).
inline constexpr int kMaxCallAttempts = 3;
inline constexpr absl::Duration kFirstRetryPause = absl::Milliseconds(100);

// Runs `call(context)` with a fresh context per attempt, each with
// env.timeout as its deadline; retries UNAVAILABLE per `policy`. Returns the
// last attempt's status, converted to absl::Status.
template <typename Call>
absl::Status CallScheduler(const CommandEnv& env, RetryPolicy policy,
                           Call&& call) {
  absl::Duration pause = kFirstRetryPause;
  for (int attempt = 1;; ++attempt) {
    grpc::ClientContext context;
    PrepareCallContext(&context, env.timeout);
    absl::Status status = FromGrpcStatus(call(&context));
    if (status.code() != absl::StatusCode::kUnavailable ||
        policy == RetryPolicy::kNoRetry || attempt >= kMaxCallAttempts) {
      return status;
    }
    absl::SleepFor(pause);
    pause *= 3;
  }
}

inline RpcErrorContext ErrorContext(const CommandEnv& env,
                                    const std::string& job_id) {
  return RpcErrorContext{env.target, env.timeout, job_id, env.security};
}

// Prints "halftime: MESSAGE" to env.err; returns the error's exit code.
inline int PrintError(const CommandEnv& env, const CliError& error) {
  *env.err << "halftime: " << error.message << "\n";
  return error.exit_code;
}

}  // namespace halftime

#endif  // HALFTIME_CLIENT_COMMAND_UTIL_H_
