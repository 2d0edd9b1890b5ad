// Internal: the engine's own optimizers and the fused gradient pass.
//
// The optimizers are written out (instead of torch::optim) so the three weight
// layouts the precision modes need share one code path:
//  * kPlain:  params in fp32 (fp32, tf32, *-mixed); fp32 AdamW is bit-for-bit
//             torch.optim.AdamW(foreach=False) and SGD is torch.optim.SGD.
//  * kMaster: params in fp16/bf16; the optimizer keeps an fp32 master copy
//             (and fp32 state), steps it, and copies it back after each step.
//  * kPure:   params and state in bf16; each update is Kahan-compensated (a
//             bf16 compensation buffer per parameter) or stochastically
//             rounded, so updates smaller than a bf16 ulp are not lost.
// Weight decay applies to parameters with two or more dimensions only.
//
// Thread safety: not thread-safe; owned by one training loop.

#ifndef HALFTIME_ENGINE_OPTIMIZER_H_
#define HALFTIME_ENGINE_OPTIMIZER_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/options.h"

namespace halftime::engine {

enum class WeightLayout { kPlain, kMaster, kPure };

// Result of the single pass over all gradients.
struct GradCheck {
  bool found_inf = false;
  // Global L2 norm of the unscaled gradients (inf/NaN on overflow).
  double grad_norm = 0.0;
  // 0-dim fp32 tensor the optimizer multiplies gradients by: 1/scale times
  // the clipping coefficient; undefined when that product is exactly 1.
  at::Tensor grad_coef;
};

// Computes the global norm of `grads` in fp32 in one pass (per-tensor norms
// stacked into one tensor, then one host sync). A non-finite total means an
// overflow. `scale` is the loss scale the grads carry; `max_grad_norm` <= 0
// disables clipping. On CUDA the fused _amp_foreach_non_finite_check_and_
// unscale_ op unscales in place first. Undefined grads are ignored.
GradCheck CheckGradients(const std::vector<at::Tensor>& grads, double scale,
                         double max_grad_norm);

// `norm` (a 0-dim fp32 tensor), or +inf where `found_inf` (the 0-dim 0/1
// flag the fused CUDA unscale sets) is 1. Stays on the tensors' device.
at::Tensor NormWithOverflowFlag(const at::Tensor& norm,
                                const at::Tensor& found_inf);

// Learning rate for optimizer step `step` (0-based count of steps taken).
double LearningRate(const OptimizerOptions& opt, const LrScheduleOptions& s,
                    int64_t step, int64_t total_steps);

class Optimizer {
 public:
  // `params` are the model's parameters (name, tensor); the optimizer keeps
  // references to them and updates them in place.
  Optimizer(std::vector<std::pair<std::string, at::Tensor>> params,
            const OptimizerOptions& options, WeightLayout layout,
            uint64_t seed);

  // One update from the params' .grad(), multiplied by `grad_coef` if
  // defined. Does not zero the grads.
  void Step(double lr, const at::Tensor& grad_coef);

  // Optimizer steps taken (skipped steps excluded).
  int64_t steps() const { return steps_; }

  // Names and tensors of all state (masters, moments, compensation) for
  // checkpoints: "<param>/master", "<param>/exp_avg", ...
  std::vector<std::pair<std::string, at::Tensor>> StateTensors() const;
  // Loads state written by StateTensors() (dtype converted as needed).
  // Returns an error message, or "" on success.
  std::string LoadState(const std::map<std::string, at::Tensor>& state,
                        int64_t steps);
  // fp32 weights: the masters in kMaster layout, else the params as fp32.
  std::vector<std::pair<std::string, at::Tensor>> Fp32Weights() const;
  // Overwrites the params (and masters) from fp32 weights by name.
  void SetWeights(const std::vector<std::pair<std::string, at::Tensor>>& w);

  int64_t StateBytes() const;

 private:
  struct Slot {
    std::string name;
    at::Tensor param;
    at::Tensor master;        // kMaster
    at::Tensor exp_avg;       // adamw
    at::Tensor exp_avg_sq;    // adamw
    at::Tensor momentum_buf;  // sgd
    at::Tensor compensation;  // kPure + kahan
    bool decay = false;
  };

  void StepPlain(Slot& s, const at::Tensor& grad, double lr);
  void StepPure(Slot& s, const at::Tensor& grad, double lr);
  at::Tensor Delta(Slot& s, const at::Tensor& grad32, const at::Tensor& p32,
                   double lr);

  OptimizerOptions options_;
  WeightLayout layout_;
  double weight_decay_;
  std::vector<Slot> slots_;
  int64_t steps_ = 0;
  at::Generator rounding_gen_;
};

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_OPTIMIZER_H_
