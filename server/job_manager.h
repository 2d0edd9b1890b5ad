// The job manager: the scheduler's state machine. It owns the live state
// (jobs, workers, leases, queue) in memory, describes every change to the
// Store and acknowledges callers only once the change is durable.
//
// Lifecycle: QUEUED -> ASSIGNED -> RUNNING -> SUCCEEDED | FAILED |
// CANCELLED. Every change of state is a STATE_CHANGED event; events have
// per-job sequence numbers starting at 1, without gaps. A job whose worker
// is lost (lease expired), or whose run failed without `permanent`, goes
// back to QUEUED with attempt + 1 and counts a restart; more restarts than
// spec.max_restarts fail it with the last reason. A RELEASED run (worker
// draining) is requeued without counting. Messages (started, reports,
// results, uploads) from a superseded attempt or from a worker the job is
// not on are rejected with FAILED_PRECONDITION and counted in
// halftime_stale_messages_total; a connected worker that sends them (other
// than a result: that run is over) gets a Cancel for that attempt.
//
// Durability: every change is acknowledged, and every message to a worker
// (Registered, Assignment, Cancel) sent, only once the store holds the
// change it follows from; a kill -9 therefore never makes the scheduler
// forget an assignment a worker already runs, nor hand the same attempt out
// twice.
//
// Reports: every report updates Job.latest_report; only a downsampled
// history becomes REPORT events, so a job's stored events stay bounded: per
// attempt the first report, the last step, and reports at least
// ceil(total_steps / max_report_events) steps after the previous stored one
// (the same stride separately for reports that carry an eval loss). With
// the default 1000 that is at most ~2000 REPORT events per attempt however
// long the job runs, enough for the CLI's progress and loss curves.
//
// Watchers (WatchJob) only ever see durable events: the manager tracks the
// highest durable sequence per job and wakes EventListeners when it grows.
// Recent events of active jobs are served from memory; older ones and those
// of finished jobs come from the store.
#ifndef HALFTIME_SERVER_JOB_MANAGER_H_
#define HALFTIME_SERVER_JOB_MANAGER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "halftime/v1/job.pb.h"
#include "halftime/v1/scheduler.pb.h"
#include "halftime/v1/worker.pb.h"
#include "halftime/v1/worker_gateway.pb.h"
#include "server/checkpoints.h"
#include "server/leases.h"
#include "server/logger.h"
#include "server/metrics.h"
#include "server/savings.h"
#include "server/store.h"

namespace halftime::server {

// Where the manager sends messages for one worker session (the Connect
// stream in production, a recorder in tests).
//
// Thread-safety: implementations are thread-safe; both methods never block
// and may be called with the manager's lock held, so they must not call
// back into the manager.
class WorkerSink {
 public:
  virtual ~WorkerSink() = default;

  // Queues `message` for the worker; dropped silently once the session
  // ended.
  virtual void Send(const v1::SchedulerMessage& message) = 0;

  // Ends the session with `status` (replaced by a newer session, lease
  // expired, shutdown). Idempotent.
  virtual void Close(const absl::Status& status) = 0;
};

// Told that a watched job has new durable events, ended, or that the
// manager is shutting down; the listener then calls ReadEvents.
//
// Thread-safety: OnEvents runs on any thread without the manager's lock
// held; implementations are thread-safe and may call the manager.
class EventListener {
 public:
  virtual ~EventListener() = default;
  virtual void OnEvents() = 0;
};

// Settings of the job manager.
struct JobManagerOptions {
  // A worker without heartbeats (or stream) for this long loses its jobs.
  absl::Duration lease_grace = absl::Seconds(15);
  // Heartbeat period announced to workers.
  absl::Duration heartbeat_interval = absl::Seconds(2);
  // Target number of stored REPORT events per attempt (see above).
  int max_report_events = 1000;
  // Lines of a job's stderr tail kept (the last ones), and bytes per line.
  int max_log_lines = 200;
  int max_log_line_bytes = 4096;
  // Events of an active job kept in memory for watchers.
  int memory_events = 4096;
};

// The scheduler's job and worker state.
//
// Thread-safety: thread-safe. One internal mutex guards the state (the
// compiler checks it: ABSL_GUARDED_BY). Calls do not block on I/O while
// holding it (store writes are queued, their completion callbacks run on
// the store's thread), except the four store reads named *UnderLock below,
// which the PostgreSQL issue's split of this class moves out. Callbacks passed
// in
// (`done`) run on the store's thread, or inline for errors found before any
// change, never with the manager's lock held.
class JobManager {
 public:
  using StatusDone = std::function<void(absl::Status)>;
  using JobDone = std::function<void(absl::StatusOr<v1::Job>)>;
  using SubmitDone = std::function<void(absl::StatusOr<v1::SubmitJobResponse>)>;

  // Loads the state from `store` and resumes: queued jobs are placed as
  // workers join; workers known before get a lease of one grace period to
  // reconnect and re-attach their running jobs, else those are requeued.
  // None of the pointers are owned; all must outlive the manager. Errors:
  // the store's.
  static absl::StatusOr<std::unique_ptr<JobManager>> Create(
      JobManagerOptions options, Store* store, Clock* clock,
      SchedulerMetrics* metrics, SavingsLedger* savings,
      CheckpointFiles* checkpoints, Logger* logger);

  ~JobManager();

  JobManager(const JobManager&) = delete;
  JobManager& operator=(const JobManager&) = delete;

  // ---- Scheduler service ----

  // Accepts a job. `spec` is as CheckSubmitRequest (request_checks.h)
  // returns it: defaults applied and valid; the request was checked once,
  // at the service, and is not checked again here. With an idempotency key
  // seen before, answers the earlier job with deduplicated = true. `done`
  // runs once the job is durable.
  void SubmitJob(v1::JobSpec spec, const std::string& idempotency_key,
                 SubmitDone done) ABSL_LOCKS_EXCLUDED(mu_);

  // The job; NOT_FOUND ("job j-000099 not found") when unknown.
  absl::StatusOr<v1::Job> GetJob(const std::string& job_id) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // One page of jobs, newest first, filtered by state. INVALID_ARGUMENT
  // for a negative page size or a page token this server did not issue.
  absl::StatusOr<v1::ListJobsResponse> ListJobs(
      const v1::ListJobsRequest& request) const ABSL_LOCKS_EXCLUDED(mu_);

  // Cancels a job. QUEUED: CANCELLED at once. ASSIGNED/RUNNING: a Cancel
  // goes to the worker and the job becomes CANCELLED when the worker
  // reports JobResult CANCELLED (or at once when its worker is gone); the
  // job is answered in its current state. Errors: NOT_FOUND, and
  // FAILED_PRECONDITION for a job already finished. `done` runs once the
  // change is durable.
  void CancelJob(const std::string& job_id, const std::string& reason,
                 JobDone done) ABSL_LOCKS_EXCLUDED(mu_);

  // Every known worker, by name.
  v1::ListWorkersResponse ListWorkers() const ABSL_LOCKS_EXCLUDED(mu_);

  // Jobs held in memory: unfinished ones, and finished ones until they are
  // durable and unwatched (then they are read from the store).
  int live_jobs() const ABSL_LOCKS_EXCLUDED(mu_);

  // Savings of one job (no entries while none were measured) or of the
  // fleet (empty id). Errors: NOT_FOUND for an unknown job.
  absl::StatusOr<v1::GetSavingsResponse> GetSavings(
      const std::string& job_id) const ABSL_LOCKS_EXCLUDED(mu_);

  // The stored stderr tail. Errors: NOT_FOUND, the store's.
  absl::StatusOr<v1::GetJobLogsResponse> GetJobLogs(
      const std::string& job_id) const ABSL_LOCKS_EXCLUDED(mu_);

  // ---- Watching ----

  // Durable events of a job after a sequence number.
  struct EventBatch {
    // Events with sequence > after, in order, at most `max`.
    std::vector<v1::JobEvent> events;
    // True when the job is finished and no event follows `after`.
    bool end = false;
  };

  // Reads events with sequence > `after` (at most `max`). Errors:
  // NOT_FOUND, INVALID_ARGUMENT for after < 0, UNAVAILABLE once shutting
  // down, the store's.
  absl::StatusOr<EventBatch> ReadEvents(const std::string& job_id,
                                        int64_t after, int max) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // Calls `listener` whenever `job_id` gets durable events, until Unwatch.
  // Returns the subscription id. Errors: NOT_FOUND, UNAVAILABLE once
  // shutting down.
  absl::StatusOr<uint64_t> Watch(const std::string& job_id,
                                 std::shared_ptr<EventListener> listener)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Ends a subscription; unknown ids are ignored.
  void Unwatch(const std::string& job_id, uint64_t subscription)
      ABSL_LOCKS_EXCLUDED(mu_);

  // ---- Worker gateway ----

  // Opens a session for a worker: sends Registered (with the running jobs
  // that are not current as stale_jobs) to `sink`, re-attaches the current
  // ones, requeues jobs the worker no longer runs, and places queued work.
  // A previous session of the same name is closed. Returns the session id
  // the other calls take. Errors: INVALID_ARGUMENT (no name), UNAVAILABLE
  // once shutting down.
  absl::StatusOr<uint64_t> RegisterWorker(const v1::RegisterWorker& request,
                                          std::shared_ptr<WorkerSink> sink)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Renews the worker's lease; a change of `draining` changes its state.
  // Running jobs that are not current get a Cancel. Messages of an old
  // session are ignored.
  void Heartbeat(const std::string& worker, uint64_t session,
                 const v1::Heartbeat& heartbeat) ABSL_LOCKS_EXCLUDED(mu_);

  // A run began. Errors: FAILED_PRECONDITION for a stale attempt (counted),
  // NOT_FOUND for an unknown job.
  absl::Status JobStarted(const std::string& worker, uint64_t session,
                          const v1::JobStarted& started)
      ABSL_LOCKS_EXCLUDED(mu_);

  // A training report. Errors as JobStarted.
  absl::Status Report(const std::string& worker, uint64_t session,
                      const v1::JobReport& report) ABSL_LOCKS_EXCLUDED(mu_);

  // The end of a run. Errors as JobStarted, INVALID_ARGUMENT without an
  // outcome.
  absl::Status Result(const std::string& worker, uint64_t session,
                      const v1::JobResult& result) ABSL_LOCKS_EXCLUDED(mu_);

  // The worker's stream ended. Its lease keeps running: it may reconnect
  // within the grace period and keep its jobs.
  void WorkerDisconnected(const std::string& worker, uint64_t session)
      ABSL_LOCKS_EXCLUDED(mu_);

  // ---- Checkpoints ----

  // OK when `attempt` is the current attempt of a running job.
  // FAILED_PRECONDITION (counted as stale) otherwise, NOT_FOUND for an
  // unknown job.
  absl::Status CheckUpload(const std::string& job_id, int32_t attempt)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Records a verified checkpoint file as the job's latest (an event), or
  // FAILED_PRECONDITION when its attempt was superseded meanwhile (the
  // caller deletes the file). The previous file is deleted once the record
  // is durable. `done` runs when durable.
  void RecordCheckpoint(const CheckpointRecord& record, StatusDone done)
      ABSL_LOCKS_EXCLUDED(mu_);

  // The job's latest checkpoint. NOT_FOUND for an unknown job or one
  // without a checkpoint.
  absl::StatusOr<CheckpointRecord> LatestCheckpoint(
      const std::string& job_id) const ABSL_LOCKS_EXCLUDED(mu_);

  // ---- Time and shutdown ----

  // Expires leases that ran out by the clock's now (their jobs are
  // requeued or cancelled). Call periodically.
  void Tick() ABSL_LOCKS_EXCLUDED(mu_);

  // Stops taking work: closes worker sessions, wakes watchers (ReadEvents
  // then answers UNAVAILABLE) and refuses new calls with UNAVAILABLE.
  // Store callbacks still in flight complete normally.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct JobEntry;
  struct WorkerEntry;
  struct Txn;

  JobManager(JobManagerOptions options, Store* store, Clock* clock,
             SchedulerMetrics* metrics, SavingsLedger* savings,
             CheckpointFiles* checkpoints, Logger* logger);

  // Builds the in-memory state from `snapshot`. `record_savings` is false
  // when reloading (the ledger already holds them).
  absl::Status LoadLocked(StoreSnapshot snapshot, bool record_savings = true)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After a failed write (commit number `commit`): discards what was queued
  // on top of it and rebuilds the in-memory state from the store, so that
  // nothing the store does not hold is shown, acknowledged or acted on.
  // Workers are disconnected (they re-register and are reconciled);
  // watchers carry on from the stored events.
  void RecoverFromStoreFailure(uint64_t commit, const absl::Status& cause)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Reads of the store. Each blocks on I/O, so they run without mu_ (the
  // compiler holds callers to that); store_ is read through them only.
  //
  // A finished job that is only in the store; NOT_FOUND when unknown.
  absl::StatusOr<JobRecord> ReadArchived(const std::string& job_id) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // FAILED_PRECONDITION "job J is STATE<what>" for an archived job,
  // NOT_FOUND for an unknown one.
  absl::Status NotLive(const std::string& job_id, absl::string_view what) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // NotLive for an upload's job, counting a stale upload.
  absl::Status StaleUpload(const std::string& job_id) ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<std::vector<std::string>> ReadStoredLogs(
      const std::string& job_id) const ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<std::vector<v1::JobEvent>> ReadStoredEvents(
      const std::string& job_id, int64_t after, int64_t limit) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // The reads that still happen under mu_, because their answer must agree
  // with the in-memory state read in the same critical section: ListJobs
  // (the page merges stored and live jobs), SubmitJob's idempotency lookup
  // (check-then-insert), Fence's late message for an archived job, and
  // RecoverFromStoreFailure's reload. They block every manager call for
  // one SQLite read; the PostgreSQL issue splits JobManager so that they
  // move out. Named so that each such call is visible.
  absl::StatusOr<std::vector<JobRecord>> ReadJobsUnderLock(
      const JobQuery& query) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status NotLiveUnderLock(const std::string& job_id,
                                absl::string_view what) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<StoreSnapshot> LoadUnderLock()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Helpers below require mu_.
  JobEntry* FindJob(const std::string& job_id) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops `e` from memory when it is finished, durable and unwatched.
  void MaybeArchive(JobEntry* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::JobEvent& AddEvent(Txn* txn, JobEntry* e, v1::JobEventKind kind,
                         std::string message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetState(Txn* txn, JobEntry* e, v1::JobState to, std::string message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetUnplaceable(JobEntry* e, bool unplaceable)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records why queued `e` waits; a changed reason becomes a QUEUE_REASON
  // event, so watchers see every change as it happens.
  void SetQueueReason(Txn* txn, JobEntry* e, const std::string& reason,
                      bool unplaceable) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Schedule(Txn* txn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Assign(Txn* txn, JobEntry* e, WorkerEntry* w, v1::Precision precision,
              bool emulated) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Detach(JobEntry* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Requeue(Txn* txn, JobEntry* e, const std::string& reason,
               bool count_restart) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Finish(Txn* txn, JobEntry* e, v1::JobState state,
              const std::string& reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LoseWorker(Txn* txn, WorkerEntry* w, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetWorkerState(Txn* txn, WorkerEntry* w, v1::WorkerState state)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<JobEntry*> Fence(const std::string& worker, uint64_t session,
                                  const std::string& job_id, int32_t attempt,
                                  const char* kind)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues `message` to `w`'s current session, to go out once `txn` is
  // durable.
  void SendAfterCommit(Txn* txn, WorkerEntry* w, v1::SchedulerMessage message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Hands `txn` to the store (which applies mutations in Commit order, so
  // this runs under mu_; the write itself is queued, not waited for).
  void Commit(Txn* txn, StatusDone done) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnDurable(const std::map<std::string, int64_t>& seqs,
                 const absl::Status& status) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status CheckOpen() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const JobManagerOptions options_;
  Store* const store_;
  Clock* const clock_;
  SchedulerMetrics* const metrics_;
  SavingsLedger* const savings_;
  CheckpointFiles* const checkpoints_;
  Logger* const logger_;

  mutable absl::Mutex mu_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  // Commit calls so far.
  uint64_t commits_issued_ ABSL_GUARDED_BY(mu_) = 0;
  // Commits a store reload has superseded.
  uint64_t reloaded_through_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_session_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_subscription_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, std::unique_ptr<JobEntry>> jobs_
      ABSL_GUARDED_BY(mu_);
  std::map<int64_t, JobEntry*> by_seq_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::string> by_idempotency_key_
      ABSL_GUARDED_BY(mu_);
  // Queued jobs by (-priority, seq): placement order.
  std::set<std::pair<int64_t, int64_t>> queue_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::unique_ptr<WorkerEntry>> workers_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, CheckpointRecord> latest_checkpoint_
      ABSL_GUARDED_BY(mu_);
  LeaseTable leases_ ABSL_GUARDED_BY(mu_);
  // Bumped whenever a worker joins, leaves or changes state; queue reasons
  // computed at reasons_generation_ are current while the two are equal.
  uint64_t workers_generation_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t reasons_generation_ ABSL_GUARDED_BY(mu_) = 0;
  // Seqs queued since the last Schedule (their queue reason is unknown).
  std::vector<int64_t> fresh_ ABSL_GUARDED_BY(mu_);
};

}  // namespace halftime::server

#endif  // HALFTIME_SERVER_JOB_MANAGER_H_
