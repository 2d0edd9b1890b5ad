// Worker: the halftime-worker daemon's logic. It keeps one Connect stream
// to the scheduler open (register, heartbeats, reports and results up;
// assignments and cancels down; reconnecting with exponential backoff and
// jitter), runs each assigned job in its own `halftime-train` child process,
// measures the fp32 baseline for savings, uploads checkpoints as they are
// written and forwards every training report.
//
// Thread-safety: Run() blocks the calling thread; Drain() and Shutdown()
// may be called from any thread (e.g. a signal-watching thread).
#ifndef HALFTIME_WORKER_WORKER_H_
#define HALFTIME_WORKER_WORKER_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/channel.h"
#include "halftime/v1/worker_gateway.grpc.pb.h"
#include "worker/trainer_process.h"
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
  // Sets per-call credentials/deadline on each ClientContext (may be empty).
  std::function<void(grpc::ClientContext*)> decorate_context;
  // How `channel` is secured, to explain failed connections in the log.
  ChannelSecurity security = ChannelSecurity::kPlaintext;
};

// The failure reason of an attempt whose trainer the stall watchdog killed:
// "no training step for 30s (trainer killed by signal 9 (SIGKILL) by the
// stall watchdog)".
std::string StallReason(std::chrono::milliseconds stall_timeout,
                        const ExitInfo& exit);

class Worker {
 public:
  // `channel` reaches the scheduler; `metrics` may be null (not owned, must
  // outlive the worker). INVALID_ARGUMENT for unusable directories.
  static absl::StatusOr<std::unique_ptr<Worker>> Create(
      WorkerOptions options, std::shared_ptr<grpc::Channel> channel,
      WorkerMetrics* metrics);
  ~Worker();

  // Connects and serves until Shutdown(), or until a Drain() has handed
  // every job back.
  void Run();
  // Stops taking work, asks every trainer to checkpoint and exit, uploads
  // the checkpoints, hands the jobs back (RELEASED) and then ends Run().
  void Drain();
  // Ends Run() now; running trainers are killed.
  void Shutdown();

 private:
  struct Job;

  Worker(WorkerOptions options, std::shared_ptr<grpc::Channel> channel,
         WorkerMetrics* metrics);

  void ServeOneConnection();
  // Waits up to `wait` before the next connection attempt; see worker.cc.
  void WaitToReconnect(std::chrono::milliseconds wait);
  void HeartbeatLoop(std::chrono::milliseconds interval);
  bool Send(const v1::WorkerMessage& message);
  void SendResult(const v1::JobResult& result);
  std::vector<v1::RunningJob> RunningJobs();

  void StartJob(const v1::Assignment& assignment);
  void CancelJob(const v1::Cancel& cancel);
  void OnTrainerEvent(const std::shared_ptr<Job>& job, const std::string& line);
  void OnTrainerExit(const std::shared_ptr<Job>& job, const ExitInfo& exit);
  // Uploads checkpoints of `job` as its trainer writes them, newest first,
  // until FlushUploads, and acknowledges each to the trainer, which waits
  // for that before it trains on.
  void UploadLoop(Job* job);
  // Uploads what is pending and ends `job`'s upload thread.
  void FlushUploads(Job* job);
  absl::Status UploadCheckpoint(Job* job, const std::string& path,
                                int64_t step);
  // Downloads `job_id`'s latest checkpoint to `path` and verifies it.
  // `*corrupt_at_source` tells a copy that the scheduler itself found
  // corrupt or missing (DATA_LOSS from it) from a failed transfer.
  absl::Status DownloadCheckpoint(const std::string& job_id,
                                  const std::string& path, int64_t* step,
                                  bool* corrupt_at_source);
  // Runs the short fp32 probe for `job` (blocking); fills job->baseline.
  void MeasureBaseline(Job* job);
  void FinishJob(const std::shared_ptr<Job>& job);
  void ReapFinished();
  void UpdateSlotMetrics();
  void PrepareContext(grpc::ClientContext* context,
                      std::chrono::milliseconds deadline);

  const WorkerOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::WorkerGateway::Stub> stub_;
  WorkerMetrics* metrics_;

  std::atomic<bool> stopping_{false};
  std::atomic<bool> draining_{false};
  // The scheduler's lease grace, from the last registration (0: unknown).
  std::atomic<int64_t> lease_grace_ms_{0};

  std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  grpc::ClientContext* stream_context_ = nullptr;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::WorkerMessage, v1::SchedulerMessage>>
      stream_;
  std::mutex write_mu_;  // serializes writes on stream_
  std::map<std::string, std::shared_ptr<Job>> jobs_;
  std::vector<std::shared_ptr<Job>> finished_;
  std::vector<v1::JobResult> pending_results_;
  // One thread per assignment (StartJob blocks on the probe and the
  // checkpoint download); `done` is set as its last act, so a finished one is
  // joined when the next assignment arrives instead of piling up.
  struct Starter {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Starter> starters_;
  // Waits for a drain to hand every job back, then shuts down; joined by the
  // destructor.
  std::thread drain_waiter_;
};

}  // namespace halftime

#endif  // HALFTIME_WORKER_WORKER_H_
