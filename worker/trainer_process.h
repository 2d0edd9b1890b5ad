// TrainerProcess: one `halftime-train` child process, supervised.
//
// The child gets argv only (no shell), a scrubbed environment, /dev/null as
// stdin, its stderr captured (last lines kept, all of it in a log file) and
// an events pipe on fd 3 (`--events-fd 3`) whose JSON lines are handed to
// the owner's callback as they arrive. Optionally a socket on fd 4
// (`--acks-fd 4`) carries the owner's acknowledgements back to the child.
//
// Thread-safety: all public methods are thread-safe. Callbacks run on the
// process's own reader thread, one at a time, in the order the child wrote
// them; `on_exit` runs last, after every event has been delivered.
#ifndef HALFTIME_WORKER_TRAINER_PROCESS_H_
#define HALFTIME_WORKER_TRAINER_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "worker/trainer_launcher.h"

namespace halftime {

// `text` as valid UTF-8 of at most `max_bytes` bytes: each invalid byte
// (a stray continuation byte, an overlong form, a surrogate, binary
// output) becomes U+FFFD and the cut never splits a character. Stderr
// lines travel in protobuf strings, which must be UTF-8: one bad line
// would otherwise make the whole JobResult unparseable.
std::string ToValidUtf8(const std::string& text, std::size_t max_bytes);

class TrainerProcess : public TrainerRun {
 public:
  using Options = TrainerRunOptions;
  using Callbacks = TrainerRunCallbacks;

  // Starts the child. INTERNAL when fork/exec or pipes fail; the binary not
  // being executable is reported as FAILED_PRECONDITION.
  static absl::StatusOr<std::unique_ptr<TrainerProcess>> Start(
      const Options& options, Callbacks callbacks);

  // Kills the child (SIGKILL) if still running and joins the reader.
  ~TrainerProcess() override ABSL_LOCKS_EXCLUDED(mu_);
  TrainerProcess(const TrainerProcess&) = delete;
  TrainerProcess& operator=(const TrainerProcess&) = delete;

  // Sends SIGTERM (the trainer checkpoints and exits), then SIGKILL if it is
  // still running after `grace`. Returns at once.
  void Stop(std::chrono::milliseconds grace) override ABSL_LOCKS_EXCLUDED(mu_);
  // Sends SIGKILL now.
  void Kill() override ABSL_LOCKS_EXCLUDED(mu_);
  // Blocks until the child has exited and on_exit has run.
  void Wait() override;
  // Writes `line` and a newline to the child's acknowledgement socket.
  // FAILED_PRECONDITION when it was not requested; UNAVAILABLE when
  // the child is gone (its end is closed).
  absl::Status Acknowledge(const std::string& line) override
      ABSL_LOCKS_EXCLUDED(mu_);
  // Last stderr lines so far.
  std::vector<std::string> StderrTail() const override ABSL_LOCKS_EXCLUDED(mu_);
  pid_t pid() const { return pid_; }

 private:
  TrainerProcess(const Options& options, Callbacks callbacks);
  void ReadLoop(int events_fd, int stderr_fd) ABSL_LOCKS_EXCLUDED(mu_);
  void AppendStderr(const std::string& chunk) ABSL_LOCKS_EXCLUDED(mu_);

  Options options_;
  Callbacks callbacks_;
  // Set by Start() before the reader thread starts, read-only from then on.
  pid_t pid_ = -1;
  std::thread reader_;
  int stderr_log_fd_ = -1;  // the reader thread appends stderr to it
  int acks_fd_ = -1;        // our end of the acknowledgement socket

  // Also serializes the writes on acks_fd_.
  mutable absl::Mutex mu_;
  bool exited_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool stalled_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::string> stderr_tail_ ABSL_GUARDED_BY(mu_);
  std::string stderr_partial_ ABSL_GUARDED_BY(mu_);
  // Started by the first Stop(); joined by the destructor.
  std::thread killer_ ABSL_GUARDED_BY(mu_);
};

// Starts each run as a TrainerProcess.
//
// Thread-safety: thread-safe (stateless).
class ProcessLauncher : public TrainerLauncher {
 public:
  absl::StatusOr<std::unique_ptr<TrainerRun>> Start(
      const TrainerRunOptions& options, TrainerRunCallbacks callbacks) override;
};

}  // namespace halftime

#endif  // HALFTIME_WORKER_TRAINER_PROCESS_H_
