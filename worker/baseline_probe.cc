#include "worker/baseline_probe.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/events.h"

namespace halftime {
namespace {

namespace fs = std::filesystem;
namespace events = engine::events;

// What the probe's callbacks, on the probe's own thread, tell the thread
// that waits for it.
struct ProbeState {
  absl::Mutex mu;
  absl::CondVar cv;  // signalled when `enough` or `exited` is set
  bool exited ABSL_GUARDED_BY(mu) = false;
  // Measured what we need; the rest is killed.
  bool enough ABSL_GUARDED_BY(mu) = false;
  StepRecord steps ABSL_GUARDED_BY(mu);
  ExitInfo exit_info ABSL_GUARDED_BY(mu);
};

}  // namespace

bool WantsBaseline(const v1::JobSpec& spec) {
  // An fp32 adapter job on a 16-bit or quantized base saves against the
  // same adapter on an fp32 base.
  const v1::BaseDtype base = spec.adapter().base_dtype();
  const bool lean_base =
      spec.adapter().kind() != v1::ADAPTER_KIND_UNSPECIFIED &&
      base != v1::BASE_DTYPE_UNSPECIFIED && base != v1::BASE_DTYPE_FP32;
  return spec.savings().baseline() != v1::BASELINE_MODE_NONE &&
         (spec.precision() != v1::PRECISION_FP32 || lean_base);
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
  TrainerRunOptions trainer;
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
  if (options.adapter) {
    // The same adapter trained on an fp32 base, in fp32.
    trainer.args.push_back("--set");
    trainer.args.push_back("adapter.base_dtype=fp32");
  }
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
  ProbeState state;
  TrainerRunCallbacks callbacks;
  callbacks.on_event = [&](const std::string& line) {
    nlohmann::json e = nlohmann::json::parse(line, nullptr, false);
    if (e.is_discarded() || !e.is_object() ||
        e.value(events::kKind, "") != events::kStep) {
      return;
    }
    absl::MutexLock lock(&state.mu);
    state.steps.Add(ReportFromEvent(e, 0));
    if (state.steps.SteadyCount() >= min_steps &&
        state.steps.SteadySeconds() >= min_steady_seconds) {
      state.enough = true;
      state.cv.SignalAll();
    }
  };
  callbacks.on_exit = [&](const ExitInfo& exit) {
    absl::MutexLock lock(&state.mu);
    state.exit_info = exit;
    state.exited = true;
    state.cv.SignalAll();
  };
  const absl::Time began = clock.Now();
  auto process = launcher.Start(trainer, std::move(callbacks));
  if (!process.ok()) {
    return absl::UnavailableError(
        absl::StrCat("fp32 probe did not start: ", process.status().message()));
  }
  bool stopped = false;
  {
    absl::MutexLock lock(&state.mu);
    bool killed = false;
    while (!state.exited) {
      state.cv.WaitWithTimeout(&state.mu, absl::Milliseconds(100));
      if (state.exited || killed) continue;
      if (!state.enough && should_stop()) stopped = true;
      if (state.enough || stopped) {
        (*process)->Kill();
        killed = true;
      }
    }
  }
  (*process)->Wait();
  const double probe_seconds = absl::ToDoubleSeconds(clock.Now() - began);
  absl::MutexLock lock(&state.mu);
  if (stopped) return absl::CancelledError("fp32 probe stopped");
  // A probe we stopped once it had measured enough died of our SIGKILL;
  // one that ran all its steps exits cleanly.
  if ((!state.enough && state.exit_info.exit_code != events::kExitOk) ||
      state.steps.empty()) {
    return absl::UnavailableError(
        absl::StrCat("fp32 probe failed (", state.exit_info.Describe(), ")"));
  }
  return BaselineFromProbe(state.steps, probe_seconds, options.fingerprint);
}

}  // namespace halftime
