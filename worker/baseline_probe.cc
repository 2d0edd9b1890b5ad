#include "worker/baseline_probe.h"

#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "worker/trainer/events.h"

namespace halftime {
namespace {

namespace fs = std::filesystem;
namespace events = trainer::events;

}  // namespace

bool WantsBaseline(const v1::JobSpec& spec) {
  return spec.savings().baseline() != v1::BASELINE_MODE_NONE &&
         spec.precision() != v1::PRECISION_FP32;
}

std::optional<Baseline> CachedBaseline(const v1::Assignment& assignment,
                                       const std::string& fingerprint) {
  const v1::Savings& cached = assignment.cached_baseline();
  if (assignment.spec().savings().baseline() != v1::BASELINE_MODE_CACHED ||
      !assignment.has_cached_baseline() ||
      cached.fingerprint() != fingerprint ||
      cached.baseline_step_seconds() <= 0) {
    return std::nullopt;
  }
  Baseline baseline;
  baseline.step_seconds = cached.baseline_step_seconds();
  baseline.tokens_per_second = cached.baseline_tokens_per_second();
  baseline.peak_memory_bytes = cached.baseline_peak_memory_bytes();
  baseline.source = v1::BASELINE_MODE_CACHED;
  baseline.fingerprint = fingerprint;
  return baseline;
}

absl::StatusOr<Baseline> RunBaselineProbe(
    TrainerLauncher& launcher, const Clock& clock, const ProbeOptions& options,
    const std::function<bool()>& should_stop) {
  const int min_steps = std::max(3, options.min_steps);
  const int max_steps = min_steps * kProbeMaxStepsFactor;
  TrainerOptions trainer;
  trainer.binary = options.trainer_binary;
  trainer.args = {options.spec_path,
                  "--set",
                  "precision=fp32",
                  "--set",
                  "loss_scaling.mode=none",
                  "--set",
                  absl::StrCat("steps=", max_steps),
                  "--set",
                  "lr_schedule.warmup_steps=0",
                  "--set",
                  "eval.every_steps=0",
                  "--set",
                  "eval.batches=1",
                  "--threads",
                  std::to_string(options.threads),
                  "--quiet"};
  if (!options.data_root.empty()) {
    trainer.args.push_back("--data-root");
    trainer.args.push_back(options.data_root);
  }
  trainer.work_dir = options.work_dir;
  trainer.stderr_log =
      (fs::path(options.work_dir) / "probe-stderr.log").string();
  trainer.stall_timeout = options.stall_timeout;

  const double min_steady_seconds =
      std::chrono::duration<double>(options.min_steady_time).count();
  std::mutex mu;
  std::condition_variable cv;
  bool exited = false;
  bool enough = false;  // measured what we need; the rest is killed
  StepRecord steps;
  ExitInfo exit_info;
  TrainerCallbacks callbacks;
  callbacks.on_event = [&](const std::string& line) {
    nlohmann::json e = nlohmann::json::parse(line, nullptr, false);
    if (e.is_discarded() || !e.is_object() ||
        e.value(events::kKind, "") != events::kStep) {
      return;
    }
    std::lock_guard<std::mutex> lock(mu);
    steps.Add(ReportFromEvent(e, 0));
    if (steps.SteadyCount() >= min_steps &&
        steps.SteadySeconds() >= min_steady_seconds) {
      enough = true;
      cv.notify_all();
    }
  };
  callbacks.on_exit = [&](const ExitInfo& exit) {
    std::lock_guard<std::mutex> lock(mu);
    exit_info = exit;
    exited = true;
    cv.notify_all();
  };
  const absl::Time began = clock.Now();
  auto process = launcher.Start(trainer, std::move(callbacks));
  if (!process.ok()) {
    return absl::UnavailableError(
        absl::StrCat("fp32 probe did not start: ", process.status().message()));
  }
  bool stopped = false;
  {
    std::unique_lock<std::mutex> lock(mu);
    bool killed = false;
    while (!exited) {
      cv.wait_for(lock, std::chrono::milliseconds(100));
      if (exited || killed) continue;
      if (!enough && should_stop()) stopped = true;
      if (enough || stopped) {
        (*process)->Kill();
        killed = true;
      }
    }
  }
  (*process)->Wait();
  const double probe_seconds = absl::ToDoubleSeconds(clock.Now() - began);
  std::lock_guard<std::mutex> lock(mu);
  if (stopped) return absl::CancelledError("fp32 probe stopped");
  // A probe we stopped once it had measured enough died of our SIGKILL;
  // one that ran all its steps exits cleanly.
  if ((!enough && exit_info.exit_code != events::kExitOk) || steps.empty()) {
    return absl::UnavailableError(
        absl::StrCat("fp32 probe failed (", exit_info.Describe(), ")"));
  }
  return BaselineFromProbe(steps, probe_seconds, options.fingerprint);
}

}  // namespace halftime
