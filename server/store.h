// The scheduler's durable state behind a narrow interface, so that the
// default SQLite store (sqlite_store.h) can be joined by others (e.g.
// PostgreSQL) without touching the job manager.
//
// The job manager keeps the live state in memory and describes each change
// as a StoreMutation; the store applies mutations in the order they were
// handed over and reports when each is durable. Reads that are too large to
// keep in memory (event history, logs) go to the store directly.
#ifndef HALFTIME_SERVER_STORE_H_
#define HALFTIME_SERVER_STORE_H_

#include <climits>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "halftime/v1/job.pb.h"
#include "halftime/v1/worker.pb.h"

namespace halftime::server {

// A job as stored: the public Job plus the scheduler's private bookkeeping.
struct JobRecord {
  // The job as users see it (its event history is stored separately).
  v1::Job job;
  // Submit order; the number in the id ("j-000042" has seq 42).
  int64_t seq = 0;
  // Idempotency key of the submit; empty when none was given.
  std::string idempotency_key;
  // Restarts counted against spec.max_restarts so far.
  int32_t restarts = 0;
  // True once a cancel was sent to the job's worker.
  bool cancel_requested = false;
  // Reason given with that cancel.
  std::string cancel_reason;
  // When the job last became QUEUED (for the queue-wait histogram).
  absl::Time enqueue_time = absl::UnixEpoch();
};

// Metadata of a job's latest checkpoint; the file lives under the data dir.
struct CheckpointRecord {
  // Job the checkpoint belongs to.
  std::string job_id;
  // Training step it holds.
  int64_t step = 0;
  // Attempt that uploaded it.
  int32_t attempt = 0;
  // Absolute path of the file.
  std::string path;
  // File size in bytes.
  int64_t bytes = 0;
  // Hex SHA-256 of the file.
  std::string sha256;
};

// One atomic change of the durable state. Upserts replace the row with the
// same key; events are appended (job_id, sequence) and never rewritten.
struct StoreMutation {
  // Jobs to insert or replace (key: job.id).
  std::vector<JobRecord> jobs;
  // Events to append.
  std::vector<v1::JobEvent> events;
  // Workers to insert or replace (key: name).
  std::vector<v1::Worker> workers;
  // Latest checkpoint per job to insert or replace (key: job_id).
  std::vector<CheckpointRecord> checkpoints;
  // Stderr tails to replace (job id, lines).
  std::vector<std::pair<std::string, std::vector<std::string>>> logs;
  // Savings to insert or replace (job id, savings).
  std::vector<std::pair<std::string, v1::Savings>> savings;

  // True when the mutation changes nothing (then it only orders: its
  // completion says that every earlier mutation is durable).
  bool empty() const {
    return jobs.empty() && events.empty() && workers.empty() &&
           checkpoints.empty() && logs.empty() && savings.empty();
  }
};

// Which stored jobs ReadJobs returns: those matching every field that is
// set, newest (highest seq) first.
struct JobQuery {
  // Only this job.
  std::string job_id;
  // Only the job submitted with this idempotency key.
  std::string idempotency_key;
  // Only jobs in one of these states (v1::JobState values); empty: any.
  std::vector<int> states;
  // Only jobs with seq < before_seq.
  int64_t before_seq = INT64_MAX;
  // At most this many.
  int limit = 1;
};

// Everything the scheduler loads at start-up. Finished jobs are counted, not
// read: start-up does not grow with history (ReadJobs serves them).
struct StoreSnapshot {
  // Every job not yet finished (not succeeded, failed or cancelled), in
  // submit order.
  std::vector<JobRecord> jobs;
  // How many finished jobs the store holds, by state.
  std::map<v1::JobState, int64_t> finished_jobs;
  // The largest job sequence number ever stored; 0 when there is none.
  int64_t max_job_seq = 0;
  // Every worker ever registered.
  std::vector<v1::Worker> workers;
  // The latest checkpoint of each job that has one.
  std::vector<CheckpointRecord> checkpoints;
  // Savings of every job that has them, in submit order.
  std::vector<std::pair<std::string, v1::Savings>> savings;
};

// Durable state of the scheduler.
//
// Thread-safety: implementations are thread-safe.
class Store {
 public:
  // Called once a mutation is durable (OK) or has failed.
  using Done = std::function<void(absl::Status)>;

  virtual ~Store() = default;

  // Reads the whole state (everything but events and logs). Errors: the
  // store's (e.g. DATA_LOSS for a corrupt row, INTERNAL for I/O).
  virtual absl::StatusOr<StoreSnapshot> Load() = 0;

  // Queues `mutation`. Mutations become durable in the order Apply was
  // called; `done` runs on a store thread after the mutation is durable
  // (never inline, so callers may hold their own locks), with OK or the
  // error that made the whole batch fail. After Close, `done` runs inline
  // with FAILED_PRECONDITION.
  virtual void Apply(StoreMutation mutation, Done done) = 0;

  // Returns up to `limit` events of `job_id` with sequence > `after`, in
  // order. Only durable events are returned. Errors: INTERNAL for I/O.
  virtual absl::StatusOr<std::vector<v1::JobEvent>> ReadEvents(
      const std::string& job_id, int64_t after, int64_t limit) = 0;

  // Returns the stored jobs matching `query`, newest first. Only durable
  // state is returned. Errors: DATA_LOSS for a corrupt row, INTERNAL for I/O.
  virtual absl::StatusOr<std::vector<JobRecord>> ReadJobs(
      const JobQuery& query) = 0;

  // Returns the stored stderr tail of `job_id` (empty when none).
  virtual absl::StatusOr<std::vector<std::string>> ReadLogs(
      const std::string& job_id) = 0;

  // Fails every mutation queued and not yet written: each one's `done` runs
  // (on a store thread, never inline) with `status` and nothing of it is
  // written. For a caller whose earlier mutation failed: what it queued
  // after that was built on state the store does not hold.
  virtual void DiscardQueued(const absl::Status& status) = 0;

  // Finishes queued mutations (running their callbacks) and closes the
  // store. Idempotent.
  virtual void Close() = 0;
};

}  // namespace halftime::server

#endif  // HALFTIME_SERVER_STORE_H_
