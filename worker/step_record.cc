#include "worker/step_record.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_join.h"
#include "common/enum_names.h"
#include "engine/events.h"
#include "engine/step_stats.h"

namespace halftime {
namespace {

namespace events = engine::events;

}  // namespace

double EventNumber(const nlohmann::json& event, const char* key,
                   double fallback) {
  auto it = event.find(key);
  return it != event.end() && it->is_number() ? it->get<double>() : fallback;
}

v1::TrainingReport ReportFromEvent(const nlohmann::json& e, int attempt) {
  v1::TrainingReport r;
  r.set_step(static_cast<int64_t>(EventNumber(e, events::kStepNumber)));
  r.set_total_steps(static_cast<int64_t>(EventNumber(e, events::kTotalSteps)));
  r.set_loss(EventNumber(e, events::kLoss));
  r.set_loss_scale(EventNumber(e, events::kLossScale, 1.0));
  r.set_overflow(e.value(events::kOverflow, false));
  r.set_skipped_steps(
      static_cast<int64_t>(EventNumber(e, events::kSkippedSteps)));
  // Non-finite grad norms (overflow) arrive as null.
  r.set_grad_norm(EventNumber(e, events::kGradNorm,
                              std::numeric_limits<double>::quiet_NaN()));
  r.set_step_seconds(EventNumber(e, events::kStepSeconds));
  r.set_samples_per_second(EventNumber(e, events::kSamplesPerSecond));
  r.set_tokens_per_second(EventNumber(e, events::kTokensPerSecond));
  r.set_model_flops_per_second(EventNumber(e, events::kModelFlopsPerSecond));
  r.set_peak_memory_bytes(
      static_cast<int64_t>(EventNumber(e, events::kPeakMemoryBytes)));
  r.set_weight_bytes(
      static_cast<int64_t>(EventNumber(e, events::kWeightBytes)));
  r.set_gradient_bytes(
      static_cast<int64_t>(EventNumber(e, events::kGradientBytes)));
  r.set_optimizer_state_bytes(
      static_cast<int64_t>(EventNumber(e, events::kOptimizerStateBytes)));
  r.set_learning_rate(EventNumber(e, events::kLearningRate));
  r.set_parameters(static_cast<int64_t>(EventNumber(e, events::kParameters)));
  r.set_trainable_parameters(
      static_cast<int64_t>(EventNumber(e, events::kTrainableParameters)));
  if (e.contains(events::kEvalLoss) && e[events::kEvalLoss].is_number()) {
    r.set_eval_loss(e[events::kEvalLoss].get<double>());
  }
  if (e.contains(events::kEvalAccuracy) &&
      e[events::kEvalAccuracy].is_number()) {
    r.set_eval_accuracy(e[events::kEvalAccuracy].get<double>());
  }
  if (e.contains(events::kPrecision) && e[events::kPrecision].is_string()) {
    if (auto p = ParsePrecision(e[events::kPrecision].get<std::string>());
        p.ok()) {
      r.set_precision(*p);
    }
  }
  r.set_attempt(attempt);
  return r;
}

void StepRecord::Add(const v1::TrainingReport& report) {
  step_seconds_.push_back(report.step_seconds());
  tokens_per_second_.push_back(report.tokens_per_second());
  peak_memory_bytes_ = std::max(peak_memory_bytes_, report.peak_memory_bytes());
}

double StepRecord::SteadyStepSeconds() const {
  return engine::SteadyMedian(step_seconds_);
}

int64_t StepRecord::SteadyCount() const {
  return size() -
         static_cast<int64_t>(engine::WarmupSteps(step_seconds_.size()));
}

double StepRecord::SteadySeconds() const {
  double total = 0;
  for (std::size_t i = engine::WarmupSteps(step_seconds_.size());
       i < step_seconds_.size(); ++i) {
    total += step_seconds_[i];
  }
  return total;
}

double StepRecord::SteadyTokensPerSecond() const {
  return engine::SteadyMedian(tokens_per_second_);
}

Baseline BaselineFromProbe(const StepRecord& probe, double probe_seconds,
                           const std::string& fingerprint) {
  Baseline baseline;
  baseline.step_seconds = probe.SteadyStepSeconds();
  baseline.tokens_per_second = probe.SteadyTokensPerSecond();
  baseline.peak_memory_bytes = probe.peak_memory_bytes();
  baseline.probe_seconds = probe_seconds;
  baseline.source = v1::BASELINE_MODE_PROBE;
  baseline.fingerprint = fingerprint;
  return baseline;
}

v1::Savings ComputeSavings(v1::Precision precision, const Baseline& baseline,
                           const StepRecord& job,
                           const v1::WorkerCapabilities& caps) {
  v1::Savings s;
  s.set_precision(precision);
  s.set_baseline(baseline.source);
  s.set_fingerprint(baseline.fingerprint);
  s.set_device_name(caps.device_name());
  s.set_baseline_step_seconds(baseline.step_seconds);
  s.set_step_seconds(job.SteadyStepSeconds());
  s.set_baseline_tokens_per_second(baseline.tokens_per_second);
  s.set_tokens_per_second(job.SteadyTokensPerSecond());
  s.set_baseline_peak_memory_bytes(baseline.peak_memory_bytes);
  s.set_peak_memory_bytes(job.peak_memory_bytes());
  s.set_probe_seconds(baseline.probe_seconds);
  s.set_emulated(RunsEmulated(caps, ToMode(precision)));
  if (!caps.baseline_degradations().empty()) {
    s.set_baseline_degraded(true);
    s.set_baseline_degraded_reason(
        absl::StrJoin(caps.baseline_degradations(), "; "));
  }
  return s;
}

}  // namespace halftime
