#include "worker/worker.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/baseline_fingerprint.h"
#include "common/enum_names.h"
#include "common/spec.h"
#include "engine/events.h"
#include "worker/baseline_probe.h"
#include "worker/step_record.h"
#include "worker/trainer_process.h"

namespace halftime {
namespace {

namespace fs = std::filesystem;
namespace events = engine::events;

void Log(const std::string& line) { std::cerr << "worker: " << line << "\n"; }

}  // namespace

ReconnectBackoff::ReconnectBackoff(std::chrono::milliseconds min,
                                   std::chrono::milliseconds max, uint32_t seed)
    : min_(min), max_(std::max(min, max)), backoff_(min), rng_(seed) {}

std::chrono::milliseconds ReconnectBackoff::Next(
    absl::Duration connected_for, bool busy,
    std::chrono::milliseconds lease_grace) {
  if (connected_for > absl::Seconds(10)) backoff_ = min_;
  if (busy && lease_grace.count() > 0) {
    backoff_ = std::min(backoff_, std::max(min_, lease_grace / 4));
  }
  std::uniform_int_distribution<int64_t> jitter(0, backoff_.count());
  const auto wait = backoff_ / 2 + std::chrono::milliseconds(jitter(rng_) / 2);
  backoff_ = std::min(backoff_ * 2, max_);
  return wait;
}

struct Worker::Job {
  std::string id;
  int attempt = 0;
  v1::JobSpec spec;
  std::string dir;
  std::string spec_path;
  std::string precision;

  absl::Mutex mu;  // guards the rest
  std::unique_ptr<TrainerRun> trainer ABSL_GUARDED_BY(mu);
  bool cancel_requested ABSL_GUARDED_BY(mu) = false;
  bool release_requested ABSL_GUARDED_BY(mu) = false;
  std::string done_status ABSL_GUARDED_BY(mu);
  std::string done_message ABSL_GUARDED_BY(mu);
  StepRecord steps ABSL_GUARDED_BY(mu);
  bool has_baseline ABSL_GUARDED_BY(mu) = false;
  Baseline baseline ABSL_GUARDED_BY(mu);
  // Checkpoint uploads run on their own thread (UploadLoop), newest first:
  // the trainer's callback thread stays free for its events, and one
  // superseded before its upload began (the trainer stops waiting once it
  // is told to stop) is skipped instead of queued.
  //
  // Signalled (with mu) when upload_path or uploads_closed is set, and on
  // Shutdown().
  absl::CondVar upload_cv;
  // Started by the callback thread, which takes it out (under mu) to join
  // it.
  std::thread uploader ABSL_GUARDED_BY(mu);
  // Newest checkpoint not yet uploaded.
  std::string upload_path ABSL_GUARDED_BY(mu);
  int64_t upload_step ABSL_GUARDED_BY(mu) = 0;
  // The trainer is gone: flush, then end.
  bool uploads_closed ABSL_GUARDED_BY(mu) = false;
};

Worker::Worker(WorkerOptions options, WorkerEdges edges, WorkerMetrics* metrics)
    : options_(std::move(options)),
      edges_(std::move(edges)),
      clock_(*edges_.clock),
      metrics_(metrics) {}

absl::StatusOr<std::unique_ptr<Worker>> Worker::Create(
    WorkerOptions options, std::shared_ptr<grpc::Channel> channel,
    WorkerMetrics* metrics) {
  WorkerEdges edges;
  edges.link = std::make_unique<GrpcSchedulerLink>(
      channel, options.decorate_context, options.security);
  edges.transfer = std::make_unique<GrpcCheckpointTransfer>(
      channel, options.decorate_context);
  edges.launcher = std::make_unique<ProcessLauncher>();
  return Create(std::move(options), std::move(edges), metrics);
}

absl::StatusOr<std::unique_ptr<Worker>> Worker::Create(WorkerOptions options,
                                                       WorkerEdges edges,
                                                       WorkerMetrics* metrics) {
  static const RealClock kRealClock;
  if (edges.clock == nullptr) edges.clock = &kRealClock;
  if (!edges.link || !edges.transfer || !edges.launcher) {
    return absl::InvalidArgumentError(
        "a worker needs a scheduler link, a checkpoint transfer and a trainer "
        "launcher");
  }
  std::error_code ec;
  // Trainers run inside their job's directory, where relative paths given
  // to the worker would point elsewhere.
  for (std::string* path : {&options.work_dir, &options.out_root,
                            &options.data_root, &options.trainer_binary}) {
    if (path->empty()) continue;
    fs::path absolute = fs::absolute(*path, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot resolve ", *path, ": ", ec.message()));
    }
    *path = absolute.lexically_normal().string();
  }
  for (const std::string* dir : {&options.work_dir, &options.out_root}) {
    fs::create_directories(*dir, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot create ", *dir, ": ", ec.message()));
    }
  }
  if (!options.data_root.empty() && !fs::is_directory(options.data_root, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--data-root ", options.data_root, " is not a directory"));
  }
  if (options.capabilities.slots() <= 0) options.capabilities.set_slots(1);
  std::unique_ptr<Worker> worker(
      new Worker(std::move(options), std::move(edges), metrics));
  if (metrics != nullptr) {
    metrics->SetDeviceMemory(worker->options_.capabilities.memory_bytes());
    metrics->SetBaselineDegraded(
        !worker->options_.capabilities.baseline_degradations().empty());
    for (const v1::DtypeRate& rate : worker->options_.capabilities.rates()) {
      metrics->SetGemmRate(rate.dtype(), rate.flops_per_second());
    }
    worker->UpdateSlotMetrics();
  }
  return worker;
}

Worker::~Worker() {
  Shutdown();
  std::vector<Starter> starters;
  std::thread drain_waiter;
  {
    absl::MutexLock lock(&mu_);
    starters.swap(starters_);
    drain_waiter.swap(drain_waiter_);
  }
  for (Starter& s : starters) s.thread.join();
  // Shutdown() set stopping_ and woke it.
  if (drain_waiter.joinable()) drain_waiter.join();
  std::map<std::string, std::shared_ptr<Job>> jobs;
  {
    absl::MutexLock lock(&mu_);
    jobs.swap(jobs_);
  }
  for (auto& [id, job] : jobs) {
    std::unique_ptr<TrainerRun> trainer;
    {
      absl::MutexLock lock(&job->mu);
      trainer = std::move(job->trainer);
    }
    trainer.reset();  // kills and joins
  }
  ReapFinished();
}

void Worker::UpdateSlotMetrics() {
  if (metrics_ == nullptr) return;
  int busy;
  {
    absl::MutexLock lock(&mu_);
    busy = static_cast<int>(jobs_.size());
  }
  metrics_->SetSlots(options_.capabilities.slots(), busy);
}

std::vector<v1::RunningJob> Worker::RunningJobs() {
  absl::MutexLock lock(&mu_);
  std::vector<v1::RunningJob> running;
  for (const auto& [id, job] : jobs_) {
    v1::RunningJob r;
    r.set_job_id(id);
    r.set_attempt(job->attempt);
    running.push_back(r);
  }
  return running;
}

bool Worker::Busy() {
  absl::MutexLock lock(&mu_);
  return !jobs_.empty();
}

bool Worker::Send(const v1::WorkerMessage& message) {
  absl::MutexLock write_lock(&write_mu_);
  SchedulerStream* stream;
  {
    absl::MutexLock lock(&mu_);
    stream = stream_.get();
  }
  // stream_ is only replaced under write_mu_, which we hold.
  return stream != nullptr && stream->Write(message);
}

void Worker::SendResult(const v1::JobResult& result) {
  v1::WorkerMessage message;
  *message.mutable_result() = result;
  if (!Send(message)) {
    // Delivered after the next successful registration.
    absl::MutexLock lock(&mu_);
    pending_results_.push_back(result);
  }
}

void Worker::Run() {
  ReconnectBackoff backoff(options_.min_backoff, options_.max_backoff,
                           std::random_device{}());
  while (!stopping_) {
    const absl::Time began = clock_.Now();
    ServeOneConnection();
    if (stopping_) break;
    {
      absl::MutexLock lock(&mu_);
      if (draining_ && jobs_.empty()) break;
    }
    const auto wait =
        backoff.Next(clock_.Now() - began, Busy(),
                     std::chrono::milliseconds(lease_grace_ms_.load()));
    edges_.link->WaitToReconnect(wait, stopping_);
  }
}

void Worker::ServeOneConnection() {
  std::unique_ptr<SchedulerStream> stream = edges_.link->Connect();
  // Read only by this thread; stays valid until close() below hands it back.
  SchedulerStream* const raw = stream.get();
  {
    // Shutdown() from now on cancels this stream.
    absl::MutexLock write_lock(&write_mu_);
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stream_ = std::move(stream);
  }
  auto close = [&] {
    std::unique_ptr<SchedulerStream> closed;
    {
      absl::MutexLock write_lock(&write_mu_);
      absl::MutexLock lock(&mu_);
      closed = std::move(stream_);
    }
    cv_.SignalAll();
    return closed;
  };

  v1::WorkerMessage hello;
  v1::RegisterWorker* reg = hello.mutable_register_();
  reg->set_name(options_.name);
  *reg->mutable_capabilities() = options_.capabilities;
  for (const auto& r : RunningJobs()) *reg->add_running_jobs() = r;
  v1::SchedulerMessage reply;
  if (!Send(hello) || !raw->Read(&reply) || !reply.has_registered()) {
    absl::Status status = close()->Finish();
    Log(absl::StrCat("cannot register with the scheduler: ",
                     status.ok() ? "unexpected reply" : status.message()));
    return;
  }
  const v1::Registered& registered = reply.registered();
  lease_grace_ms_ = registered.lease_grace_ms();
  Log(absl::StrCat("registered as ", options_.name));
  for (const v1::RunningJob& stale : registered.stale_jobs()) {
    std::shared_ptr<Job> job;
    {
      absl::MutexLock lock(&mu_);
      auto it = jobs_.find(stale.job_id());
      if (it != jobs_.end() && it->second->attempt == stale.attempt())
        job = it->second;
    }
    if (job) {
      Log(absl::StrCat("stopping stale job ", stale.job_id(), " attempt ",
                       stale.attempt()));
      absl::MutexLock lock(&job->mu);
      job->cancel_requested = true;
      if (job->trainer) job->trainer->Kill();
    }
  }
  std::vector<v1::JobResult> pending;
  {
    absl::MutexLock lock(&mu_);
    pending.swap(pending_results_);
  }
  for (const auto& result : pending) SendResult(result);

  const auto interval = std::chrono::milliseconds(
      std::max<int64_t>(registered.heartbeat_interval_ms(), 100));
  std::thread heartbeat([this, interval] { HeartbeatLoop(interval); });

  v1::SchedulerMessage message;
  while (raw->Read(&message)) {
    if (message.has_assignment()) {
      absl::MutexLock lock(&mu_);
      // Join the starters that have finished (each is past its last act).
      for (auto it = starters_.begin(); it != starters_.end();) {
        if (it->done->load()) {
          it->thread.join();
          it = starters_.erase(it);
        } else {
          ++it;
        }
      }
      auto done = std::make_shared<std::atomic<bool>>(false);
      starters_.push_back({std::thread([this, done, a = message.assignment()] {
                             StartJob(a);
                             done->store(true);
                           }),
                           done});
    } else if (message.has_cancel()) {
      CancelJob(message.cancel());
    }
  }
  std::unique_ptr<SchedulerStream> closed = close();
  heartbeat.join();
  absl::Status status = closed->Finish();
  if (!stopping_) {
    Log(absl::StrCat("connection to the scheduler lost: ",
                     status.ok() ? "stream closed" : status.message()));
  }
}

void Worker::HeartbeatLoop(std::chrono::milliseconds interval) {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      // absl waits take no steady-clock deadline: wait out what is left of
      // the interval, however often woken.
      const auto deadline = std::chrono::steady_clock::now() + interval;
      while (stream_ != nullptr && !stopping_) {
        const auto left = deadline - std::chrono::steady_clock::now();
        if (left <= left.zero()) break;
        cv_.WaitWithTimeout(&mu_, absl::FromChrono(left));
      }
      if (stream_ == nullptr || stopping_) return;
    }
    ReapFinished();
    v1::WorkerMessage message;
    v1::Heartbeat* hb = message.mutable_heartbeat();
    for (const auto& r : RunningJobs()) *hb->add_running_jobs() = r;
    hb->set_draining(draining_);
    Send(message);
  }
}

std::string Worker::Admit(const std::shared_ptr<Job>& job) {
  mu_.Lock();
  // An older attempt of this job still here was found stale (the
  // scheduler gave up on it, e.g. after a network cut, and now hands the
  // new attempt back to us): it is being killed; take the new attempt
  // once it is gone rather than refuse it as a duplicate.
  auto older = jobs_.find(job->id);
  if (older != jobs_.end() && older->second->attempt < job->attempt) {
    std::shared_ptr<Job> stale = older->second;
    mu_.Unlock();
    {
      absl::MutexLock stale_lock(&stale->mu);
      stale->cancel_requested = true;
      if (stale->trainer) stale->trainer->Kill();
    }
    mu_.Lock();
    // absl waits take no steady-clock deadline: wait out what is left of
    // it, however often woken.
    const auto deadline = std::chrono::steady_clock::now() +
                          options_.stop_grace + std::chrono::seconds(10);
    while (true) {
      auto it = jobs_.find(job->id);
      if (it == jobs_.end() || it->second != stale || stopping_) break;
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left <= left.zero()) break;
      cv_.WaitWithTimeout(&mu_, absl::FromChrono(left));
    }
  }
  std::string refused = TakeSlot(job);
  mu_.Unlock();
  return refused;
}

std::string Worker::TakeSlot(const std::shared_ptr<Job>& job) {
  if (draining_ || stopping_) return "worker is draining";
  if (jobs_.count(job->id)) return "job already runs here";
  if (static_cast<int>(jobs_.size()) >= options_.capabilities.slots()) {
    return "worker has no free slot";
  }
  jobs_[job->id] = job;
  return "";
}

void Worker::StartJob(const v1::Assignment& assignment) {
  auto job = std::make_shared<Job>();
  job->id = assignment.job_id();
  job->attempt = assignment.attempt();
  job->spec = assignment.spec();
  job->precision = PrecisionName(job->spec.precision());
  job->dir = (fs::path(options_.work_dir) / "jobs" / job->id /
              absl::StrCat("attempt-", job->attempt))
                 .string();
  job->spec_path = (fs::path(job->dir) / "spec.json").string();
  // Ends the attempt before its trainer started.
  auto end = [&](v1::JobOutcome outcome, const std::string& reason,
                 bool permanent) {
    if (outcome == v1::JOB_OUTCOME_FAILED) {
      Log(absl::StrCat(job->id, ": ", reason));
    }
    FinishJob(job);
    SendResult(
        MakeJobResult(job->id, job->attempt, outcome, reason, permanent));
  };
  if (std::string refused = Admit(job); !refused.empty()) {
    SendResult(MakeJobResult(job->id, job->attempt, v1::JOB_OUTCOME_RELEASED,
                             refused));
    return;
  }
  UpdateSlotMetrics();
  Log(absl::StrCat(job->id, ": assigned attempt ", job->attempt, " (",
                   job->precision, ")"));

  std::error_code ec;
  fs::create_directories(job->dir, ec);
  {
    std::ofstream out(job->spec_path);
    out << FormatJobSpec(job->spec, SpecFormat::kJson);
    if (!out) {
      end(v1::JOB_OUTCOME_FAILED, absl::StrCat("cannot write ", job->spec_path),
          false);
      return;
    }
  }

  int64_t resumed_from = 0;
  std::string resume_path;
  if (assignment.has_checkpoint()) {
    resume_path = (fs::path(job->dir) / "resume.ckpt").string();
    absl::StatusOr<int64_t> step =
        edges_.transfer->Download(job->id, resume_path);
    if (!step.ok()) {
      // DATA_LOSS: the scheduler's own copy is corrupt or gone (it checks
      // the file against its record): no retry can resume from it, and
      // training on from corrupt bytes is never an option.
      const bool corrupt_at_source =
          step.status().code() == absl::StatusCode::kDataLoss;
      end(v1::JOB_OUTCOME_FAILED,
          corrupt_at_source
              ? absl::StrCat("cannot resume: ", step.status().message(),
                             "; not resuming from a corrupt checkpoint")
              : absl::StrCat("cannot download checkpoint: ",
                             step.status().message()),
          corrupt_at_source);
      return;
    }
    resumed_from = *step;
  }

  if (WantsBaseline(job->spec)) PrepareBaseline(assignment, job.get());

  TrainerRunOptions trainer;
  trainer.binary = options_.trainer_binary;
  trainer.args = {job->spec_path,
                  "--out",
                  (fs::path(options_.out_root) / job->spec.name()).string(),
                  "--metrics-jsonl",
                  (fs::path(job->dir) / "metrics.jsonl").string(),
                  "--threads",
                  std::to_string(options_.capabilities.threads_per_job()),
                  "--quiet"};
  if (!options_.data_root.empty()) {
    trainer.args.push_back("--data-root");
    trainer.args.push_back(options_.data_root);
  }
  if (!resume_path.empty()) {
    trainer.args.push_back("--resume");
    trainer.args.push_back(resume_path);
  }
  trainer.work_dir = job->dir;
  trainer.stderr_log = (fs::path(job->dir) / "stderr.log").string();
  trainer.stall_timeout = options_.stall_timeout;
  // The trainer waits for each checkpoint to be stored before it trains on,
  // so a crash repeats at most the checkpoint interval.
  trainer.acknowledgements = true;
  TrainerRunCallbacks callbacks;
  callbacks.on_event = [this, job](const std::string& line) {
    OnTrainerEvent(job, line);
  };
  callbacks.on_exit = [this, job](const ExitInfo& exit) {
    OnTrainerExit(job, exit);
  };

  job->mu.Lock();
  if (job->cancel_requested || job->release_requested) {
    const bool cancelled = job->cancel_requested;
    job->mu.Unlock();
    end(cancelled ? v1::JOB_OUTCOME_CANCELLED : v1::JOB_OUTCOME_RELEASED,
        cancelled ? "cancelled before start" : "worker is draining", false);
    return;
  }
  // Under job->mu, so a cancel arriving now finds the trainer to stop.
  auto started_trainer = edges_.launcher->Start(trainer, std::move(callbacks));
  if (!started_trainer.ok()) {
    job->mu.Unlock();
    end(v1::JOB_OUTCOME_FAILED, std::string(started_trainer.status().message()),
        false);
    return;
  }
  job->trainer = std::move(*started_trainer);
  job->mu.Unlock();
  v1::WorkerMessage started;
  started.mutable_started()->set_job_id(job->id);
  started.mutable_started()->set_attempt(job->attempt);
  started.mutable_started()->set_resumed_from_step(resumed_from);
  Send(started);
}

void Worker::PrepareBaseline(const v1::Assignment& assignment, Job* job) {
  const std::string fingerprint =
      BaselineFingerprint(job->spec, options_.capabilities);
  if (std::optional<Baseline> cached =
          CachedBaseline(assignment, fingerprint)) {
    Log(absl::StrCat(job->id, ": reusing cached fp32 baseline ", fingerprint,
                     " (", cached->step_seconds, " s/step)"));
    absl::MutexLock lock(&job->mu);
    job->has_baseline = true;
    job->baseline = *cached;
    return;
  }
  // Probe mode, or cached with nothing stored (or stored for another
  // fingerprint: a worker never trusts figures measured elsewhere).
  ProbeOptions probe;
  probe.trainer_binary = options_.trainer_binary;
  probe.spec_path = job->spec_path;
  probe.work_dir = job->dir;
  probe.data_root = options_.data_root;
  probe.threads = options_.capabilities.threads_per_job();
  probe.min_steps = job->spec.savings().probe_steps();
  probe.adapter = job->spec.adapter().kind() != v1::ADAPTER_KIND_UNSPECIFIED;
  probe.min_steady_time = options_.probe_min_steady_time;
  probe.stall_timeout = options_.stall_timeout;
  probe.fingerprint = fingerprint;
  absl::StatusOr<Baseline> baseline =
      RunBaselineProbe(*edges_.launcher, clock_, probe, [&] {
        absl::MutexLock lock(&job->mu);
        return job->cancel_requested || job->release_requested ||
               stopping_.load();
      });
  if (!baseline.ok()) {
    Log(absl::StrCat(job->id, ": ", baseline.status().message(),
                     "; no savings will be reported"));
    return;
  }
  Log(absl::StrCat(job->id, ": fp32 baseline ", baseline->step_seconds,
                   " s/step, probe took ", baseline->probe_seconds, " s"));
  absl::MutexLock lock(&job->mu);
  job->has_baseline = true;
  job->baseline = *baseline;
}

void Worker::OnTrainerEvent(const std::shared_ptr<Job>& job,
                            const std::string& line) {
  nlohmann::json e = nlohmann::json::parse(line, nullptr, false);
  if (e.is_discarded() || !e.is_object()) return;
  const std::string kind = e.value(events::kKind, "");
  if (kind == events::kStep) {
    v1::TrainingReport report = ReportFromEvent(e, job->attempt);
    {
      absl::MutexLock lock(&job->mu);
      job->steps.Add(report);
    }
    if (metrics_ != nullptr)
      metrics_->RecordReport(job->id, job->precision, report);
    v1::WorkerMessage message;
    v1::JobReport* out = message.mutable_report();
    out->set_job_id(job->id);
    out->set_attempt(job->attempt);
    *out->mutable_report() = report;
    Send(message);
  } else if (kind == events::kCheckpoint) {
    const int64_t step =
        static_cast<int64_t>(EventNumber(e, events::kStepNumber));
    absl::MutexLock lock(&job->mu);
    if (!job->upload_path.empty()) {
      Log(absl::StrCat(job->id, ": skipping the upload of step ",
                       job->upload_step, ": step ", step, " is newer"));
    }
    job->upload_path = e.value(events::kPath, "");
    job->upload_step = step;
    if (!job->uploader.joinable()) {
      job->uploader = std::thread([this, raw = job.get()] { UploadLoop(raw); });
    }
    job->upload_cv.SignalAll();
  } else if (kind == events::kDone) {
    absl::MutexLock lock(&job->mu);
    job->done_status = e.value(events::kStatus, "");
    job->done_message = e.value(events::kMessage, "");
  }
}

void Worker::UploadLoop(Job* job) {
  job->mu.Lock();
  while (true) {
    while (job->upload_path.empty() && !job->uploads_closed) {
      job->upload_cv.Wait(&job->mu);
    }
    if (job->upload_path.empty() || stopping_) break;
    const std::string path = std::move(job->upload_path);
    job->upload_path.clear();
    const int64_t step = job->upload_step;
    job->mu.Unlock();
    absl::Status uploaded =
        edges_.transfer->Upload({job->id, job->attempt, step}, path);
    if (!uploaded.ok()) {
      Log(absl::StrCat(job->id, ": checkpoint upload of step ", step,
                       " failed: ", uploaded.message()));
    }
    job->mu.Lock();
    // Not while a newer checkpoint waits: that one's ack covers this one.
    if (job->trainer && job->upload_path.empty()) {
      job->trainer
          ->Acknowledge(absl::StrCat(uploaded.ok() ? "stored " : "failed ",
                                     step))
          .IgnoreError();  // a trainer already gone needs no answer
    }
  }
  job->mu.Unlock();
}

void Worker::FlushUploads(Job* job) {
  std::thread uploader;
  {
    absl::MutexLock lock(&job->mu);
    job->uploads_closed = true;
    job->upload_cv.SignalAll();
    uploader = std::move(job->uploader);
  }
  if (uploader.joinable()) uploader.join();
}

void Worker::OnTrainerExit(const std::shared_ptr<Job>& job,
                           const ExitInfo& exit) {
  // The last checkpoint (e.g. the one written on SIGTERM when draining)
  // is stored before the scheduler hears of the end and places the next
  // attempt, which resumes from it.
  FlushUploads(job.get());
  v1::JobResult result;
  {
    absl::MutexLock lock(&job->mu);
    TrainerEnd end;
    end.exit = exit;
    end.done_status = job->done_status;
    end.done_message = job->done_message;
    end.cancel_requested = job->cancel_requested;
    end.release_requested = job->release_requested;
    if (job->trainer) end.stderr_tail = job->trainer->StderrTail();
    result = ResultOfRun(job->id, job->attempt, end, options_.stall_timeout);
    if (result.outcome() == v1::JOB_OUTCOME_SUCCEEDED && job->has_baseline &&
        !job->steps.empty()) {
      *result.mutable_savings() =
          ComputeSavings(job->spec.precision(), job->baseline, job->steps,
                         options_.capabilities);
    }
  }
  Log(absl::StrCat(
      job->id, ": attempt ", job->attempt,
      " ended: ", EnumShortName(v1::JobOutcome_descriptor(), result.outcome()),
      result.reason().empty() ? "" : absl::StrCat(" (", result.reason(), ")")));
  // Free the slot before the scheduler hears of the end: it may assign the
  // next attempt of this job right back to us.
  if (metrics_ != nullptr) metrics_->RemoveJob(job->id);
  FinishJob(job);
  SendResult(result);
}

void Worker::FinishJob(const std::shared_ptr<Job>& job) {
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(job->id);
    if (it != jobs_.end() && it->second == job) jobs_.erase(it);
    // The trainer object may not be destroyed on its own callback thread.
    finished_.push_back(job);
  }
  cv_.SignalAll();
  UpdateSlotMetrics();
}

void Worker::ReapFinished() {
  std::vector<std::shared_ptr<Job>> finished;
  {
    absl::MutexLock lock(&mu_);
    finished.swap(finished_);
  }
  for (auto& job : finished) {
    std::unique_ptr<TrainerRun> trainer;
    {
      absl::MutexLock lock(&job->mu);
      trainer = std::move(job->trainer);
    }
    trainer.reset();
  }
}

void Worker::CancelJob(const v1::Cancel& cancel) {
  std::shared_ptr<Job> job;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(cancel.job_id());
    // A Cancel names an attempt: one for an earlier attempt must not stop
    // the attempt running here now.
    if (it != jobs_.end() &&
        (cancel.attempt() == 0 || it->second->attempt == cancel.attempt())) {
      job = it->second;
    }
  }
  if (!job) {
    // Unknown here: confirm so the scheduler does not wait for us.
    SendResult(MakeJobResult(cancel.job_id(), cancel.attempt(),
                             v1::JOB_OUTCOME_CANCELLED,
                             "not running on this worker"));
    return;
  }
  Log(absl::StrCat(job->id, ": cancelling (", cancel.reason(), ")"));
  absl::MutexLock lock(&job->mu);
  job->cancel_requested = true;
  if (job->trainer) job->trainer->Stop(options_.stop_grace);
}

void Worker::Drain() {
  if (draining_.exchange(true)) return;
  Log("draining: checkpointing running jobs and handing them back");
  std::vector<std::shared_ptr<Job>> jobs;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [id, job] : jobs_) jobs.push_back(job);
  }
  v1::WorkerMessage message;
  message.mutable_heartbeat()->set_draining(true);
  for (const auto& r : RunningJobs())
    *message.mutable_heartbeat()->add_running_jobs() = r;
  Send(message);
  for (auto& job : jobs) {
    absl::MutexLock lock(&job->mu);
    job->release_requested = true;
    if (job->trainer) job->trainer->Stop(options_.stop_grace);
  }
  // Run() ends once every job has been handed back.
  absl::MutexLock lock(&mu_);
  if (drain_waiter_.joinable()) return;  // a drain is already under way
  drain_waiter_ = std::thread([this] {
    bool stopped;
    {
      absl::MutexLock lock(&mu_);
      while (!jobs_.empty() && !stopping_) cv_.Wait(&mu_);
      stopped = stopping_;
    }
    if (stopped) return;  // Shutdown() came first (e.g. the destructor)
    // Let the last results reach the scheduler before closing.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    Shutdown();
  });
}

void Worker::Shutdown() {
  stopping_ = true;
  std::vector<std::shared_ptr<Job>> jobs;
  {
    absl::MutexLock lock(&mu_);
    if (stream_ != nullptr) stream_->Cancel();
    for (auto& [id, job] : jobs_) jobs.push_back(job);
  }
  cv_.SignalAll();
  edges_.transfer->CancelAll();
  for (auto& job : jobs) {
    absl::MutexLock lock(&job->mu);
    job->upload_cv.SignalAll();
  }
}

}  // namespace halftime
