#include "worker/job_result.h"

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "engine/events.h"

namespace halftime {

namespace events = engine::events;

v1::JobResult MakeJobResult(const std::string& job_id, int attempt,
                            v1::JobOutcome outcome, const std::string& reason,
                            bool permanent) {
  v1::JobResult result;
  result.set_job_id(job_id);
  result.set_attempt(attempt);
  result.set_outcome(outcome);
  result.set_reason(reason);
  result.set_permanent(permanent);
  return result;
}

std::string StallReason(std::chrono::milliseconds stall_timeout,
                        const ExitInfo& exit) {
  return absl::StrCat("no training step for ",
                      absl::FormatDuration(absl::FromChrono(stall_timeout)),
                      " (trainer ", exit.Describe(), ")");
}

v1::JobResult ResultOfRun(const std::string& job_id, int attempt,
                          const TrainerEnd& end,
                          std::chrono::milliseconds stall_timeout) {
  v1::JobResult result;
  if (end.exit.exit_code == events::kExitOk &&
      end.done_status == events::kOkStatus) {
    result = MakeJobResult(job_id, attempt, v1::JOB_OUTCOME_SUCCEEDED, "");
  } else if (end.release_requested && !end.cancel_requested) {
    result = MakeJobResult(job_id, attempt, v1::JOB_OUTCOME_RELEASED,
                           "worker is draining");
  } else if (end.cancel_requested) {
    result =
        MakeJobResult(job_id, attempt, v1::JOB_OUTCOME_CANCELLED, "cancelled");
  } else if (end.exit.stalled) {
    // Hung (deadlocked, stopped, stuck in I/O): another try may well
    // succeed, on this worker or another.
    result = MakeJobResult(job_id, attempt, v1::JOB_OUTCOME_FAILED,
                           StallReason(stall_timeout, end.exit));
  } else {
    // The trainer's own words: its done event, else its last stderr line
    // (errors found before training starts, e.g. a path outside the root).
    std::string why = end.done_message;
    if (why.empty() && !end.stderr_tail.empty()) {
      why = end.stderr_tail.back();
      const std::string prefix = "halftime-train: ";
      if (why.rfind(prefix, 0) == 0) why = why.substr(prefix.size());
    }
    // Bad spec or data: retrying cannot help.
    result = MakeJobResult(
        job_id, attempt, v1::JOB_OUTCOME_FAILED,
        why.empty() ? absl::StrCat("trainer ", end.exit.Describe())
                    : absl::StrCat(why, " (trainer ", end.exit.Describe(), ")"),
        end.exit.exit_code == events::kExitBadInput);
  }
  for (const std::string& line : end.stderr_tail) result.add_stderr_tail(line);
  return result;
}

}  // namespace halftime
