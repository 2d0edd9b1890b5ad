// LossScaler decides the loss scale from step to step; it holds no tensors.
//
// The caller multiplies the loss by scale() before backward, checks the
// gradients for inf/NaN in one fused pass (CheckGradients, optimizer.h),
// skips the optimizer step on overflow, and then calls Update(found_inf).
//
// Rules for mode kDynamic:
//  * hysteresis == 1 reproduces torch.cuda.amp.GradScaler exactly: on an
//    overflow the scale is multiplied by backoff_factor and the growth tracker
//    reset; after growth_interval consecutive finite steps the scale is
//    multiplied by growth_factor.
//  * hysteresis > 1 reproduces Megatron's DynamicGradScaler: each overflow
//    resets the growth tracker and decrements a hysteresis tracker; the scale
//    backs off only once that tracker reaches 0 (and on every further
//    overflow until the next growth); a growth resets it to `hysteresis`.
//  * The scale is clamped to [min_scale, max_scale] (PyTorch has neither
//    bound; with the defaults they never bind in its tests).
//  * An overflow while the scale already sits at min_scale counts toward
//    min_scale_patience; a finite step resets that count. When the count
//    reaches the patience, Update() returns on_min_scale's action.
// kStatic keeps init_scale, kNone keeps 1; both still skip non-finite steps
// and return kFail after min_scale_patience consecutive ones.
//
// Thread safety: not thread-safe; owned by one training loop.

#ifndef HALFTIME_ENGINE_LOSS_SCALER_H_
#define HALFTIME_ENGINE_LOSS_SCALER_H_

#include <cstdint>

#include "engine/options.h"

namespace halftime::engine {

// Everything needed to resume a scaler exactly; stored in checkpoints.
struct LossScalerState {
  double scale = 1.0;
  int64_t growth_tracker = 0;
  int64_t hysteresis_tracker = 1;
  int64_t floor_overflows = 0;        // consecutive overflows at min_scale
  int64_t consecutive_overflows = 0;  // any mode
  int64_t total_overflows = 0;
};

class LossScaler {
 public:
  enum class Action { kContinue, kFail, kFallback };

  // `options.mode` must not be kDefault (resolve it with
  // ResolveLossScalingMode first); kDefault behaves as kNone.
  explicit LossScaler(const LossScalingOptions& options);

  LossScaler(const LossScaler&) = default;
  LossScaler& operator=(const LossScaler&) = default;

  // The scale to multiply the loss by for the next backward pass.
  double scale() const { return state_.scale; }
  bool enabled() const { return mode_ != LossScalingMode::kNone; }
  LossScalingMode mode() const { return mode_; }

  // Records one optimizer step's overflow decision and updates the scale.
  Action Update(bool found_inf);

  const LossScalerState& state() const { return state_; }
  void set_state(const LossScalerState& state) { state_ = state; }

 private:
  LossScalingMode mode_;
  LossScalingOptions options_;
  LossScalerState state_;
};

// kDefault resolves to dynamic for fp16 modes and none otherwise.
LossScalingMode ResolveLossScalingMode(LossScalingMode mode,
                                       Precision precision);

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_LOSS_SCALER_H_
