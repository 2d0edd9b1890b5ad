// Worker: the halftime-worker daemon's logic. It keeps one Connect stream
// to the scheduler open (register, heartbeats, reports and results up;
// assignments and cancels down; reconnecting with exponential backoff and
// jitter), admits each assigned job to a free slot, runs it in its own
// trainer, measures the fp32 baseline for savings (worker/baseline_probe),
// uploads checkpoints as they are written and forwards every training
// report.
//
// Its edges are interfaces (WorkerEdges): the scheduler link and the
// checkpoint transfer (worker/scheduler_link.h), the trainer launcher
// (worker/trainer_launcher.h) and the clock, so tests run it against
// fakes.
//
// Thread-safety: Run() blocks the calling thread; Drain() and Shutdown()
// may be called from any thread (e.g. a signal-watching thread). TrainerRun
// callbacks run on each trainer's own thread. mu_ is never held across a
// call to the scheduler or to a trainer; write_mu_ (taken before mu_) is
// held across each write on the stream, and a job's own mutex across its
// trainer's start and the calls into its trainer (stop, kill, acknowledge).
#ifndef HALFTIME_WORKER_WORKER_H_
#define HALFTIME_WORKER_WORKER_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/channel.h"
#include "common/clock.h"
#include "halftime/v1/worker_gateway.pb.h"
#include "worker/job_result.h"
#include "worker/scheduler_link.h"
#include "worker/trainer_launcher.h"
#include "worker/worker_metrics.h"

namespace halftime {

struct WorkerOptions {
  // Unique worker name.
  std::string name;
  // Path of the halftime-train binary.
  std::string trainer_binary;
  // Data and model paths of specs are confined to this directory.
  std::string data_root;
  // Per-job scratch space (spec, logs, downloaded checkpoints).
  std::string work_dir;
  // Job outputs go to out_root/<job name>/.
  std::string out_root;
  // What the device runs (probed at start-up); slots and threads inside.
  v1::WorkerCapabilities capabilities;
  // SIGTERM-to-SIGKILL grace when a job is cancelled or the worker drains.
  std::chrono::milliseconds stop_grace{30000};
  // A trainer (or fp32 probe) that reports no training step for this long,
  // counted from its start and then from its last step, is killed and its
  // attempt fails as retryable ("no training step for 10m"). Zero: off.
  std::chrono::milliseconds stall_timeout{std::chrono::minutes(10)};
  // Bounds of the reconnect backoff.
  std::chrono::milliseconds min_backoff{200};
  std::chrono::milliseconds max_backoff{10000};
  // The fp32 probe measures at least this much steady step time (see
  // worker/baseline_probe.h).
  std::chrono::milliseconds probe_min_steady_time{3000};
  // Sets per-call credentials/deadline on each ClientContext (may be empty).
  std::function<void(grpc::ClientContext*)> decorate_context;
  // How the channel is secured, to explain failed connections in the log.
  ChannelSecurity security = ChannelSecurity::kPlaintext;
};

// What a Worker talks to. All are required but `clock`.
struct WorkerEdges {
  std::unique_ptr<SchedulerLink> link;
  std::unique_ptr<CheckpointTransfer> transfer;
  std::unique_ptr<TrainerLauncher> launcher;
  // Not owned; must outlive the worker. Null: the system clock.
  const Clock* clock = nullptr;
};

// The delays between reconnect attempts: exponential from `min` to `max`,
// each drawn in [backoff/2, backoff] so a fleet that lost its scheduler
// does not come back in lockstep.
//
// Thread-safety: thread-compatible.
class ReconnectBackoff {
 public:
  ReconnectBackoff(std::chrono::milliseconds min, std::chrono::milliseconds max,
                   uint32_t seed);

  // The wait before the next attempt, after a connection that lasted
  // `connected_for`; a long one (over 10 s) starts the backoff afresh.
  // `lease_grace` (zero: unknown) caps the backoff at a quarter of the
  // scheduler's lease grace while jobs run here (`busy`): a network cut
  // shorter than the grace must not cost them their attempt because the
  // backoff grew during it.
  std::chrono::milliseconds Next(absl::Duration connected_for, bool busy,
                                 std::chrono::milliseconds lease_grace);

 private:
  const std::chrono::milliseconds min_, max_;
  std::chrono::milliseconds backoff_;
  std::mt19937 rng_;
};

class Worker {
 public:
  // The worker with gRPC edges over `channel` and real trainer processes.
  // `metrics` may be null (not owned, must outlive the worker).
  // INVALID_ARGUMENT for unusable directories.
  static absl::StatusOr<std::unique_ptr<Worker>> Create(
      WorkerOptions options, std::shared_ptr<grpc::Channel> channel,
      WorkerMetrics* metrics);
  // The worker with the given edges; INVALID_ARGUMENT for unusable
  // directories or a missing edge.
  static absl::StatusOr<std::unique_ptr<Worker>> Create(WorkerOptions options,
                                                        WorkerEdges edges,
                                                        WorkerMetrics* metrics);
  ~Worker() ABSL_LOCKS_EXCLUDED(write_mu_, mu_);

  // Connects and serves until Shutdown(), or until a Drain() has handed
  // every job back.
  void Run() ABSL_LOCKS_EXCLUDED(write_mu_, mu_);
  // Stops taking work, asks every trainer to checkpoint and exit, uploads
  // the checkpoints, hands the jobs back (RELEASED) and then ends Run().
  void Drain() ABSL_LOCKS_EXCLUDED(write_mu_, mu_);
  // Ends Run() now; running trainers are killed.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Job;

  Worker(WorkerOptions options, WorkerEdges edges, WorkerMetrics* metrics);

  void ServeOneConnection() ABSL_LOCKS_EXCLUDED(write_mu_, mu_);
  void HeartbeatLoop(std::chrono::milliseconds interval)
      ABSL_LOCKS_EXCLUDED(write_mu_, mu_);
  bool Send(const v1::WorkerMessage& message)
      ABSL_LOCKS_EXCLUDED(write_mu_, mu_);
  void SendResult(const v1::JobResult& result)
      ABSL_LOCKS_EXCLUDED(write_mu_, mu_);
  std::vector<v1::RunningJob> RunningJobs() ABSL_LOCKS_EXCLUDED(mu_);
  bool Busy() ABSL_LOCKS_EXCLUDED(mu_);

  // Admits `assignment` to a slot, prepares it (spec file, checkpoint,
  // baseline) and starts its trainer; blocking, on a starter thread.
  void StartJob(const v1::Assignment& assignment)
      ABSL_LOCKS_EXCLUDED(write_mu_, mu_);
  // Takes a slot for `job`; the refusal's reason when there is none.
  std::string Admit(const std::shared_ptr<Job>& job) ABSL_LOCKS_EXCLUDED(mu_);
  // Admit()'s last step: enters `job` in jobs_ unless the worker drains,
  // the job already runs here or every slot is taken (the reason then).
  std::string TakeSlot(const std::shared_ptr<Job>& job)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PrepareBaseline(const v1::Assignment& assignment, Job* job);
  void CancelJob(const v1::Cancel& cancel) ABSL_LOCKS_EXCLUDED(write_mu_, mu_);
  void OnTrainerEvent(const std::shared_ptr<Job>& job, const std::string& line)
      ABSL_LOCKS_EXCLUDED(write_mu_, mu_);
  void OnTrainerExit(const std::shared_ptr<Job>& job, const ExitInfo& exit)
      ABSL_LOCKS_EXCLUDED(write_mu_, mu_);
  // Uploads checkpoints of `job` as its trainer writes them, newest first,
  // until FlushUploads, and acknowledges each to the trainer, which waits
  // for that before it trains on.
  void UploadLoop(Job* job);
  // Uploads what is pending and ends `job`'s upload thread.
  void FlushUploads(Job* job);
  void FinishJob(const std::shared_ptr<Job>& job) ABSL_LOCKS_EXCLUDED(mu_);
  void ReapFinished() ABSL_LOCKS_EXCLUDED(mu_);
  void UpdateSlotMetrics() ABSL_LOCKS_EXCLUDED(mu_);

  const WorkerOptions options_;
  const WorkerEdges edges_;
  const Clock& clock_;
  WorkerMetrics* const metrics_;

  std::atomic<bool> stopping_{false};
  std::atomic<bool> draining_{false};
  // The scheduler's lease grace, from the last registration (0: unknown).
  std::atomic<int64_t> lease_grace_ms_{0};

  // Serializes writes on stream_; taken before mu_. stream_ is replaced only
  // under both, so holding either keeps it from being replaced.
  absl::Mutex write_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  absl::Mutex mu_ ABSL_ACQUIRED_AFTER(write_mu_);
  // Signalled (with mu_) when a job leaves jobs_, when stream_ is closed and
  // on Shutdown().
  absl::CondVar cv_;
  std::unique_ptr<SchedulerStream> stream_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<Job>> jobs_ ABSL_GUARDED_BY(mu_);
  // Ended jobs whose trainer objects wait to be destroyed off their own
  // callback thread.
  std::vector<std::shared_ptr<Job>> finished_ ABSL_GUARDED_BY(mu_);
  // Results no stream took; sent after the next registration.
  std::vector<v1::JobResult> pending_results_ ABSL_GUARDED_BY(mu_);
  // One thread per assignment (StartJob blocks on the probe and the
  // checkpoint download); `done` is set as its last act, so a finished one is
  // joined when the next assignment arrives instead of piling up.
  struct Starter {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Starter> starters_ ABSL_GUARDED_BY(mu_);
  // Waits for a drain to hand every job back, then shuts down; joined by the
  // destructor.
  std::thread drain_waiter_ ABSL_GUARDED_BY(mu_);
};

}  // namespace halftime

#endif  // HALFTIME_WORKER_WORKER_H_
