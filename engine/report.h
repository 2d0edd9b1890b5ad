// Plain structs the engine reports through: one StepReport per optimizer
// step, a TrainSummary at the end, and DeviceCapabilities from ProbeDevice().
//
// Thread safety: plain value types.

#ifndef HALFTIME_ENGINE_REPORT_H_
#define HALFTIME_ENGINE_REPORT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "engine/options.h"

namespace halftime::engine {

// What happened in one optimizer step (all micro-batches of it).
struct StepReport {
  // 1-based optimizer step (counting skipped steps).
  int64_t step = 0;
  // Mean unscaled training loss over the step's micro-batches.
  double loss = 0.0;
  // Loss scale used for this step's backward pass (1 when scaling is off).
  double loss_scale = 1.0;
  // True when the gradients held inf/NaN and the update was skipped.
  bool overflow = false;
  // Skipped steps so far, this one included.
  int64_t skipped_steps = 0;
  // Global L2 norm of the unscaled gradients, before clipping (inf/NaN on
  // overflow).
  double grad_norm = 0.0;
  // Learning rate used by this step (0 if skipped: no schedule step).
  double lr = 0.0;
  double step_seconds = 0.0;
  double samples_per_second = 0.0;
  double tokens_per_second = 0.0;
  // Model FLOP/s: (6N + attention) per token, times tokens per second.
  double model_flops_per_second = 0.0;
  // Peak tensor memory since training started (counting allocator on CPU,
  // caching-allocator stats on CUDA).
  int64_t peak_memory_bytes = 0;
  int64_t weight_bytes = 0;
  int64_t gradient_bytes = 0;
  int64_t optimizer_state_bytes = 0;
  // All parameters, and those the optimizer updates (fewer under an
  // adapter).
  int64_t parameters = 0;
  int64_t trainable_parameters = 0;
  // Eval loss on the held-out split, when evaluated at this step.
  bool has_eval_loss = false;
  double eval_loss = 0.0;
  // Next-token (arg-max) accuracy on the held-out split, for cross_entropy
  // models, when evaluated at this step.
  bool has_eval_accuracy = false;
  double eval_accuracy = 0.0;
};

// What an adapter job (adapter.h) trains and holds, for the summary.
struct AdapterReport {
  int64_t trainable_parameters = 0;
  // Base and adapter parameters together.
  int64_t total_parameters = 0;
  int adapted_layers = 0;
  // Storage of the decoder's linear weights ("nf4") and the dtype every
  // frozen layer computes in ("bf16").
  std::string base_dtype;
  std::string compute_dtype;
  // Bytes the frozen base holds on the device.
  int64_t base_bytes = 0;
  // Mean and largest relative error (FrozenWeight::relative_error) of the
  // quantized matrices; 0 for a float base.
  double quantization_error_mean = 0.0;
  double quantization_error_max = 0.0;
  // SHA-256 over the base tensors as read (name, dtype, shape, bytes).
  std::string base_hash;
};

// The outcome of a whole run; also written as summary.json.
struct TrainSummary {
  Precision precision = Precision::kFp32;  // resolved (never kAuto)
  // The device only emulates `precision` (rules/precision.h: bf16 on a CPU
  // without native bf16): memory saved, not time.
  bool emulated = false;
  std::string device;  // "cpu" or "cuda:0"
  int64_t steps = 0;   // optimizer steps done
  int64_t skipped_steps = 0;
  double final_loss = 0.0;  // last step's training loss
  bool has_eval_loss = false;
  double eval_loss = 0.0;  // last eval loss
  bool has_eval_accuracy = false;
  double eval_accuracy = 0.0;  // last eval accuracy
  double final_loss_scale = 1.0;
  double seconds = 0.0;  // wall time of the step loop
  double mean_step_seconds = 0.0;
  // Median step time after warm-up (SteadyMedian): the figure savings use.
  double median_step_seconds = 0.0;
  double samples_per_second = 0.0;
  double tokens_per_second = 0.0;
  double model_flops_per_second = 0.0;
  // The probed GEMM rate of the job's compute dtype (GemmCeilingFlops) and
  // model FLOP/s at the median step over it (0 when not measured).
  double gemm_ceiling_flops = 0.0;
  double mfu = 0.0;
  int64_t peak_memory_bytes = 0;
  // All parameters, and those the optimizer updates (fewer under an
  // adapter).
  int64_t parameters = 0;
  int64_t trainable_parameters = 0;
  // Set for adapter jobs.
  bool has_adapter = false;
  AdapterReport adapter;
  int64_t weight_bytes = 0;
  int64_t gradient_bytes = 0;
  int64_t optimizer_state_bytes = 0;
  // Last checkpoint written (empty if none).
  std::string last_checkpoint;
  // Paths of final outputs (empty if out_dir was empty).
  std::string final_weights;      // model.safetensors
  std::string final_torchscript;  // model.pt (TorchScript models only)
  std::string final_hf;           // hf/ (pretrained models; merged adapters)
  std::string final_adapter;      // adapter/ (adapter jobs: PEFT's format)
  std::string summary_json;       // summary.json
};

// What a device really runs; the worker advertises this to the scheduler.
struct DeviceCapabilities {
  std::string kind;  // "cpu" or "cuda"
  std::string name;  // CPU model name or GPU name
  int64_t memory_bytes = 0;
  // CUDA compute capability ("8.0"); empty on CPU.
  std::string compute_capability;
  int threads = 0;
  // Precisions this device runs natively (never kAuto).
  std::vector<Precision> native_precisions;
  // Precisions this device runs only by emulation (a CPU without native
  // bf16: the bf16 modes), which a job must allow (rules/precision.h).
  std::vector<Precision> emulated_precisions;
  // bf16 computes by emulation here (no avx512_bf16/AMX on the CPU).
  bool bf16_emulated = false;
  // Measured matmul throughput per dtype (0 when not run / unsupported).
  double fp32_flops = 0.0;
  double tf32_flops = 0.0;
  double fp16_flops = 0.0;
  double bf16_flops = 0.0;
  // CPU only: the BLAS libtorch's fp32 GEMMs run on (BlasLibrary::Describe),
  // and why an fp32 baseline measured here would not be the fastest fp32
  // this machine runs (BaselineDegradations; empty: a fair baseline).
  std::string blas;
  std::vector<std::string> baseline_degradations;

  // Whether the device runs `p` natively (kAuto: true).
  bool Supports(Precision p) const;
  // Whether it runs `p` only by emulation.
  bool Emulates(Precision p) const;
};

// One JSON object (no newline) with the StepReport fields; the JSONL line
// format of halftime-train --metrics-jsonl. Non-finite numbers are null.
std::string StepReportJson(const StepReport& report);
// The summary.json document (one line, no newline).
std::string SummaryJson(const TrainSummary& summary);

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_REPORT_H_
