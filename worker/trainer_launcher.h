// The worker daemon's edge to its trainers: what starting a `halftime-train`
// run takes, how it ends, and the handle the daemon holds while it runs.
// TrainerProcess (worker/trainer_process.h) is the real one; tests start
// fakes that replay recorded events.
#ifndef HALFTIME_WORKER_TRAINER_LAUNCHER_H_
#define HALFTIME_WORKER_TRAINER_LAUNCHER_H_

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace halftime {

// How a trainer ended.
struct ExitInfo {
  // Exit code when it exited normally, else -1.
  int exit_code = -1;
  // Signal that killed it, else 0.
  int signal = 0;
  // The stall watchdog killed it (see TrainerRunOptions::stall_timeout).
  bool stalled = false;
  // "exit code 1", "killed by signal 9 (SIGKILL)", ...
  std::string Describe() const;
};

// What a trainer run is started with.
struct TrainerRunOptions {
  // Path of the halftime-train binary.
  std::string binary;
  // Arguments after the program name; `--events-fd 3` is appended.
  std::vector<std::string> args;
  // Working directory of the child.
  std::string work_dir;
  // Full stderr goes here (appended).
  std::string stderr_log;
  // Extra environment entries ("KEY=VALUE") on top of the scrubbed base.
  std::vector<std::string> env;
  // Lines of stderr kept for failure reports.
  int stderr_tail_lines = 40;
  // Stall watchdog: a child that sends no event for this long is killed
  // with SIGKILL (a stopped or hung process may never act on SIGTERM) and
  // its ExitInfo says `stalled`. The silence is counted from the start,
  // then from the end of the last event's callback, so the time the owner
  // spends handling an event (e.g. uploading a checkpoint) is never
  // charged to the child. Zero: no watchdog.
  std::chrono::milliseconds stall_timeout{0};
  // Opens the acknowledgement socket (fd 4, `--acks-fd 4` appended), which
  // Acknowledge() writes to; a trainer given it waits after each
  // checkpoint until the owner acknowledges that checkpoint.
  bool acknowledgements = false;
};

// What a trainer run reports, on the run's own thread, one call at a time,
// in the order the trainer wrote them; `on_exit` comes last.
struct TrainerRunCallbacks {
  // One JSON line of the trainer's events (engine/events.h).
  std::function<void(const std::string& line)> on_event;
  // The trainer is gone and every event was delivered.
  std::function<void(const ExitInfo& exit)> on_exit;
};

// A running trainer. Destroying it kills the trainer if it still runs and
// waits for its callbacks to end; never destroy it from its own callback.
//
// Thread-safety: all methods are thread-safe.
class TrainerRun {
 public:
  virtual ~TrainerRun() = default;

  // Asks the trainer to checkpoint and exit (SIGTERM), and kills it if it
  // still runs after `grace`. Returns at once.
  virtual void Stop(std::chrono::milliseconds grace) = 0;
  // Kills the trainer now.
  virtual void Kill() = 0;
  // Blocks until the trainer has exited and on_exit has run.
  virtual void Wait() = 0;
  // Tells the trainer `line` on its acknowledgement channel.
  // FAILED_PRECONDITION when it was not requested; UNAVAILABLE when the
  // trainer is gone.
  virtual absl::Status Acknowledge(const std::string& line) = 0;
  // The last stderr lines so far.
  virtual std::vector<std::string> StderrTail() const = 0;
};

// Starts trainer runs.
//
// Thread-safety: implementations are thread-safe.
class TrainerLauncher {
 public:
  virtual ~TrainerLauncher() = default;

  // Starts a run. FAILED_PRECONDITION when the binary is not executable,
  // INTERNAL when the process could not be started.
  virtual absl::StatusOr<std::unique_ptr<TrainerRun>> Start(
      const TrainerRunOptions& options, TrainerRunCallbacks callbacks) = 0;
};

}  // namespace halftime

#endif  // HALFTIME_WORKER_TRAINER_LAUNCHER_H_
