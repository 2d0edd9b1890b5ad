#include "server/job_manager.h"

#include <algorithm>
#include <cmath>
#include <string_view>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/baseline_fingerprint.h"
#include "common/enum_names.h"
#include "common/spec.h"
#include "server/placement.h"

namespace halftime::server {
namespace {

// A Commit callback that answers `done` with `value` once the change is
// durable, or with the store's error.
template <typename Value, typename Done>
std::function<void(absl::Status)> ReplyWhenDurable(Value value, Done done) {
  return
      [value = std::move(value), done = std::move(done)](absl::Status status) {
        if (status.ok()) {
          done(value);
        } else {
          done(status);
        }
      };
}
constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 1000;

void SetTimestamp(google::protobuf::Timestamp* ts, absl::Time t) {
  int64_t seconds = absl::ToUnixSeconds(t);
  ts->set_seconds(seconds);
  ts->set_nanos(static_cast<int32_t>((t - absl::FromUnixSeconds(seconds)) /
                                     absl::Nanoseconds(1)));
}

bool IsActive(v1::JobState state) {
  return state == v1::JOB_STATE_ASSIGNED || state == v1::JOB_STATE_RUNNING;
}

std::string JobNotFound(const std::string& job_id) {
  return absl::StrCat("job ", job_id, " not found");
}

}  // namespace

// A job and its live bookkeeping.
struct JobManager::JobEntry {
  JobRecord rec;
  // Latest events, contiguous, ending at rec.job.last_event_sequence.
  std::deque<v1::JobEvent> tail;
  // Highest sequence known durable.
  int64_t durable_seq = 0;
  std::map<uint64_t, std::shared_ptr<EventListener>> listeners;
  // Report downsampling state of the current attempt.
  int32_t report_attempt = 0;
  int64_t last_report_event_step = 0;
  int64_t last_eval_event_step = 0;
  // Precision the current run reports (to notice fallbacks).
  v1::Precision run_precision = v1::PRECISION_UNSPECIFIED;
  // QUEUED and no current worker can run it (halftime_jobs_unplaceable).
  bool unplaceable = false;

  const std::string& id() const { return rec.job.id(); }
  v1::JobState state() const { return rec.job.state(); }
};

// A worker and its session.
struct JobManager::WorkerEntry {
  v1::Worker info;                   // job_ids filled only when listing
  std::shared_ptr<WorkerSink> sink;  // null while disconnected
  uint64_t session = 0;
  std::set<std::string> jobs;  // ids of ASSIGNED/RUNNING jobs on it

  int slots() const { return std::max(1, info.capabilities().slots()); }
  bool accepting() const {
    return sink != nullptr && info.state() == v1::WORKER_STATE_READY;
  }
};

// Changes collected under the lock and committed as one store mutation.
struct JobManager::Txn {
  StoreMutation mutation;
  std::set<JobEntry*> dirty_jobs;
  std::set<WorkerEntry*> dirty_workers;
  std::map<std::string, int64_t> seqs;  // job id -> last event appended
  std::vector<std::string> remove_after_commit;  // superseded files
  // Messages to workers, sent in order once the mutation is durable: a
  // worker never acts on a decision (an assignment, an attempt number, a
  // stale verdict) that a crash could still undo.
  std::vector<std::pair<std::shared_ptr<WorkerSink>, v1::SchedulerMessage>>
      outbox;
};

JobManager::JobManager(JobManagerOptions options, Store* store, Clock* clock,
                       SchedulerMetrics* metrics, SavingsLedger* savings,
                       CheckpointFiles* checkpoints, Logger* logger)
    : options_(options),
      store_(store),
      clock_(clock),
      metrics_(metrics),
      savings_(savings),
      checkpoints_(checkpoints),
      logger_(logger),
      leases_(options.lease_grace) {}

JobManager::~JobManager() = default;

absl::StatusOr<std::unique_ptr<JobManager>> JobManager::Create(
    JobManagerOptions options, Store* store, Clock* clock,
    SchedulerMetrics* metrics, SavingsLedger* savings,
    CheckpointFiles* checkpoints, Logger* logger) {
  absl::StatusOr<StoreSnapshot> snapshot = store->Load();
  if (!snapshot.ok()) return snapshot.status();
  std::unique_ptr<JobManager> manager(new JobManager(
      options, store, clock, metrics, savings, checkpoints, logger));
  absl::MutexLock lock(&manager->mu_);
  if (absl::Status s = manager->LoadLocked(*std::move(snapshot)); !s.ok()) {
    return s;
  }
  return manager;
}

absl::Status JobManager::LoadLocked(StoreSnapshot snapshot,
                                    bool record_savings) {
  absl::Time now = clock_->Now();
  for (v1::Worker& worker : snapshot.workers) {
    auto w = std::make_unique<WorkerEntry>();
    w->info = std::move(worker);
    w->info.clear_job_ids();
    if (w->info.state() != v1::WORKER_STATE_LOST) {
      // Give it one grace period to reconnect and re-attach its jobs.
      leases_.Renew(w->info.name(), now);
    }
    metrics_->workers(w->info.state()).Increment();
    workers_[w->info.name()] = std::move(w);
  }
  next_seq_ = std::max(next_seq_, snapshot.max_job_seq + 1);
  for (const auto& [state, count] : snapshot.finished_jobs) {
    metrics_->AddJobs(state, count);
  }
  for (JobRecord& record : snapshot.jobs) {
    auto e = std::make_unique<JobEntry>();
    e->rec = std::move(record);
    e->durable_seq = e->rec.job.last_event_sequence();
    e->report_attempt = e->rec.job.attempt();
    e->last_report_event_step = e->rec.job.latest_report().step();
    JobEntry* entry = e.get();
    // Only unfinished jobs come back (finished ones stay in the store, see
    // Archive); max_job_seq above already covers every stored seq.
    metrics_->JobStateChanged(v1::JOB_STATE_UNSPECIFIED, entry->state());
    if (!entry->rec.idempotency_key.empty()) {
      by_idempotency_key_[entry->rec.idempotency_key] = entry->id();
    }
    if (entry->state() == v1::JOB_STATE_QUEUED) {
      queue_.insert({-static_cast<int64_t>(entry->rec.job.spec().priority()),
                     entry->rec.seq});
    } else if (IsActive(entry->state())) {
      auto& w = workers_[entry->rec.job.worker()];
      if (w == nullptr) {
        // A worker row lost with the job still on it: let it reconnect.
        w = std::make_unique<WorkerEntry>();
        w->info.set_name(entry->rec.job.worker());
        w->info.set_state(v1::WORKER_STATE_READY);
        metrics_->workers(v1::WORKER_STATE_READY).Increment();
        leases_.Renew(w->info.name(), now);
      }
      w->jobs.insert(entry->id());
    }
    by_seq_[entry->rec.seq] = entry;
    jobs_[entry->id()] = std::move(e);
  }
  for (CheckpointRecord& c : snapshot.checkpoints) {
    latest_checkpoint_[c.job_id] = std::move(c);
  }
  if (record_savings) {
    for (const auto& [job_id, savings] : snapshot.savings) {
      savings_->Record(job_id, savings);
    }
  }
  Txn txn;
  Schedule(&txn);  // computes queue reasons; no worker is connected yet
  if (logger_->enabled()) {
    logger_->Log("state_loaded", {{"jobs", absl::StrCat(jobs_.size())},
                                  {"queued", absl::StrCat(queue_.size())},
                                  {"workers", absl::StrCat(workers_.size())}});
  }
  return absl::OkStatus();
}

absl::Status JobManager::CheckOpen() const {
  if (shutting_down_) {
    return absl::UnavailableError("scheduler is shutting down");
  }
  return absl::OkStatus();
}

JobManager::JobEntry* JobManager::FindJob(const std::string& job_id) const {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : it->second.get();
}

namespace {

JobQuery OneJob(const std::string& job_id) {
  JobQuery query;
  query.job_id = job_id;
  return query;
}

// The record a one-job query found; NOT_FOUND when it found none.
absl::StatusOr<JobRecord> FoundJob(
    const std::string& job_id, absl::StatusOr<std::vector<JobRecord>> found) {
  if (!found.ok()) return found.status();
  if (found->empty()) return absl::NotFoundError(JobNotFound(job_id));
  return std::move(found->front());
}

// FAILED_PRECONDITION "job J is STATE<what>" for a found archived job.
absl::Status ArchivedNotLive(const std::string& job_id,
                             const absl::StatusOr<JobRecord>& archived,
                             absl::string_view what) {
  if (!archived.ok()) return archived.status();
  return absl::FailedPreconditionError(absl::StrCat(
      "job ", job_id, " is ", JobStateName(archived->job.state()), what));
}

}  // namespace

absl::StatusOr<JobRecord> JobManager::ReadArchived(
    const std::string& job_id) const {
  return FoundJob(job_id, store_->ReadJobs(OneJob(job_id)));
}

absl::Status JobManager::NotLive(const std::string& job_id,
                                 absl::string_view what) const {
  return ArchivedNotLive(job_id, ReadArchived(job_id), what);
}

absl::StatusOr<std::vector<std::string>> JobManager::ReadStoredLogs(
    const std::string& job_id) const {
  return store_->ReadLogs(job_id);
}

absl::StatusOr<std::vector<v1::JobEvent>> JobManager::ReadStoredEvents(
    const std::string& job_id, int64_t after, int64_t limit) const {
  return store_->ReadEvents(job_id, after, limit);
}

absl::StatusOr<std::vector<JobRecord>> JobManager::ReadJobsUnderLock(
    const JobQuery& query) const {
  return store_->ReadJobs(query);
}

absl::Status JobManager::NotLiveUnderLock(const std::string& job_id,
                                          absl::string_view what) const {
  return ArchivedNotLive(
      job_id, FoundJob(job_id, ReadJobsUnderLock(OneJob(job_id))), what);
}

absl::StatusOr<StoreSnapshot> JobManager::LoadUnderLock() {
  return store_->Load();
}

void JobManager::MaybeArchive(JobEntry* e) {
  if (!IsTerminal(e->state()) || !e->listeners.empty() ||
      e->durable_seq < e->rec.job.last_event_sequence()) {
    return;
  }
  // Finished, stored and unwatched: from now on it is read from the store,
  // so the scheduler's memory holds live jobs only, however long it runs.
  by_seq_.erase(e->rec.seq);
  if (auto it = by_idempotency_key_.find(e->rec.idempotency_key);
      it != by_idempotency_key_.end() && it->second == e->id()) {
    by_idempotency_key_.erase(it);
  }
  latest_checkpoint_.erase(e->id());
  jobs_.erase(e->id());  // destroys *e
}

v1::JobEvent& JobManager::AddEvent(Txn* txn, JobEntry* e, v1::JobEventKind kind,
                                   std::string message) {
  v1::Job& job = e->rec.job;
  int64_t seq = job.last_event_sequence() + 1;
  job.set_last_event_sequence(seq);
  v1::JobEvent event;
  event.set_job_id(job.id());
  event.set_sequence(seq);
  event.set_kind(kind);
  SetTimestamp(event.mutable_time(), clock_->Now());
  event.set_state(job.state());
  event.set_attempt(job.attempt());
  event.set_worker(job.worker());
  event.set_message(std::move(message));
  e->tail.push_back(event);
  while (static_cast<int>(e->tail.size()) > options_.memory_events &&
         e->tail.front().sequence() <= e->durable_seq) {
    e->tail.pop_front();
  }
  txn->dirty_jobs.insert(e);
  txn->seqs[job.id()] = seq;
  txn->mutation.events.push_back(std::move(event));
  return txn->mutation.events.back();
}

void JobManager::SetState(Txn* txn, JobEntry* e, v1::JobState to,
                          std::string message) {
  v1::Job& job = e->rec.job;
  metrics_->JobStateChanged(job.state(), to);
  job.set_state(to);
  absl::Time now = clock_->Now();
  if (to == v1::JOB_STATE_RUNNING) SetTimestamp(job.mutable_start_time(), now);
  if (IsTerminal(to)) SetTimestamp(job.mutable_end_time(), now);
  if (to != v1::JOB_STATE_QUEUED) {
    job.clear_queue_reason();
    job.clear_unplaceable();
    SetUnplaceable(e, false);
  }
  if (logger_->enabled()) {
    logger_->Log("job_state", {{"job", job.id()},
                               {"state", JobStateName(to)},
                               {"attempt", absl::StrCat(job.attempt())},
                               {"worker", job.worker()},
                               {"message", message}});
  }
  AddEvent(txn, e, v1::JOB_EVENT_KIND_STATE_CHANGED, std::move(message));
}

void JobManager::SetQueueReason(Txn* txn, JobEntry* e,
                                const std::string& reason, bool unplaceable) {
  SetUnplaceable(e, unplaceable);
  v1::Job& job = e->rec.job;
  job.set_unplaceable(unplaceable);
  if (job.queue_reason() == reason) return;
  job.set_queue_reason(reason);
  AddEvent(txn, e, v1::JOB_EVENT_KIND_QUEUE_REASON, reason);
}

void JobManager::SetUnplaceable(JobEntry* e, bool unplaceable) {
  if (e->unplaceable == unplaceable) return;
  e->unplaceable = unplaceable;
  prometheus::Gauge& gauge =
      metrics_->jobs_unplaceable(e->rec.job.spec().precision());
  if (unplaceable) {
    gauge.Increment();
  } else {
    gauge.Decrement();
  }
}

void JobManager::Commit(Txn* txn, StatusDone done) {
  for (JobEntry* e : txn->dirty_jobs) txn->mutation.jobs.push_back(e->rec);
  for (WorkerEntry* w : txn->dirty_workers) {
    v1::Worker worker = w->info;
    worker.clear_job_ids();
    txn->mutation.workers.push_back(std::move(worker));
  }
  if (txn->mutation.empty() && txn->outbox.empty() && !done) return;
  std::vector<std::string> remove = std::move(txn->remove_after_commit);
  const uint64_t commit = ++commits_issued_;
  store_->Apply(std::move(txn->mutation),
                [this, commit, seqs = std::move(txn->seqs),
                 remove = std::move(remove), outbox = std::move(txn->outbox),
                 done = std::move(done)](absl::Status status) {
                  if (status.ok()) {
                    for (const std::string& path : remove)
                      checkpoints_->Remove(path);
                  }
                  // The store applies mutations in Commit order (under mu_)
                  // and runs these callbacks in that order, so each worker
                  // gets its messages in the order they were decided.
                  for (const auto& [sink, message] : outbox) {
                    if (status.ok()) {
                      sink->Send(message);
                    } else {
                      // Not durable: the worker reconnects and is
                      // reconciled with what the store holds.
                      sink->Close(absl::UnavailableError(absl::StrCat(
                          "scheduler store failed: ", status.message())));
                    }
                  }
                  if (!status.ok()) RecoverFromStoreFailure(commit, status);
                  OnDurable(seqs, status);
                  if (done) done(status);
                });
}

void JobManager::RecoverFromStoreFailure(uint64_t commit,
                                         const absl::Status& cause) {
  std::vector<std::shared_ptr<WorkerSink>> sinks;
  std::vector<std::shared_ptr<EventListener>> wake;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_ || commit <= reloaded_through_) return;
    reloaded_through_ = commits_issued_;
    // Whatever was queued after the failed write was built on it.
    store_->DiscardQueued(absl::Status(
        cause.code(), absl::StrCat("not stored (an earlier write failed: ",
                                   cause.message(), ")")));
    absl::StatusOr<StoreSnapshot> snapshot = LoadUnderLock();
    if (!snapshot.ok()) {
      if (logger_->enabled()) {
        logger_->Log("store_reload_failed",
                     {{"error", std::string(snapshot.status().message())}});
      }
      return;
    }
    std::map<std::string, std::map<uint64_t, std::shared_ptr<EventListener>>>
        listeners;
    for (auto& [id, e] : jobs_) {
      for (auto& [sub, listener] : e->listeners) wake.push_back(listener);
      if (!e->listeners.empty()) listeners[id] = std::move(e->listeners);
    }
    for (auto& [name, w] : workers_) {
      if (w->sink != nullptr) sinks.push_back(w->sink);
    }
    jobs_.clear();
    by_seq_.clear();
    by_idempotency_key_.clear();
    queue_.clear();
    fresh_.clear();
    workers_.clear();
    latest_checkpoint_.clear();
    metrics_->ResetJobAndWorkerGauges();
    const int64_t next_seq = next_seq_;
    LoadLocked(*std::move(snapshot), /*record_savings=*/false).IgnoreError();
    next_seq_ = std::max(next_seq_, next_seq);  // ids shown are not reused
    for (auto& [id, subscribed] : listeners) {
      if (JobEntry* e = FindJob(id); e != nullptr) {
        e->listeners = std::move(subscribed);
      }
    }
    if (logger_->enabled()) {
      logger_->Log("store_reloaded", {{"error", std::string(cause.message())},
                                      {"jobs", absl::StrCat(jobs_.size())}});
    }
  }
  const absl::Status reconnect = absl::UnavailableError(absl::StrCat(
      "scheduler storage failed (", cause.message(), "); reconnect"));
  for (const auto& sink : sinks) sink->Close(reconnect);
  for (const auto& listener : wake) listener->OnEvents();
}

void JobManager::SendAfterCommit(Txn* txn, WorkerEntry* w,
                                 v1::SchedulerMessage message) {
  txn->outbox.emplace_back(w->sink, std::move(message));
}

void JobManager::OnDurable(const std::map<std::string, int64_t>& seqs,
                           const absl::Status& status) {
  if (!status.ok()) {
    // Nothing became durable (RecoverFromStoreFailure has reloaded).
    if (logger_->enabled()) {
      logger_->Log("store_error", {{"error", std::string(status.message())}});
    }
    return;
  }
  if (seqs.empty()) return;
  std::vector<std::shared_ptr<EventListener>> wake;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [job_id, seq] : seqs) {
      JobEntry* e = FindJob(job_id);
      if (e == nullptr || seq <= e->durable_seq) continue;
      e->durable_seq = seq;
      for (const auto& [id, listener] : e->listeners) wake.push_back(listener);
      if (status.ok() && IsTerminal(e->state()) &&
          e->durable_seq == e->rec.job.last_event_sequence()) {
        // Finished and stored: later readers go to the store.
        std::deque<v1::JobEvent>().swap(e->tail);
        MaybeArchive(e);  // may destroy e
      }
    }
  }
  for (const auto& listener : wake) listener->OnEvents();
}

// ---------------------------------------------------------------------------
// Placement.

void JobManager::Schedule(Txn* txn) {
  if (queue_.empty()) {
    fresh_.clear();
    return;
  }
  std::vector<WorkerEntry*> workers;
  std::vector<PlacementWorker> views;
  for (auto& [name, w] : workers_) {
    if (w->info.state() == v1::WORKER_STATE_LOST) continue;
    workers.push_back(w.get());
    // Memory promised to its jobs: their estimates, where known.
    int64_t free_memory = -1;
    if (w->info.capabilities().memory_bytes() > 0) {
      free_memory = w->info.capabilities().memory_bytes();
      for (const std::string& id : w->jobs) {
        if (const JobEntry* j = FindJob(id); j != nullptr) {
          free_memory -= j->rec.job.memory_estimate().total_bytes();
        }
      }
    }
    views.push_back(PlacementWorker{
        &w->info.capabilities(), w->slots() - static_cast<int>(w->jobs.size()),
        w->accepting(), free_memory});
  }
  bool any_free = false;
  for (const PlacementWorker& view : views) {
    any_free |= view.accepting && view.free_slots > 0;
  }
  // Without a free slot nothing can be placed and the reasons of jobs
  // already explained stay true until the set of workers changes: only new
  // (or requeued) jobs need a look, which keeps a long queue cheap.
  bool only_new = !any_free && reasons_generation_ == workers_generation_;
  reasons_generation_ = workers_generation_;
  std::vector<JobEntry*> queued;
  std::vector<const v1::JobSpec*> specs;
  if (only_new) {
    for (int64_t seq : fresh_) {
      auto it = by_seq_.find(seq);
      if (it == by_seq_.end() || it->second->state() != v1::JOB_STATE_QUEUED) {
        continue;
      }
      queued.push_back(it->second);
      specs.push_back(&it->second->rec.job.spec());
    }
  } else {
    for (const auto& [neg_priority, seq] : queue_) {
      JobEntry* e = by_seq_.at(seq);
      queued.push_back(e);
      specs.push_back(&e->rec.job.spec());
    }
  }
  fresh_.clear();
  std::vector<PlacementDecision> decisions = Place(specs, std::move(views));
  for (size_t i = 0; i < queued.size(); ++i) {
    if (decisions[i].estimate) {
      *queued[i]->rec.job.mutable_memory_estimate() = *decisions[i].estimate;
    } else {
      queued[i]->rec.job.clear_memory_estimate();
    }
    if (decisions[i].worker < 0) {
      SetQueueReason(txn, queued[i], decisions[i].queue_reason,
                     decisions[i].unplaceable);
    } else {
      Assign(txn, queued[i], workers[decisions[i].worker],
             decisions[i].precision, decisions[i].emulated);
    }
  }
}

void JobManager::Assign(Txn* txn, JobEntry* e, WorkerEntry* w,
                        v1::Precision precision, bool emulated) {
  v1::Job& job = e->rec.job;
  queue_.erase({-static_cast<int64_t>(job.spec().priority()), e->rec.seq});
  w->jobs.insert(job.id());
  job.set_worker(w->info.name());
  job.set_resolved_precision(precision);
  job.set_emulated(emulated);
  job.clear_start_time();
  absl::Time now = clock_->Now();
  metrics_->queue_wait().Observe(absl::ToDoubleSeconds(
      std::max(absl::ZeroDuration(), now - e->rec.enqueue_time)));
  SetState(txn, e, v1::JOB_STATE_ASSIGNED,
           absl::StrCat("assigned to ", w->info.name(), " (attempt ",
                        job.attempt(), ", ", PrecisionName(precision),
                        emulated ? ", emulated" : "", ")"));
  v1::SchedulerMessage message;
  v1::Assignment* a = message.mutable_assignment();
  a->set_job_id(job.id());
  a->set_attempt(job.attempt());
  *a->mutable_spec() = job.spec();
  ResolvePrecision(a->mutable_spec(), precision);
  if (auto it = latest_checkpoint_.find(job.id());
      it != latest_checkpoint_.end()) {
    a->set_has_checkpoint(true);
    a->set_checkpoint_step(it->second.step);
  }
  if (a->spec().savings().baseline() == v1::BASELINE_MODE_CACHED) {
    std::optional<v1::Savings> cached = savings_->CachedBaseline(
        BaselineFingerprint(a->spec(), w->info.capabilities()));
    if (cached) *a->mutable_cached_baseline() = std::move(*cached);
  }
  e->run_precision = precision;
  SendAfterCommit(txn, w, std::move(message));
}

// Takes `e` off its worker and out of the queue.
void JobManager::Detach(JobEntry* e) {
  if (auto it = workers_.find(e->rec.job.worker()); it != workers_.end()) {
    it->second->jobs.erase(e->id());
  }
  queue_.erase(
      {-static_cast<int64_t>(e->rec.job.spec().priority()), e->rec.seq});
}

void JobManager::Requeue(Txn* txn, JobEntry* e, const std::string& reason,
                         bool count_restart) {
  if (count_restart) {
    ++e->rec.restarts;
    metrics_->job_restarts().Increment();
    int32_t max_restarts = e->rec.job.spec().max_restarts();
    if (e->rec.restarts > max_restarts) {
      Finish(txn, e, v1::JOB_STATE_FAILED,
             absl::StrCat(reason, " (gave up after ", max_restarts,
                          max_restarts == 1 ? " restart)" : " restarts)"));
      return;
    }
  }
  Detach(e);
  v1::Job& job = e->rec.job;
  job.set_attempt(job.attempt() + 1);
  e->rec.enqueue_time = clock_->Now();
  e->rec.cancel_requested = false;
  job.clear_queue_reason();
  queue_.insert({-static_cast<int64_t>(job.spec().priority()), e->rec.seq});
  fresh_.push_back(e->rec.seq);
  SetState(txn, e, v1::JOB_STATE_QUEUED,
           absl::StrCat("requeued as attempt ", job.attempt(), ": ", reason));
}

void JobManager::Finish(Txn* txn, JobEntry* e, v1::JobState state,
                        const std::string& reason) {
  Detach(e);
  if (state != v1::JOB_STATE_SUCCEEDED) e->rec.job.set_failure_reason(reason);
  SetState(txn, e, state, reason);
}

void JobManager::SetWorkerState(Txn* txn, WorkerEntry* w,
                                v1::WorkerState state) {
  if (w->info.state() == state) return;
  ++workers_generation_;
  metrics_->workers(w->info.state()).Decrement();
  metrics_->workers(state).Increment();
  w->info.set_state(state);
  txn->dirty_workers.insert(w);
}

void JobManager::LoseWorker(Txn* txn, WorkerEntry* w,
                            const std::string& reason) {
  if (logger_->enabled()) {
    logger_->Log("worker_lost",
                 {{"worker", w->info.name()}, {"reason", reason}});
  }
  SetWorkerState(txn, w, v1::WORKER_STATE_LOST);
  leases_.Remove(w->info.name());
  if (w->sink != nullptr) {
    w->sink->Close(absl::UnavailableError(reason));
    w->sink = nullptr;
  }
  w->session = 0;
  std::vector<std::string> jobs(w->jobs.begin(), w->jobs.end());
  for (const std::string& job_id : jobs) {
    JobEntry* e = FindJob(job_id);
    if (e == nullptr) continue;
    if (e->rec.cancel_requested) {
      Finish(txn, e, v1::JOB_STATE_CANCELLED,
             absl::StrCat("cancelled: ", e->rec.cancel_reason, " (worker ",
                          w->info.name(), " gone)"));
    } else {
      Requeue(txn, e,
              absl::StrCat("worker ", w->info.name(), " lost: ", reason),
              /*count_restart=*/true);
    }
  }
}

// ---------------------------------------------------------------------------
// Scheduler service.

void JobManager::SubmitJob(v1::JobSpec spec, const std::string& idempotency_key,
                           SubmitDone done) {
  // `done` never runs under mu_ (it may call back into the manager).
  absl::ReleasableMutexLock lock(&mu_);
  if (absl::Status s = CheckOpen(); !s.ok()) {
    lock.Release();
    done(s);
    return;
  }
  Txn txn;
  v1::SubmitJobResponse response;
  if (!idempotency_key.empty()) {
    auto it = by_idempotency_key_.find(idempotency_key);
    if (it != by_idempotency_key_.end()) {
      *response.mutable_job() = FindJob(it->second)->rec.job;
      response.set_deduplicated(true);
      // An empty mutation: done runs once the original job is durable.
      Commit(&txn, ReplyWhenDurable(std::move(response), std::move(done)));
      return;
    }
    // A finished job is only in the store.
    JobQuery query;
    query.idempotency_key = idempotency_key;
    absl::StatusOr<std::vector<JobRecord>> archived = ReadJobsUnderLock(query);
    if (!archived.ok()) {
      lock.Release();
      done(archived.status());
      return;
    }
    if (!archived->empty()) {
      *response.mutable_job() = std::move(archived->front().job);
      response.set_deduplicated(true);
      lock.Release();
      done(std::move(response));
      return;
    }
  }
  auto owned = std::make_unique<JobEntry>();
  JobEntry* e = owned.get();
  e->rec.seq = next_seq_++;
  e->rec.idempotency_key = idempotency_key;
  e->rec.enqueue_time = clock_->Now();
  v1::Job& job = e->rec.job;
  job.set_id(absl::StrFormat("j-%06d", e->rec.seq));
  *job.mutable_spec() = std::move(spec);
  job.set_attempt(1);
  SetTimestamp(job.mutable_submit_time(), e->rec.enqueue_time);
  jobs_[job.id()] = std::move(owned);
  by_seq_[e->rec.seq] = e;
  if (!e->rec.idempotency_key.empty()) {
    by_idempotency_key_[e->rec.idempotency_key] = job.id();
  }
  queue_.insert({-static_cast<int64_t>(job.spec().priority()), e->rec.seq});
  fresh_.push_back(e->rec.seq);
  metrics_->jobs_submitted().Increment();
  SetState(&txn, e, v1::JOB_STATE_QUEUED,
           absl::StrCat("submitted: ", job.spec().name()));
  Schedule(&txn);
  *response.mutable_job() = job;
  Commit(&txn, ReplyWhenDurable(std::move(response), std::move(done)));
}

absl::StatusOr<v1::Job> JobManager::GetJob(const std::string& job_id) const {
  {
    absl::MutexLock lock(&mu_);
    if (JobEntry* e = FindJob(job_id); e != nullptr) return e->rec.job;
  }
  absl::StatusOr<JobRecord> archived = ReadArchived(job_id);
  if (!archived.ok()) return archived.status();
  return std::move(archived->job);
}

absl::StatusOr<v1::ListJobsResponse> JobManager::ListJobs(
    const v1::ListJobsRequest& request) const {
  if (request.page_size() < 0) {
    return absl::InvalidArgumentError("page_size: must not be negative");
  }
  int page_size = request.page_size() == 0
                      ? kDefaultPageSize
                      : std::min(request.page_size(), kMaxPageSize);
  int64_t before = INT64_MAX;
  if (!request.page_token().empty()) {
    std::string decoded;
    if (!absl::WebSafeBase64Unescape(request.page_token(), &decoded) ||
        !absl::StartsWith(decoded, "before:") ||
        !absl::SimpleAtoi(absl::string_view(decoded).substr(7), &before) ||
        before <= 0) {
      return absl::InvalidArgumentError(
          "page_token: not a token from a ListJobs response");
    }
  }
  std::set<int> states(request.states().begin(), request.states().end());
  for (int state : states) {
    if (state <= v1::JOB_STATE_UNSPECIFIED || !v1::JobState_IsValid(state)) {
      return absl::InvalidArgumentError(
          absl::StrCat("states: ", state, " is not a job state"));
    }
  }
  v1::ListJobsResponse response;
  absl::MutexLock lock(&mu_);
  // Finished jobs live in the store, the others in memory (newer than the
  // store's rows of them). The store's newest `limit` matches hold at least
  // page_size + 1 jobs that are not in memory, so the page is complete.
  JobQuery query;
  query.states.assign(states.begin(), states.end());
  query.before_seq = before;
  query.limit = page_size + 1 + static_cast<int>(jobs_.size());
  absl::StatusOr<std::vector<JobRecord>> stored = ReadJobsUnderLock(query);
  if (!stored.ok()) return stored.status();
  int64_t window_start = 0;  // the store's rows cover seqs >= this
  if (static_cast<int>(stored->size()) == query.limit) {
    window_start = stored->back().seq;
  }
  std::map<int64_t, const v1::Job*, std::greater<int64_t>> page;
  for (const JobRecord& record : *stored) {
    if (by_seq_.count(record.seq) == 0) page[record.seq] = &record.job;
  }
  for (auto it = by_seq_.lower_bound(window_start);
       it != by_seq_.end() && it->first < before; ++it) {
    const JobEntry* e = it->second;
    if (!states.empty() && !states.count(e->state())) continue;
    page[it->first] = &e->rec.job;
  }
  int64_t last_seq = 0;
  for (const auto& [seq, job] : page) {
    if (response.jobs_size() == page_size) {
      response.set_next_page_token(
          absl::WebSafeBase64Escape(absl::StrCat("before:", last_seq)));
      break;
    }
    *response.add_jobs() = *job;
    last_seq = seq;
  }
  return response;
}

void JobManager::CancelJob(const std::string& job_id, const std::string& reason,
                           JobDone done) {
  absl::Status error;
  bool archived = false;  // not in memory: the store says why
  {
    absl::MutexLock lock(&mu_);
    error = CheckOpen();
    JobEntry* e = error.ok() ? FindJob(job_id) : nullptr;
    if (error.ok() && e == nullptr) {
      archived = true;
    } else if (error.ok() && IsTerminal(e->state())) {
      error = absl::FailedPreconditionError(absl::StrCat(
          "job ", job_id, " is already ", JobStateName(e->state())));
    }
    if (error.ok() && !archived) {
      std::string why = reason.empty() ? "by user" : reason;
      Txn txn;
      WorkerEntry* w = nullptr;
      if (IsActive(e->state())) {
        auto it = workers_.find(e->rec.job.worker());
        if (it != workers_.end() && it->second->sink != nullptr) {
          w = it->second.get();
        }
      }
      if (w != nullptr) {
        if (!e->rec.cancel_requested) {
          e->rec.cancel_requested = true;
          e->rec.cancel_reason = why;
          AddEvent(&txn, e, v1::JOB_EVENT_KIND_NOTICE,
                   absl::StrCat("cancel requested: ", why));
        }
        v1::SchedulerMessage message;
        message.mutable_cancel()->set_job_id(job_id);
        message.mutable_cancel()->set_attempt(e->rec.job.attempt());
        message.mutable_cancel()->set_reason(e->rec.cancel_reason);
        SendAfterCommit(&txn, w, std::move(message));
      } else {
        Finish(&txn, e, v1::JOB_STATE_CANCELLED,
               absl::StrCat("cancelled: ", why));
        Schedule(&txn);
      }
      Commit(&txn, ReplyWhenDurable(e->rec.job, done));
      return;
    }
  }
  if (archived) {
    absl::StatusOr<JobRecord> record = ReadArchived(job_id);
    error = !record.ok() ? record.status()
                         : absl::FailedPreconditionError(
                               absl::StrCat("job ", job_id, " is already ",
                                            JobStateName(record->job.state())));
  }
  done(error);
}

int JobManager::live_jobs() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(jobs_.size());
}

v1::ListWorkersResponse JobManager::ListWorkers() const {
  absl::MutexLock lock(&mu_);
  v1::ListWorkersResponse response;
  for (const auto& [name, w] : workers_) {
    v1::Worker* worker = response.add_workers();
    *worker = w->info;
    for (const std::string& job_id : w->jobs) worker->add_job_ids(job_id);
  }
  return response;
}

absl::StatusOr<v1::GetSavingsResponse> JobManager::GetSavings(
    const std::string& job_id) const {
  if (job_id.empty()) return savings_->Fleet();
  bool live;
  {
    absl::MutexLock lock(&mu_);
    live = FindJob(job_id) != nullptr;
  }
  if (!live) {
    // Archived jobs stay in the store, so this read needs no lock.
    if (absl::Status s = ReadArchived(job_id).status(); !s.ok()) return s;
  }
  v1::GetSavingsResponse response;
  response.set_currency(savings_->currency());
  absl::StatusOr<v1::Savings> savings = savings_->ForJob(job_id);
  if (savings.ok()) {
    *response.add_jobs() = *savings;
    response.add_job_ids(job_id);
  }
  for (v1::PrecisionSavings& t : savings_->Totals()) {
    *response.add_totals() = std::move(t);
  }
  return response;
}

absl::StatusOr<v1::GetJobLogsResponse> JobManager::GetJobLogs(
    const std::string& job_id) const {
  bool live;
  {
    absl::MutexLock lock(&mu_);
    live = FindJob(job_id) != nullptr;
  }
  if (!live) {
    if (absl::Status s = ReadArchived(job_id).status(); !s.ok()) return s;
  }
  absl::StatusOr<std::vector<std::string>> lines = ReadStoredLogs(job_id);
  if (!lines.ok()) return lines.status();
  v1::GetJobLogsResponse response;
  for (std::string& line : *lines) response.add_lines(std::move(line));
  return response;
}

// ---------------------------------------------------------------------------
// Watching.

absl::StatusOr<JobManager::EventBatch> JobManager::ReadEvents(
    const std::string& job_id, int64_t after, int max) const {
  if (after < 0) {
    return absl::InvalidArgumentError("after_sequence: must not be negative");
  }
  EventBatch batch;
  int64_t upto = 0;
  bool archived = false;
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    if (const JobEntry* e = FindJob(job_id); e != nullptr) {
      int64_t last = e->rec.job.last_event_sequence();
      upto = std::min(e->durable_seq, after + max);
      if (after >= e->durable_seq) {
        batch.end = IsTerminal(e->state()) && after >= last;
        return batch;
      }
      if (!e->tail.empty() && e->tail.front().sequence() <= after + 1) {
        for (const v1::JobEvent& event : e->tail) {
          if (event.sequence() <= after) continue;
          if (event.sequence() > upto) break;
          batch.events.push_back(event);
        }
        return batch;
      }
    } else {
      archived = true;
    }
  }
  if (archived) {
    // Finished and archived: every event is in the store (and the job never
    // returns to memory), so neither read needs the lock.
    absl::StatusOr<JobRecord> record = ReadArchived(job_id);
    if (!record.ok()) return record.status();
    const int64_t last = record->job.last_event_sequence();
    if (after >= last) {
      batch.end = true;
      return batch;
    }
    upto = std::min(last, after + max);
  }
  absl::StatusOr<std::vector<v1::JobEvent>> events =
      ReadStoredEvents(job_id, after, upto - after);
  if (!events.ok()) return events.status();
  batch.events = *std::move(events);
  return batch;
}

absl::StatusOr<uint64_t> JobManager::Watch(
    const std::string& job_id, std::shared_ptr<EventListener> listener) {
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    if (JobEntry* e = FindJob(job_id); e != nullptr) {
      uint64_t id = ++next_subscription_;
      e->listeners[id] = std::move(listener);
      return id;
    }
  }
  // Archived (finished): no events will come; the reader gets them all
  // from the store.
  if (absl::Status s = ReadArchived(job_id).status(); !s.ok()) return s;
  return 0;
}

void JobManager::Unwatch(const std::string& job_id, uint64_t subscription) {
  std::shared_ptr<EventListener> release;  // destroyed after unlocking
  absl::MutexLock lock(&mu_);
  JobEntry* e = FindJob(job_id);
  if (e == nullptr) return;
  auto it = e->listeners.find(subscription);
  if (it == e->listeners.end()) return;
  release = std::move(it->second);
  e->listeners.erase(it);
  MaybeArchive(e);  // may destroy e
}

// ---------------------------------------------------------------------------
// Worker gateway.

absl::StatusOr<uint64_t> JobManager::RegisterWorker(
    const v1::RegisterWorker& request, std::shared_ptr<WorkerSink> sink) {
  if (request.name().empty()) {
    return absl::InvalidArgumentError("register.name: required");
  }
  if (request.name().size() > 128) {
    return absl::InvalidArgumentError("register.name: longer than 128 bytes");
  }
  // The name labels metrics, log lines and CLI tables: host and pod names
  // fit this set; control characters or spaces would forge lines there.
  for (char c : request.name()) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) &&
        std::string_view("._:@-").find(c) == std::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "register.name: only letters, digits and . _ : @ - are allowed, "
          "got \"",
          absl::CHexEscape(request.name()), "\""));
    }
  }
  if (request.capabilities().slots() < 0) {
    return absl::InvalidArgumentError(
        "register.capabilities.slots: must not be negative");
  }
  absl::MutexLock lock(&mu_);
  if (absl::Status s = CheckOpen(); !s.ok()) return s;
  Txn txn;
  absl::Time now = clock_->Now();
  auto& slot = workers_[request.name()];
  if (slot == nullptr) {
    slot = std::make_unique<WorkerEntry>();
    slot->info.set_name(request.name());
    slot->info.set_state(v1::WORKER_STATE_LOST);
    metrics_->workers(v1::WORKER_STATE_LOST).Increment();
  }
  WorkerEntry* w = slot.get();
  ++workers_generation_;
  if (w->sink != nullptr) {
    w->sink->Close(absl::AbortedError(absl::StrCat(
        "replaced by a newer session of worker ", request.name())));
  }
  w->sink = std::move(sink);
  w->session = ++next_session_;
  *w->info.mutable_capabilities() = request.capabilities();
  SetTimestamp(w->info.mutable_registered_time(), now);
  SetTimestamp(w->info.mutable_last_heartbeat(), now);
  SetWorkerState(&txn, w, v1::WORKER_STATE_READY);
  txn.dirty_workers.insert(w);
  leases_.Renew(w->info.name(), now);

  // Reconcile the jobs the worker says it runs with what we know.
  v1::SchedulerMessage registered;
  v1::Registered* reply = registered.mutable_registered();
  reply->set_heartbeat_interval_ms(
      absl::ToInt64Milliseconds(options_.heartbeat_interval));
  reply->set_lease_grace_ms(absl::ToInt64Milliseconds(options_.lease_grace));
  std::set<std::string> reattached;
  std::vector<v1::SchedulerMessage> cancels;
  for (const v1::RunningJob& running : request.running_jobs()) {
    JobEntry* e = FindJob(running.job_id());
    bool current = e != nullptr && IsActive(e->state()) &&
                   e->rec.job.attempt() == running.attempt() &&
                   e->rec.job.worker() == w->info.name() &&
                   w->jobs.count(e->id()) > 0;
    if (!current) {
      *reply->add_stale_jobs() = running;
      metrics_->StaleMessage("running");
      continue;
    }
    reattached.insert(e->id());
    if (e->state() == v1::JOB_STATE_ASSIGNED) {
      SetState(&txn, e, v1::JOB_STATE_RUNNING,
               absl::StrCat("re-attached on ", w->info.name()));
    } else {
      AddEvent(&txn, e, v1::JOB_EVENT_KIND_NOTICE,
               absl::StrCat("re-attached on ", w->info.name()));
    }
    if (e->rec.cancel_requested) {
      v1::SchedulerMessage cancel;
      cancel.mutable_cancel()->set_job_id(e->id());
      cancel.mutable_cancel()->set_attempt(e->rec.job.attempt());
      cancel.mutable_cancel()->set_reason(e->rec.cancel_reason);
      cancels.push_back(std::move(cancel));
    }
  }
  SendAfterCommit(&txn, w, std::move(registered));
  for (v1::SchedulerMessage& cancel : cancels) {
    SendAfterCommit(&txn, w, std::move(cancel));
  }
  // Jobs we placed on this worker that it no longer runs.
  std::vector<std::string> gone;
  for (const std::string& job_id : w->jobs) {
    if (!reattached.count(job_id)) gone.push_back(job_id);
  }
  for (const std::string& job_id : gone) {
    JobEntry* e = FindJob(job_id);
    if (e->rec.cancel_requested) {
      Finish(&txn, e, v1::JOB_STATE_CANCELLED,
             absl::StrCat("cancelled: ", e->rec.cancel_reason));
    } else {
      bool was_running = e->state() == v1::JOB_STATE_RUNNING;
      Requeue(
          &txn, e,
          absl::StrCat("worker ", w->info.name(), " reconnected without it"),
          /*count_restart=*/was_running);
    }
  }
  if (logger_->enabled()) {
    logger_->Log("worker_registered",
                 {{"worker", w->info.name()},
                  {"session", absl::StrCat(w->session)},
                  {"device", w->info.capabilities().device_name()},
                  {"slots", absl::StrCat(w->slots())},
                  {"reattached", absl::StrCat(reattached.size())},
                  {"stale", absl::StrCat(reply->stale_jobs_size())}});
  }
  Schedule(&txn);
  Commit(&txn, nullptr);
  return w->session;
}

void JobManager::Heartbeat(const std::string& worker, uint64_t session,
                           const v1::Heartbeat& heartbeat) {
  absl::MutexLock lock(&mu_);
  if (shutting_down_) return;
  auto it = workers_.find(worker);
  if (it == workers_.end() || it->second->session != session || session == 0 ||
      it->second->sink == nullptr) {
    return;
  }
  WorkerEntry* w = it->second.get();
  absl::Time now = clock_->Now();
  leases_.Renew(worker, now);
  SetTimestamp(w->info.mutable_last_heartbeat(), now);
  Txn txn;
  v1::WorkerState want =
      heartbeat.draining() ? v1::WORKER_STATE_DRAINING : v1::WORKER_STATE_READY;
  bool changed = w->info.state() != want;
  SetWorkerState(&txn, w, want);
  for (const v1::RunningJob& running : heartbeat.running_jobs()) {
    JobEntry* e = FindJob(running.job_id());
    bool current = e != nullptr && IsActive(e->state()) &&
                   e->rec.job.attempt() == running.attempt() &&
                   e->rec.job.worker() == worker;
    if (current) continue;
    metrics_->StaleMessage("running");
    v1::SchedulerMessage cancel;
    cancel.mutable_cancel()->set_job_id(running.job_id());
    cancel.mutable_cancel()->set_attempt(running.attempt());
    cancel.mutable_cancel()->set_reason("attempt is not current");
    SendAfterCommit(&txn, w, std::move(cancel));
  }
  if (changed) {
    if (logger_->enabled()) {
      logger_->Log(
          "worker_state",
          {{"worker", worker},
           {"state", EnumShortName(v1::WorkerState_descriptor(), want)}});
    }
    Schedule(&txn);
  }
  Commit(&txn, nullptr);
}

absl::StatusOr<JobManager::JobEntry*> JobManager::Fence(
    const std::string& worker, uint64_t session, const std::string& job_id,
    int32_t attempt, const char* kind) {
  if (absl::Status s = CheckOpen(); !s.ok()) return s;
  auto wit = workers_.find(worker);
  WorkerEntry* w = wit == workers_.end() ? nullptr : wit->second.get();
  bool current_session = w != nullptr && session != 0 && w->session == session;
  JobEntry* e = FindJob(job_id);
  if (e == nullptr) {
    // Finished and archived: a late message of a run that is over.
    absl::Status s = NotLiveUnderLock(job_id, "; its runs are over");
    if (s.code() == absl::StatusCode::kFailedPrecondition) {
      metrics_->StaleMessage(kind);
    }
    return s;
  }
  const v1::Job& job = e->rec.job;
  if (current_session && IsActive(job.state()) && job.attempt() == attempt &&
      job.worker() == worker) {
    return e;
  }
  metrics_->StaleMessage(kind);
  std::string why;
  if (job.attempt() != attempt) {
    why = absl::StrCat("attempt ", attempt, " of job ", job_id,
                       " is superseded (current attempt ", job.attempt(), ")");
  } else if (!current_session) {
    why = absl::StrCat("worker ", worker, " session ", session,
                       " is not current");
  } else {
    why = absl::StrCat("job ", job_id, " is ", JobStateName(job.state()),
                       ", not running on ", worker);
  }
  if (logger_->enabled()) {
    logger_->Log("stale_message", {{"kind", kind},
                                   {"job", job_id},
                                   {"attempt", absl::StrCat(attempt)},
                                   {"worker", worker},
                                   {"reason", why}});
  }
  // A stale run still going is told to stop. A result needs no Cancel: that
  // run is over, and a worker confirms a Cancel of a run it does not know
  // with a CANCELLED result, which is stale in turn (an endless exchange).
  if (current_session && w->sink != nullptr &&
      absl::string_view(kind) != "result") {
    v1::SchedulerMessage cancel;
    cancel.mutable_cancel()->set_job_id(job_id);
    cancel.mutable_cancel()->set_attempt(attempt);
    cancel.mutable_cancel()->set_reason(why);
    Txn txn;
    SendAfterCommit(&txn, w, std::move(cancel));
    Commit(&txn, nullptr);
  }
  return absl::FailedPreconditionError(why);
}

absl::Status JobManager::JobStarted(const std::string& worker, uint64_t session,
                                    const v1::JobStarted& started) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<JobEntry*> e =
      Fence(worker, session, started.job_id(), started.attempt(), "started");
  if (!e.ok()) return e.status();
  if ((*e)->state() != v1::JOB_STATE_ASSIGNED) return absl::OkStatus();
  Txn txn;
  SetState(&txn, *e, v1::JOB_STATE_RUNNING,
           started.resumed_from_step() > 0
               ? absl::StrCat("running on ", worker, ", resumed from step ",
                              started.resumed_from_step())
               : absl::StrCat("running on ", worker));
  Commit(&txn, nullptr);
  return absl::OkStatus();
}

absl::Status JobManager::Report(const std::string& worker, uint64_t session,
                                const v1::JobReport& report) {
  // Steps are counts: negative ones are a broken worker, and would make the
  // downsampling arithmetic below overflow.
  if (report.report().step() < 0 || report.report().total_steps() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "report: step and total_steps must not be negative (got ",
        report.report().step(), " of ", report.report().total_steps(), ")"));
  }
  absl::MutexLock lock(&mu_);
  absl::StatusOr<JobEntry*> fenced =
      Fence(worker, session, report.job_id(), report.attempt(), "report");
  if (!fenced.ok()) return fenced.status();
  JobEntry* e = *fenced;
  Txn txn;
  if (e->state() == v1::JOB_STATE_ASSIGNED) {
    SetState(&txn, e, v1::JOB_STATE_RUNNING,
             absl::StrCat("running on ", worker));
  }
  v1::TrainingReport r = report.report();
  r.set_attempt(report.attempt());
  *e->rec.job.mutable_latest_report() = r;
  if (r.precision() != v1::PRECISION_UNSPECIFIED &&
      e->run_precision != v1::PRECISION_UNSPECIFIED &&
      r.precision() != e->run_precision) {
    AddEvent(&txn, e, v1::JOB_EVENT_KIND_FALLBACK,
             absl::StrCat("precision fell back from ",
                          PrecisionName(e->run_precision), " to ",
                          PrecisionName(r.precision())));
  }
  if (r.precision() != v1::PRECISION_UNSPECIFIED) {
    e->run_precision = r.precision();
  }
  // Downsampling (see the header).
  if (e->report_attempt != report.attempt()) {
    e->report_attempt = report.attempt();
    e->last_report_event_step = 0;
    e->last_eval_event_step = 0;
  }
  // A job has at most INT32_MAX steps (JobSpec.steps); clamping keeps the
  // stride arithmetic in range whatever a worker sends.
  int64_t total = std::min<int64_t>(
      r.total_steps() > 0 ? r.total_steps() : e->rec.job.spec().steps(),
      INT32_MAX);
  int64_t stride =
      std::max<int64_t>(1, (total + options_.max_report_events - 1) /
                               std::max(1, options_.max_report_events));
  bool first = e->last_report_event_step == 0 && e->last_eval_event_step == 0;
  bool keep =
      first || r.step() >= total ||
      r.step() - e->last_report_event_step >= stride ||
      (r.has_eval_loss() && r.step() - e->last_eval_event_step >= stride);
  if (keep) {
    if (r.has_eval_loss()) {
      e->last_eval_event_step = r.step();
    } else {
      e->last_report_event_step = r.step();
    }
    if (first) e->last_report_event_step = r.step();
    v1::JobEvent& event = AddEvent(&txn, e, v1::JOB_EVENT_KIND_REPORT, "");
    *event.mutable_report() = r;
    *e->tail.back().mutable_report() = r;
  }
  Commit(&txn, nullptr);
  return absl::OkStatus();
}

absl::Status JobManager::Result(const std::string& worker, uint64_t session,
                                const v1::JobResult& result) {
  if (result.outcome() == v1::JOB_OUTCOME_UNSPECIFIED) {
    return absl::InvalidArgumentError("result.outcome: required");
  }
  absl::MutexLock lock(&mu_);
  absl::StatusOr<JobEntry*> fenced =
      Fence(worker, session, result.job_id(), result.attempt(), "result");
  if (!fenced.ok()) return fenced.status();
  JobEntry* e = *fenced;
  Txn txn;
  if (result.stderr_tail_size() > 0) {
    std::vector<std::string> lines;
    int first = std::max(0, result.stderr_tail_size() - options_.max_log_lines);
    for (int i = first; i < result.stderr_tail_size(); ++i) {
      lines.push_back(result.stderr_tail(i).substr(
          0, static_cast<size_t>(options_.max_log_line_bytes)));
    }
    txn.mutation.logs.emplace_back(e->id(), std::move(lines));
  }
  auto record_savings = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!result.has_savings()) return;
    const v1::Savings& measured = result.savings();
    if (measured.baseline_step_seconds() <= 0 || measured.step_seconds() <= 0) {
      return;
    }
    int64_t steps_run = e->rec.job.latest_report().step() > 0
                            ? e->rec.job.latest_report().step()
                            : e->rec.job.spec().steps();
    v1::Savings derived = savings_->Derive(measured, steps_run);
    if (derived.precision() == v1::PRECISION_UNSPECIFIED) {
      derived.set_precision(e->rec.job.resolved_precision());
    }
    const auto worker = workers_.find(e->rec.job.worker());
    AddAdapterFigures(e->rec.job.spec(),
                      worker != workers_.end() &&
                          worker->second->info.capabilities().device_kind() ==
                              v1::DEVICE_KIND_CUDA,
                      &derived);
    *e->rec.job.mutable_savings() = derived;
    savings_->Record(e->id(), derived);
    txn.mutation.savings.emplace_back(e->id(), derived);
    v1::JobEvent& event = AddEvent(
        &txn, e, v1::JOB_EVENT_KIND_SAVINGS,
        absl::StrFormat("speedup %.2fx, %.0f device seconds saved",
                        derived.speedup(), derived.device_seconds_saved()));
    *event.mutable_savings() = derived;
    *e->tail.back().mutable_savings() = derived;
  };
  std::string reason = result.reason();
  switch (result.outcome()) {
    case v1::JOB_OUTCOME_SUCCEEDED:
      record_savings();
      Finish(&txn, e, v1::JOB_STATE_SUCCEEDED,
             reason.empty() ? "succeeded" : reason);
      break;
    case v1::JOB_OUTCOME_CANCELLED:
      record_savings();
      Finish(&txn, e, v1::JOB_STATE_CANCELLED,
             absl::StrCat("cancelled: ",
                          e->rec.cancel_requested
                              ? e->rec.cancel_reason
                              : (reason.empty() ? "by worker" : reason)));
      break;
    case v1::JOB_OUTCOME_FAILED: {
      if (reason.empty()) reason = "trainer failed";
      if (e->rec.cancel_requested) {
        Finish(&txn, e, v1::JOB_STATE_CANCELLED,
               absl::StrCat("cancelled: ", e->rec.cancel_reason));
      } else if (result.permanent()) {
        record_savings();
        Finish(&txn, e, v1::JOB_STATE_FAILED, reason);
      } else {
        Requeue(&txn, e, reason, /*count_restart=*/true);
      }
      break;
    }
    case v1::JOB_OUTCOME_RELEASED:
      if (e->rec.cancel_requested) {
        Finish(&txn, e, v1::JOB_STATE_CANCELLED,
               absl::StrCat("cancelled: ", e->rec.cancel_reason));
      } else {
        Requeue(&txn, e,
                absl::StrCat("released by ", worker, reason.empty() ? "" : ": ",
                             reason),
                /*count_restart=*/false);
      }
      break;
    default:
      return absl::InvalidArgumentError("result.outcome: unknown value");
  }
  Schedule(&txn);
  Commit(&txn, nullptr);
  return absl::OkStatus();
}

void JobManager::WorkerDisconnected(const std::string& worker,
                                    uint64_t session) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker);
  if (it == workers_.end() || it->second->session != session) return;
  it->second->sink = nullptr;
  ++workers_generation_;
  if (logger_->enabled()) {
    logger_->Log("worker_disconnected",
                 {{"worker", worker},
                  {"jobs", absl::StrCat(it->second->jobs.size())},
                  {"grace", absl::FormatDuration(leases_.grace())}});
  }
}

// ---------------------------------------------------------------------------
// Checkpoints.

absl::Status JobManager::CheckUpload(const std::string& job_id,
                                     int32_t attempt) {
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    if (JobEntry* e = FindJob(job_id); e != nullptr) {
      if (IsActive(e->state()) && e->rec.job.attempt() == attempt) {
        return absl::OkStatus();
      }
      metrics_->StaleMessage("upload");
      return absl::FailedPreconditionError(
          e->rec.job.attempt() != attempt
              ? absl::StrCat("attempt ", attempt, " of job ", job_id,
                             " is superseded (current attempt ",
                             e->rec.job.attempt(), ")")
              : absl::StrCat("job ", job_id, " is ", JobStateName(e->state()),
                             "; it takes no checkpoints"));
    }
  }
  return StaleUpload(job_id);
}

absl::Status JobManager::StaleUpload(const std::string& job_id) {
  absl::Status s = NotLive(job_id, "; it takes no checkpoints");
  if (s.code() == absl::StatusCode::kFailedPrecondition) {
    metrics_->StaleMessage("upload");
  }
  return s;
}

void JobManager::RecordCheckpoint(const CheckpointRecord& record,
                                  StatusDone done) {
  absl::Status error;
  bool archived = false;  // not in memory: the store says why
  {
    absl::MutexLock lock(&mu_);
    error = CheckOpen();
    JobEntry* e = error.ok() ? FindJob(record.job_id) : nullptr;
    if (error.ok() && e == nullptr) {
      archived = true;
    } else if (error.ok() && (!IsActive(e->state()) ||
                              e->rec.job.attempt() != record.attempt)) {
      metrics_->StaleMessage("upload");
      error = absl::FailedPreconditionError(absl::StrCat(
          "attempt ", record.attempt, " of job ", record.job_id,
          " is superseded (current attempt ", e->rec.job.attempt(), ")"));
    }
    if (error.ok() && !archived) {
      Txn txn;
      auto it = latest_checkpoint_.find(record.job_id);
      if (it != latest_checkpoint_.end() && it->second.path != record.path) {
        txn.remove_after_commit.push_back(it->second.path);
      }
      latest_checkpoint_[record.job_id] = record;
      txn.mutation.checkpoints.push_back(record);
      AddEvent(&txn, e, v1::JOB_EVENT_KIND_CHECKPOINT,
               absl::StrCat("checkpoint at step ", record.step, " (",
                            record.bytes, " bytes)"));
      Commit(&txn, std::move(done));
      return;
    }
  }
  if (archived) error = NotLive(record.job_id, "; it takes no checkpoints");
  done(error);
}

absl::StatusOr<CheckpointRecord> JobManager::LatestCheckpoint(
    const std::string& job_id) const {
  absl::MutexLock lock(&mu_);
  if (FindJob(job_id) == nullptr) {
    return absl::NotFoundError(JobNotFound(job_id));
  }
  auto it = latest_checkpoint_.find(job_id);
  if (it == latest_checkpoint_.end()) {
    return absl::NotFoundError(
        absl::StrCat("job ", job_id, " has no checkpoint"));
  }
  return it->second;
}

// ---------------------------------------------------------------------------
// Time and shutdown.

void JobManager::Tick() {
  absl::MutexLock lock(&mu_);
  if (shutting_down_) return;
  std::vector<std::string> expired = leases_.TakeExpired(clock_->Now());
  if (expired.empty()) return;
  Txn txn;
  for (const std::string& name : expired) {
    auto it = workers_.find(name);
    if (it == workers_.end()) continue;
    LoseWorker(&txn, it->second.get(),
               absl::StrCat("no heartbeat for ",
                            absl::FormatDuration(leases_.grace())));
  }
  Schedule(&txn);
  Commit(&txn, nullptr);
}

void JobManager::Shutdown() {
  std::vector<std::shared_ptr<WorkerSink>> sinks;
  std::vector<std::shared_ptr<EventListener>> listeners;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return;
    shutting_down_ = true;
    for (auto& [name, w] : workers_) {
      if (w->sink != nullptr) sinks.push_back(w->sink);
    }
    for (auto& [id, e] : jobs_) {
      for (auto& [sub, listener] : e->listeners) listeners.push_back(listener);
    }
  }
  for (const auto& sink : sinks) {
    sink->Close(absl::UnavailableError("scheduler is shutting down"));
  }
  for (const auto& listener : listeners) listener->OnEvents();
}

}  // namespace halftime::server
