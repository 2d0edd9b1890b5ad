// The JobResult a worker sends when an attempt ends: one constructor for
// every early end (refused, failed to start, cancelled before start) and
// the classification of a trainer run's end.
//
// Thread-safety: pure functions, thread-safe.
#ifndef HALFTIME_WORKER_JOB_RESULT_H_
#define HALFTIME_WORKER_JOB_RESULT_H_

#include <chrono>
#include <string>
#include <vector>

#include "halftime/v1/worker_gateway.pb.h"
#include "worker/trainer_launcher.h"

namespace halftime {

// A result with no stderr and no savings.
v1::JobResult MakeJobResult(const std::string& job_id, int attempt,
                            v1::JobOutcome outcome, const std::string& reason,
                            bool permanent = false);

// How a trainer run ended, as the worker saw it.
struct TrainerEnd {
  ExitInfo exit;
  // The trainer's done event (engine/events.h); empty if none.
  std::string done_status;
  std::string done_message;
  // What the worker had asked of it.
  bool cancel_requested = false;
  bool release_requested = false;
  std::vector<std::string> stderr_tail;
};

// The result of a run that ended as `end` says: SUCCEEDED only for a clean
// exit after an ok done event; a drain's stop is RELEASED, a cancel
// CANCELLED; a stall is a retryable failure; any other failure carries the
// trainer's own words and is permanent only for bad input (exit code 2).
// Savings are the caller's to add.
v1::JobResult ResultOfRun(const std::string& job_id, int attempt,
                          const TrainerEnd& end,
                          std::chrono::milliseconds stall_timeout);

// The failure reason of an attempt whose trainer the stall watchdog killed:
// "no training step for 30s (trainer killed by signal 9 (SIGKILL) by the
// stall watchdog)".
std::string StallReason(std::chrono::milliseconds stall_timeout,
                        const ExitInfo& exit);

}  // namespace halftime

#endif  // HALFTIME_WORKER_JOB_RESULT_H_
