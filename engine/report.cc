#include "engine/report.h"

#include <nlohmann/json.hpp>

#include "engine/events.h"

namespace halftime::engine {
namespace {

// Keys in the order they are added, as the design page lists them.
using Json = nlohmann::ordered_json;

// One line; a byte that is not UTF-8 (a device name, a path) is replaced
// rather than thrown on. nlohmann writes non-finite numbers as null.
std::string Dump(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace

std::string StepReportJson(const StepReport& r) {
  Json o = {{events::kStepNumber, r.step},
            {events::kLoss, r.loss},
            {events::kLossScale, r.loss_scale},
            {events::kOverflow, r.overflow},
            {events::kSkippedSteps, r.skipped_steps},
            {events::kGradNorm, r.grad_norm},
            {events::kLearningRate, r.lr},
            {events::kStepSeconds, r.step_seconds},
            {events::kSamplesPerSecond, r.samples_per_second},
            {events::kTokensPerSecond, r.tokens_per_second},
            {events::kModelFlopsPerSecond, r.model_flops_per_second},
            {events::kPeakMemoryBytes, r.peak_memory_bytes},
            {events::kWeightBytes, r.weight_bytes},
            {events::kGradientBytes, r.gradient_bytes},
            {events::kOptimizerStateBytes, r.optimizer_state_bytes},
            {events::kParameters, r.parameters},
            {events::kTrainableParameters, r.trainable_parameters}};
  if (r.has_eval_loss) o[events::kEvalLoss] = r.eval_loss;
  if (r.has_eval_accuracy) o[events::kEvalAccuracy] = r.eval_accuracy;
  return Dump(o);
}

std::string SummaryJson(const TrainSummary& s) {
  Json o = {{"precision", PrecisionName(s.precision)},
            {"emulated", s.emulated},
            {"device", s.device},
            {"steps", s.steps},
            {"skipped_steps", s.skipped_steps},
            {"final_loss", s.final_loss}};
  if (s.has_eval_loss) o["eval_loss"] = s.eval_loss;
  if (s.has_eval_accuracy) o["eval_accuracy"] = s.eval_accuracy;
  o["final_loss_scale"] = s.final_loss_scale;
  o["seconds"] = s.seconds;
  o["mean_step_seconds"] = s.mean_step_seconds;
  o["samples_per_second"] = s.samples_per_second;
  o["tokens_per_second"] = s.tokens_per_second;
  o["model_flops_per_second"] = s.model_flops_per_second;
  o["median_step_seconds"] = s.median_step_seconds;
  o["gemm_ceiling_flops"] = s.gemm_ceiling_flops;
  o["mfu"] = s.mfu;
  o["peak_memory_bytes"] = s.peak_memory_bytes;
  o["parameters"] = s.parameters;
  o["trainable_parameters"] = s.trainable_parameters;
  if (s.has_adapter) {
    const AdapterReport& a = s.adapter;
    o["adapter"] = {{"adapted_layers", a.adapted_layers},
                    {"base_dtype", a.base_dtype},
                    {"compute_dtype", a.compute_dtype},
                    {"base_bytes", a.base_bytes},
                    {"quantization_error_mean", a.quantization_error_mean},
                    {"quantization_error_max", a.quantization_error_max},
                    {"base_hash", a.base_hash}};
  }
  o["weight_bytes"] = s.weight_bytes;
  o["gradient_bytes"] = s.gradient_bytes;
  o["optimizer_state_bytes"] = s.optimizer_state_bytes;
  o["last_checkpoint"] = s.last_checkpoint;
  o["final_weights"] = s.final_weights;
  if (!s.final_torchscript.empty()) {
    o["final_torchscript"] = s.final_torchscript;
  }
  if (!s.final_hf.empty()) o["final_hf"] = s.final_hf;
  if (!s.final_adapter.empty()) o["final_adapter"] = s.final_adapter;
  return Dump(o);
}

}  // namespace halftime::engine
