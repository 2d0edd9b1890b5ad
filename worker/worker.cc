#include "worker/worker.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/baseline_fingerprint.h"
#include "common/enum_names.h"
#include "common/sha256.h"
#include "common/spec.h"
#include "common/status.h"
#include "worker/step_record.h"
#include "worker/trainer/events.h"
#include "worker/transfer_watchdog.h"

namespace halftime {
namespace {

namespace fs = std::filesystem;
namespace events = trainer::events;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kChunkBytes = 1 << 20;
constexpr auto kRpcDeadline = std::chrono::seconds(60);
// Checkpoint transfers have no fixed deadline (their size is open-ended):
// they fail once no chunk has moved for kRpcDeadline, within this cap.
constexpr auto kTransferCap = std::chrono::hours(6);

void Log(const std::string& line) { std::cerr << "worker: " << line << "\n"; }

}  // namespace

std::string StallReason(std::chrono::milliseconds stall_timeout,
                        const ExitInfo& exit) {
  return absl::StrCat("no training step for ",
                      absl::FormatDuration(absl::FromChrono(stall_timeout)),
                      " (trainer ", exit.Describe(), ")");
}

struct Worker::Job {
  std::string id;
  int attempt = 0;
  v1::JobSpec spec;
  std::string dir;
  std::string precision;
  Clock::time_point started = Clock::now();

  std::mutex mu;  // guards the rest
  std::unique_ptr<TrainerProcess> process;
  bool cancel_requested = false;
  bool release_requested = false;
  bool finished = false;
  std::string done_status;
  std::string done_message;
  nlohmann::json summary;
  StepRecord steps;
  bool has_baseline = false;
  Baseline baseline;
  std::string upload_error;
  // Checkpoint uploads run on their own thread (UploadLoop), newest first:
  // the reader thread stays free for the trainer's events, and one
  // superseded before its upload began (the trainer stops waiting once it
  // is told to stop) is skipped instead of queued.
  std::condition_variable upload_cv;
  std::thread uploader;     // started and joined by the reader thread
  std::string upload_path;  // newest checkpoint not yet uploaded
  int64_t upload_step = 0;
  bool uploads_closed = false;  // the trainer is gone: flush, then end
  grpc::ClientContext* upload_context = nullptr;  // the upload in flight
};

Worker::Worker(WorkerOptions options, std::shared_ptr<grpc::Channel> channel,
               WorkerMetrics* metrics)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      stub_(v1::WorkerGateway::NewStub(channel_)),
      metrics_(metrics) {}

absl::StatusOr<std::unique_ptr<Worker>> Worker::Create(
    WorkerOptions options, std::shared_ptr<grpc::Channel> channel,
    WorkerMetrics* metrics) {
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
      new Worker(std::move(options), std::move(channel), metrics));
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
    std::lock_guard<std::mutex> lock(mu_);
    starters.swap(starters_);
    drain_waiter.swap(drain_waiter_);
  }
  for (Starter& s : starters) s.thread.join();
  // Shutdown() set stopping_ and woke it.
  if (drain_waiter.joinable()) drain_waiter.join();
  std::map<std::string, std::shared_ptr<Job>> jobs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs.swap(jobs_);
  }
  for (auto& [id, job] : jobs) {
    std::unique_ptr<TrainerProcess> process;
    {
      std::lock_guard<std::mutex> lock(job->mu);
      process = std::move(job->process);
    }
    process.reset();  // kills and joins
  }
  ReapFinished();
}

void Worker::PrepareContext(grpc::ClientContext* context,
                            std::chrono::milliseconds deadline) {
  if (deadline.count() > 0) {
    context->set_deadline(std::chrono::system_clock::now() + deadline);
  }
  if (options_.decorate_context) options_.decorate_context(context);
}

void Worker::UpdateSlotMetrics() {
  if (metrics_ == nullptr) return;
  int busy;
  {
    std::lock_guard<std::mutex> lock(mu_);
    busy = static_cast<int>(jobs_.size());
  }
  metrics_->SetSlots(options_.capabilities.slots(), busy);
}

std::vector<v1::RunningJob> Worker::RunningJobs() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::RunningJob> running;
  for (const auto& [id, job] : jobs_) {
    v1::RunningJob r;
    r.set_job_id(id);
    r.set_attempt(job->attempt);
    running.push_back(r);
  }
  return running;
}

bool Worker::Send(const v1::WorkerMessage& message) {
  std::lock_guard<std::mutex> write_lock(write_mu_);
  grpc::ClientReaderWriter<v1::WorkerMessage, v1::SchedulerMessage>* stream;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stream = stream_.get();
  }
  return stream != nullptr && stream->Write(message);
}

void Worker::SendResult(const v1::JobResult& result) {
  v1::WorkerMessage message;
  *message.mutable_result() = result;
  if (!Send(message)) {
    // Delivered after the next successful registration.
    std::lock_guard<std::mutex> lock(mu_);
    pending_results_.push_back(result);
  }
}

void Worker::Run() {
  std::mt19937 rng(std::random_device{}());
  auto backoff = options_.min_backoff;
  while (!stopping_) {
    const auto began = Clock::now();
    ServeOneConnection();
    if (stopping_) break;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (draining_ && jobs_.empty()) break;
    }
    // A connection that lasted a while resets the backoff.
    if (Clock::now() - began > std::chrono::seconds(10)) {
      backoff = options_.min_backoff;
    }
    // While jobs run here, retry well within the scheduler's lease grace:
    // a network cut shorter than the grace must not cost them their
    // attempt because the backoff grew during it.
    const auto grace = std::chrono::milliseconds(lease_grace_ms_.load());
    bool busy;
    {
      std::lock_guard<std::mutex> lock(mu_);
      busy = !jobs_.empty();
    }
    if (busy && grace.count() > 0) {
      backoff = std::min(backoff, std::max(options_.min_backoff, grace / 4));
    }
    std::uniform_int_distribution<int64_t> jitter(0, backoff.count());
    const auto wait = backoff / 2 + std::chrono::milliseconds(jitter(rng) / 2);
    WaitToReconnect(wait);
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
}

void Worker::WaitToReconnect(std::chrono::milliseconds wait) {
  // A channel that lost its connection dials again during the wait, and
  // the wait ends as soon as it is connected (the network healed, the
  // scheduler is back): registering then, not once our backoff and gRPC's
  // own (which grows with every refused dial) have both run out, is what
  // keeps a short cut within the lease grace. A channel still connected
  // (the scheduler ended the stream) waits out the whole backoff.
  const bool connected = channel_->GetState(false) == GRPC_CHANNEL_READY;
  if (!connected) {
    grpc::experimental::ChannelResetConnectionBackoff(channel_.get());
  }
  const auto until = Clock::now() + wait;
  while (!stopping_ && Clock::now() < until) {
    const auto slice = std::min<Clock::duration>(
        until - Clock::now(), std::chrono::milliseconds(100));
    if (!connected) {
      if (channel_->WaitForConnected(std::chrono::system_clock::now() +
                                     slice)) {
        return;
      }
      continue;
    }
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, slice, [this] { return stopping_.load(); });
  }
}

void Worker::ServeOneConnection() {
  grpc::ClientContext context;
  PrepareContext(&context, std::chrono::milliseconds(0));
  auto stream = stub_->Connect(&context);

  v1::WorkerMessage hello;
  v1::RegisterWorker* reg = hello.mutable_register_();
  reg->set_name(options_.name);
  *reg->mutable_capabilities() = options_.capabilities;
  for (const auto& r : RunningJobs()) *reg->add_running_jobs() = r;
  v1::SchedulerMessage reply;
  if (!stream->Write(hello) || !stream->Read(&reply) ||
      !reply.has_registered()) {
    grpc::Status status = stream->Finish();
    Log(absl::StrCat("cannot register with the scheduler: ",
                     status.ok()
                         ? "unexpected reply"
                         : DescribeSchedulerError(FromGrpcStatus(status),
                                                  options_.security)));
    return;
  }
  const v1::Registered& registered = reply.registered();
  lease_grace_ms_ = registered.lease_grace_ms();
  Log(absl::StrCat("registered as ", options_.name));
  for (const v1::RunningJob& stale : registered.stale_jobs()) {
    std::shared_ptr<Job> job;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = jobs_.find(stale.job_id());
      if (it != jobs_.end() && it->second->attempt == stale.attempt())
        job = it->second;
    }
    if (job) {
      Log(absl::StrCat("stopping stale job ", stale.job_id(), " attempt ",
                       stale.attempt()));
      std::lock_guard<std::mutex> lock(job->mu);
      job->cancel_requested = true;
      if (job->process) job->process->Kill();
    }
  }
  std::vector<v1::JobResult> pending;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stream_ = std::move(stream);
    stream_context_ = &context;
    pending.swap(pending_results_);
  }
  for (const auto& result : pending) SendResult(result);

  const auto interval = std::chrono::milliseconds(
      std::max<int64_t>(registered.heartbeat_interval_ms(), 100));
  std::thread heartbeat([this, interval] { HeartbeatLoop(interval); });

  grpc::ClientReaderWriter<v1::WorkerMessage, v1::SchedulerMessage>* raw;
  {
    std::lock_guard<std::mutex> lock(mu_);
    raw = stream_.get();
  }
  v1::SchedulerMessage message;
  while (raw->Read(&message)) {
    if (message.has_assignment()) {
      std::lock_guard<std::mutex> lock(mu_);
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
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::WorkerMessage, v1::SchedulerMessage>>
      closed;
  {
    std::lock_guard<std::mutex> write_lock(write_mu_);
    std::lock_guard<std::mutex> lock(mu_);
    closed = std::move(stream_);
    stream_context_ = nullptr;
  }
  cv_.notify_all();
  heartbeat.join();
  grpc::Status status = closed->Finish();
  if (!stopping_) {
    Log(absl::StrCat("connection to the scheduler lost: ",
                     status.ok()
                         ? "stream closed"
                         : DescribeSchedulerError(FromGrpcStatus(status),
                                                  options_.security)));
  }
}

void Worker::HeartbeatLoop(std::chrono::milliseconds interval) {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, interval,
                   [this] { return stream_ == nullptr || stopping_; });
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

void Worker::StartJob(const v1::Assignment& assignment) {
  auto job = std::make_shared<Job>();
  job->id = assignment.job_id();
  job->attempt = assignment.attempt();
  job->spec = assignment.spec();
  job->precision = PrecisionName(job->spec.precision());
  job->dir = (fs::path(options_.work_dir) / "jobs" / job->id /
              absl::StrCat("attempt-", job->attempt))
                 .string();
  auto fail = [&](const std::string& reason, bool permanent) {
    Log(absl::StrCat(job->id, ": ", reason));
    v1::JobResult result;
    result.set_job_id(job->id);
    result.set_attempt(job->attempt);
    result.set_outcome(v1::JOB_OUTCOME_FAILED);
    result.set_reason(reason);
    result.set_permanent(permanent);
    SendResult(result);
  };
  std::string rejection;
  {
    std::unique_lock<std::mutex> lock(mu_);
    // An older attempt of this job still here was found stale (the
    // scheduler gave up on it, e.g. after a network cut, and now hands the
    // new attempt back to us): it is being killed; take the new attempt
    // once it is gone rather than refuse it as a duplicate.
    auto older = jobs_.find(job->id);
    if (older != jobs_.end() && older->second->attempt < job->attempt) {
      std::shared_ptr<Job> stale = older->second;
      lock.unlock();
      {
        std::lock_guard<std::mutex> stale_lock(stale->mu);
        stale->cancel_requested = true;
        if (stale->process) stale->process->Kill();
      }
      lock.lock();
      cv_.wait_for(lock, options_.stop_grace + std::chrono::seconds(10), [&] {
        auto it = jobs_.find(job->id);
        return it == jobs_.end() || it->second != stale || stopping_;
      });
    }
    if (draining_ || stopping_) {
      rejection = "worker is draining";
    } else if (jobs_.count(job->id)) {
      rejection = "job already runs here";
    } else if (static_cast<int>(jobs_.size()) >=
               options_.capabilities.slots()) {
      rejection = "worker has no free slot";
    } else {
      jobs_[job->id] = job;
    }
  }
  if (!rejection.empty()) {
    v1::JobResult result;
    result.set_job_id(job->id);
    result.set_attempt(job->attempt);
    result.set_outcome(v1::JOB_OUTCOME_RELEASED);
    result.set_reason(rejection);
    SendResult(result);
    return;
  }
  UpdateSlotMetrics();
  Log(absl::StrCat(job->id, ": assigned attempt ", job->attempt, " (",
                   job->precision, ")"));

  std::error_code ec;
  fs::create_directories(job->dir, ec);
  const std::string spec_path = (fs::path(job->dir) / "spec.json").string();
  {
    std::ofstream out(spec_path);
    out << FormatJobSpec(job->spec, SpecFormat::kJson);
    if (!out) {
      FinishJob(job);
      fail(absl::StrCat("cannot write ", spec_path), false);
      return;
    }
  }

  int64_t resumed_from = 0;
  std::string resume_path;
  if (assignment.has_checkpoint()) {
    resume_path = (fs::path(job->dir) / "resume.ckpt").string();
    bool corrupt_at_source = false;
    absl::Status downloaded = DownloadCheckpoint(
        job->id, resume_path, &resumed_from, &corrupt_at_source);
    if (!downloaded.ok()) {
      FinishJob(job);
      // The scheduler's own copy is corrupt or gone (it checks the file
      // against its record): no retry can resume from it, and training on
      // from corrupt bytes is never an option.
      fail(corrupt_at_source
               ? absl::StrCat("cannot resume: ", downloaded.message(),
                              "; not resuming from a corrupt checkpoint")
               : absl::StrCat("cannot download checkpoint: ",
                              downloaded.message()),
           corrupt_at_source);
      return;
    }
  }

  const bool wants_baseline =
      job->spec.savings().baseline() != v1::BASELINE_MODE_NONE &&
      job->spec.precision() != v1::PRECISION_FP32;
  if (wants_baseline) {
    const std::string fingerprint =
        BaselineFingerprint(job->spec, options_.capabilities);
    const v1::Savings& cached = assignment.cached_baseline();
    if (job->spec.savings().baseline() == v1::BASELINE_MODE_CACHED &&
        assignment.has_cached_baseline() &&
        cached.fingerprint() == fingerprint &&
        cached.baseline_step_seconds() > 0) {
      std::lock_guard<std::mutex> lock(job->mu);
      job->has_baseline = true;
      job->baseline.step_seconds = cached.baseline_step_seconds();
      job->baseline.tokens_per_second = cached.baseline_tokens_per_second();
      job->baseline.peak_memory_bytes = cached.baseline_peak_memory_bytes();
      job->baseline.source = v1::BASELINE_MODE_CACHED;
      Log(absl::StrCat(job->id, ": reusing cached fp32 baseline ", fingerprint,
                       " (", job->baseline.step_seconds, " s/step)"));
    } else {
      // Probe mode, or cached with nothing stored (or stored for another
      // fingerprint: a worker never trusts figures measured elsewhere).
      MeasureBaseline(job.get());
    }
    std::lock_guard<std::mutex> lock(job->mu);
    job->baseline.fingerprint = fingerprint;
  }

  std::vector<std::string> args = {
      spec_path,
      "--out",
      (fs::path(options_.out_root) / job->spec.name()).string(),
      "--metrics-jsonl",
      (fs::path(job->dir) / "metrics.jsonl").string(),
      "--threads",
      std::to_string(options_.capabilities.threads_per_job()),
      "--quiet"};
  if (!options_.data_root.empty()) {
    args.push_back("--data-root");
    args.push_back(options_.data_root);
  }
  if (!resume_path.empty()) {
    args.push_back("--resume");
    args.push_back(resume_path);
  }
  TrainerProcess::Options process_options;
  process_options.binary = options_.trainer_binary;
  process_options.args = args;
  process_options.work_dir = job->dir;
  process_options.stderr_log = (fs::path(job->dir) / "stderr.log").string();
  process_options.stall_timeout = options_.stall_timeout;
  // The trainer waits for each checkpoint to be stored before it trains on,
  // so a crash repeats at most the checkpoint interval.
  process_options.acknowledgements = true;
  TrainerProcess::Callbacks callbacks;
  callbacks.on_event = [this, job](const std::string& line) {
    OnTrainerEvent(job, line);
  };
  callbacks.on_exit = [this, job](const ExitInfo& exit) {
    OnTrainerExit(job, exit);
  };

  std::lock_guard<std::mutex> lock(job->mu);
  if (job->cancel_requested || job->release_requested) {
    v1::JobResult result;
    result.set_job_id(job->id);
    result.set_attempt(job->attempt);
    result.set_outcome(job->cancel_requested ? v1::JOB_OUTCOME_CANCELLED
                                             : v1::JOB_OUTCOME_RELEASED);
    result.set_reason(job->cancel_requested ? "cancelled before start"
                                            : "worker is draining");
    job->finished = true;
    {
      std::lock_guard<std::mutex> jobs_lock(mu_);
      jobs_.erase(job->id);
    }
    cv_.notify_all();
    SendResult(result);
    return;
  }
  auto process = TrainerProcess::Start(process_options, std::move(callbacks));
  if (!process.ok()) {
    job->finished = true;
    {
      std::lock_guard<std::mutex> jobs_lock(mu_);
      jobs_.erase(job->id);
    }
    cv_.notify_all();
    fail(std::string(process.status().message()), false);
    return;
  }
  job->process = std::move(*process);
  v1::WorkerMessage started;
  started.mutable_started()->set_job_id(job->id);
  started.mutable_started()->set_attempt(job->attempt);
  started.mutable_started()->set_resumed_from_step(resumed_from);
  Send(started);
}

void Worker::MeasureBaseline(Job* job) {
  // The same spec in fp32 for probe_steps steps: same model, batch, data,
  // device and threads; nothing written. Its steady median step time
  // (StepRecord::SteadyStepSeconds: warm-up excluded, as for the job's own
  // steps) is the baseline.
  const std::string spec_path = (fs::path(job->dir) / "spec.json").string();
  const int probe_steps = std::max(3, job->spec.savings().probe_steps());
  std::vector<std::string> args = {
      spec_path,
      "--set",
      "precision=fp32",
      "--set",
      "loss_scaling.mode=none",
      "--set",
      absl::StrCat("steps=", probe_steps),
      "--set",
      "lr_schedule.warmup_steps=0",
      "--set",
      "eval.every_steps=0",
      "--set",
      "eval.batches=1",
      "--threads",
      std::to_string(options_.capabilities.threads_per_job()),
      "--quiet"};
  if (!options_.data_root.empty()) {
    args.push_back("--data-root");
    args.push_back(options_.data_root);
  }
  TrainerProcess::Options process_options;
  process_options.binary = options_.trainer_binary;
  process_options.args = args;
  process_options.work_dir = job->dir;
  process_options.stderr_log =
      (fs::path(job->dir) / "probe-stderr.log").string();
  process_options.stall_timeout = options_.stall_timeout;

  std::mutex probe_mu;
  std::condition_variable probe_cv;
  bool exited = false;
  StepRecord steps;
  TrainerProcess::Callbacks callbacks;
  callbacks.on_event = [&](const std::string& line) {
    nlohmann::json e = nlohmann::json::parse(line, nullptr, false);
    if (e.is_discarded() || e.value(events::kKind, "") != events::kStep) return;
    std::lock_guard<std::mutex> lock(probe_mu);
    steps.Add(ReportFromEvent(e, job->attempt));
  };
  ExitInfo exit_info;
  callbacks.on_exit = [&](const ExitInfo& exit) {
    std::lock_guard<std::mutex> lock(probe_mu);
    exit_info = exit;
    exited = true;
    probe_cv.notify_all();
  };
  const auto began = Clock::now();
  auto process = TrainerProcess::Start(process_options, std::move(callbacks));
  if (!process.ok()) {
    Log(absl::StrCat(
        job->id, ": fp32 probe did not start: ", process.status().message()));
    return;
  }
  {
    std::unique_lock<std::mutex> lock(probe_mu);
    while (!exited) {
      probe_cv.wait_for(lock, std::chrono::milliseconds(100));
      std::lock_guard<std::mutex> job_lock(job->mu);
      if ((job->cancel_requested || job->release_requested || stopping_) &&
          !exited) {
        (*process)->Kill();
      }
    }
  }
  (*process)->Wait();
  const double probe_seconds =
      std::chrono::duration<double>(Clock::now() - began).count();
  if (exit_info.exit_code != events::kExitOk || steps.empty()) {
    Log(absl::StrCat(job->id, ": fp32 probe failed (", exit_info.Describe(),
                     "); no savings will be reported"));
    return;
  }
  std::lock_guard<std::mutex> lock(job->mu);
  job->has_baseline = true;
  job->baseline =
      BaselineFromProbe(steps, probe_seconds, job->baseline.fingerprint);
  Log(absl::StrCat(job->id, ": fp32 baseline ", job->baseline.step_seconds,
                   " s/step, probe took ", probe_seconds, " s"));
}

void Worker::OnTrainerEvent(const std::shared_ptr<Job>& job,
                            const std::string& line) {
  nlohmann::json e = nlohmann::json::parse(line, nullptr, false);
  if (e.is_discarded() || !e.is_object()) return;
  const std::string kind = e.value(events::kKind, "");
  if (kind == events::kStep) {
    v1::TrainingReport report = ReportFromEvent(e, job->attempt);
    {
      std::lock_guard<std::mutex> lock(job->mu);
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
    std::lock_guard<std::mutex> lock(job->mu);
    if (!job->upload_path.empty()) {
      Log(absl::StrCat(job->id, ": skipping the upload of step ",
                       job->upload_step, ": step ", step, " is newer"));
    }
    job->upload_path = e.value(events::kPath, "");
    job->upload_step = step;
    if (!job->uploader.joinable()) {
      job->uploader = std::thread([this, raw = job.get()] { UploadLoop(raw); });
    }
    job->upload_cv.notify_all();
  } else if (kind == events::kDone) {
    std::lock_guard<std::mutex> lock(job->mu);
    job->done_status = e.value(events::kStatus, "");
    job->done_message = e.value(events::kMessage, "");
    if (e.contains(events::kSummary)) job->summary = e[events::kSummary];
  }
}

void Worker::UploadLoop(Job* job) {
  std::unique_lock<std::mutex> lock(job->mu);
  while (true) {
    job->upload_cv.wait(lock, [job] {
      return !job->upload_path.empty() || job->uploads_closed;
    });
    if (job->upload_path.empty() || stopping_) break;
    const std::string path = std::move(job->upload_path);
    job->upload_path.clear();
    const int64_t step = job->upload_step;
    lock.unlock();
    absl::Status uploaded = UploadCheckpoint(job, path, step);
    if (!uploaded.ok()) {
      Log(absl::StrCat(job->id, ": checkpoint upload of step ", step,
                       " failed: ", uploaded.message()));
    }
    lock.lock();
    if (!uploaded.ok()) job->upload_error = std::string(uploaded.message());
    // Not while a newer checkpoint waits: that one's ack covers this one.
    if (job->process && job->upload_path.empty()) {
      job->process
          ->Acknowledge(absl::StrCat(uploaded.ok() ? "stored " : "failed ",
                                     step))
          .IgnoreError();  // a trainer already gone needs no answer
    }
  }
}

void Worker::FlushUploads(Job* job) {
  {
    std::lock_guard<std::mutex> lock(job->mu);
    job->uploads_closed = true;
    job->upload_cv.notify_all();
  }
  if (job->uploader.joinable()) job->uploader.join();
}

void Worker::OnTrainerExit(const std::shared_ptr<Job>& job,
                           const ExitInfo& exit) {
  // The last checkpoint (e.g. the one written on SIGTERM when draining)
  // is stored before the scheduler hears of the end and places the next
  // attempt, which resumes from it.
  FlushUploads(job.get());
  v1::JobResult result;
  result.set_job_id(job->id);
  result.set_attempt(job->attempt);
  {
    std::lock_guard<std::mutex> lock(job->mu);
    job->finished = true;
    if (job->process) {
      for (const auto& line : job->process->StderrTail())
        result.add_stderr_tail(line);
    }
    if (exit.exit_code == events::kExitOk &&
        job->done_status == events::kOkStatus) {
      result.set_outcome(v1::JOB_OUTCOME_SUCCEEDED);
      if (job->has_baseline && !job->steps.empty()) {
        *result.mutable_savings() =
            ComputeSavings(job->spec.precision(), job->baseline, job->steps,
                           options_.capabilities);
      }
    } else if (job->release_requested && !job->cancel_requested) {
      result.set_outcome(v1::JOB_OUTCOME_RELEASED);
      result.set_reason("worker is draining");
    } else if (job->cancel_requested) {
      result.set_outcome(v1::JOB_OUTCOME_CANCELLED);
      result.set_reason("cancelled");
    } else if (exit.stalled) {
      // Hung (deadlocked, stopped, stuck in I/O): another try may well
      // succeed, on this worker or another.
      result.set_outcome(v1::JOB_OUTCOME_FAILED);
      result.set_reason(StallReason(options_.stall_timeout, exit));
      result.set_permanent(false);
    } else {
      result.set_outcome(v1::JOB_OUTCOME_FAILED);
      // The trainer's own words: its done event, else its last stderr line
      // (errors found before training starts, e.g. a path outside the root).
      std::string why = job->done_message;
      if (why.empty() && result.stderr_tail_size() > 0) {
        why = result.stderr_tail(result.stderr_tail_size() - 1);
        const std::string prefix = "halftime-train: ";
        if (why.rfind(prefix, 0) == 0) why = why.substr(prefix.size());
      }
      std::string reason =
          why.empty() ? absl::StrCat("trainer ", exit.Describe())
                      : absl::StrCat(why, " (trainer ", exit.Describe(), ")");
      result.set_reason(reason);
      // Exit code 2 is a bad spec or data: retrying cannot help.
      result.set_permanent(exit.exit_code == events::kExitBadInput);
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
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find(job->id);
    if (it != jobs_.end() && it->second == job) jobs_.erase(it);
    // The process object may not be destroyed on its own reader thread.
    finished_.push_back(job);
  }
  cv_.notify_all();
  UpdateSlotMetrics();
}

void Worker::ReapFinished() {
  std::vector<std::shared_ptr<Job>> finished;
  {
    std::lock_guard<std::mutex> lock(mu_);
    finished.swap(finished_);
  }
  for (auto& job : finished) {
    std::unique_ptr<TrainerProcess> process;
    {
      std::lock_guard<std::mutex> lock(job->mu);
      process = std::move(job->process);
    }
    process.reset();
  }
}

void Worker::CancelJob(const v1::Cancel& cancel) {
  std::shared_ptr<Job> job;
  {
    std::lock_guard<std::mutex> lock(mu_);
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
    v1::JobResult result;
    result.set_job_id(cancel.job_id());
    result.set_attempt(cancel.attempt());
    result.set_outcome(v1::JOB_OUTCOME_CANCELLED);
    result.set_reason("not running on this worker");
    SendResult(result);
    return;
  }
  Log(absl::StrCat(job->id, ": cancelling (", cancel.reason(), ")"));
  std::lock_guard<std::mutex> lock(job->mu);
  job->cancel_requested = true;
  if (job->process) job->process->Stop(options_.stop_grace);
}

void Worker::Drain() {
  if (draining_.exchange(true)) return;
  Log("draining: checkpointing running jobs and handing them back");
  std::vector<std::shared_ptr<Job>> jobs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, job] : jobs_) jobs.push_back(job);
  }
  v1::WorkerMessage message;
  message.mutable_heartbeat()->set_draining(true);
  for (const auto& r : RunningJobs())
    *message.mutable_heartbeat()->add_running_jobs() = r;
  Send(message);
  for (auto& job : jobs) {
    std::lock_guard<std::mutex> lock(job->mu);
    job->release_requested = true;
    if (job->process) job->process->Stop(options_.stop_grace);
  }
  // Run() ends once every job has been handed back.
  std::lock_guard<std::mutex> lock(mu_);
  if (drain_waiter_.joinable()) return;  // a drain is already under way
  drain_waiter_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return jobs_.empty() || stopping_; });
    const bool stopped = stopping_;
    lock.unlock();
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
    std::lock_guard<std::mutex> lock(mu_);
    if (stream_context_ != nullptr) stream_context_->TryCancel();
    for (auto& [id, job] : jobs_) jobs.push_back(job);
  }
  cv_.notify_all();
  for (auto& job : jobs) {
    std::lock_guard<std::mutex> lock(job->mu);
    if (job->upload_context != nullptr) job->upload_context->TryCancel();
    job->upload_cv.notify_all();
  }
}

absl::Status Worker::UploadCheckpoint(Job* job, const std::string& path,
                                      int64_t step) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  const Clock::time_point began = Clock::now();
  grpc::ClientContext context;
  PrepareContext(&context, kTransferCap);
  {
    std::lock_guard<std::mutex> lock(job->mu);
    if (stopping_) return absl::CancelledError("worker is stopping");
    job->upload_context = &context;
  }
  struct Unregister {
    Job* job;
    ~Unregister() {
      std::lock_guard<std::mutex> lock(job->mu);
      job->upload_context = nullptr;
    }
  } unregister{job};
  v1::UploadCheckpointResponse response;
  TransferWatchdog watchdog(&context, kRpcDeadline);
  auto writer = stub_->UploadCheckpoint(&context, &response);
  Sha256 sha;
  std::string buffer(kChunkBytes, '\0');
  int64_t total = 0;
  bool first = true;
  while (true) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const std::streamsize n = in.gcount();
    v1::CheckpointChunk chunk;
    if (first) {
      chunk.set_job_id(job->id);
      chunk.set_attempt(job->attempt);
      chunk.set_step(step);
      first = false;
    }
    if (n > 0) {
      chunk.set_data(buffer.data(), static_cast<std::size_t>(n));
      sha.Update(absl::string_view(buffer.data(), static_cast<std::size_t>(n)));
      total += n;
    }
    const bool last = n < static_cast<std::streamsize>(buffer.size());
    if (last) {
      chunk.set_sha256(sha.HexDigest());
      chunk.set_total_bytes(total);
    }
    if (!writer->Write(chunk)) break;
    watchdog.Progress();
    if (last) break;
  }
  writer->WritesDone();
  absl::Status status = watchdog.Outcome(FromGrpcStatus(writer->Finish()),
                                         "checkpoint upload", total);
  if (status.ok()) {
    const std::chrono::duration<double> took = Clock::now() - began;
    Log(absl::StrCat(job->id, ": uploaded checkpoint of step ", step, " (",
                     total, " bytes in ", absl::StrFormat("%.3f", took.count()),
                     " s)"));
  }
  return status;
}

absl::Status Worker::DownloadCheckpoint(const std::string& job_id,
                                        const std::string& path, int64_t* step,
                                        bool* corrupt_at_source) {
  *corrupt_at_source = false;
  grpc::ClientContext context;
  PrepareContext(&context, kTransferCap);
  TransferWatchdog watchdog(&context, kRpcDeadline);
  v1::DownloadCheckpointRequest request;
  request.set_job_id(job_id);
  auto reader = stub_->DownloadCheckpoint(&context, request);
  const std::string partial = path + ".partial";
  std::ofstream out(partial, std::ios::binary | std::ios::trunc);
  Sha256 sha;
  int64_t total = 0;
  std::string expected_sha;
  int64_t expected_total = -1;
  v1::CheckpointChunk chunk;
  while (reader->Read(&chunk)) {
    watchdog.Progress();
    if (chunk.step() > 0) *step = chunk.step();
    out.write(chunk.data().data(),
              static_cast<std::streamsize>(chunk.data().size()));
    sha.Update(chunk.data());
    total += static_cast<int64_t>(chunk.data().size());
    if (!chunk.sha256().empty()) {
      expected_sha = chunk.sha256();
      expected_total = chunk.total_bytes();
    }
  }
  absl::Status status = watchdog.Outcome(FromGrpcStatus(reader->Finish()),
                                         "checkpoint download", total);
  out.close();
  std::error_code ec;
  if (!status.ok()) {
    fs::remove(partial, ec);
    // DATA_LOSS: the scheduler found its stored copy corrupt or missing.
    *corrupt_at_source = status.code() == absl::StatusCode::kDataLoss;
    return status;
  }
  if (!out) {
    fs::remove(partial, ec);
    return absl::InternalError(absl::StrCat("cannot write ", partial));
  }
  if (expected_sha != sha.HexDigest() || expected_total != total) {
    // Garbled on the way (the scheduler verified its copy): another try
    // may fare better.
    fs::remove(partial, ec);
    return absl::DataLossError(absl::StrCat("checkpoint of ", job_id,
                                            " failed its checksum in transit (",
                                            total, " bytes)"));
  }
  fs::rename(partial, path, ec);
  if (ec) return absl::InternalError(ec.message());
  Log(absl::StrCat(job_id, ": downloaded checkpoint of step ", *step, " (",
                   total, " bytes)"));
  return absl::OkStatus();
}

}  // namespace halftime
