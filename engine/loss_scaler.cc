#include "engine/loss_scaler.h"

#include <algorithm>
#include <cmath>

namespace halftime::engine {

LossScaler::LossScaler(const LossScalingOptions& options)
    : mode_(options.mode == LossScalingMode::kDefault ? LossScalingMode::kNone
                                                      : options.mode),
      options_(options) {
  switch (mode_) {
    case LossScalingMode::kDynamic:
      state_.scale = std::clamp(options.init_scale, options.min_scale,
                                std::max(options.min_scale, options.max_scale));
      break;
    case LossScalingMode::kStatic:
      state_.scale = options.init_scale;
      break;
    default:
      state_.scale = 1.0;
      break;
  }
  state_.hysteresis_tracker = std::max(1, options.hysteresis);
}

LossScaler::Action LossScaler::Update(bool found_inf) {
  const int64_t patience = std::max(1, options_.min_scale_patience);
  if (!found_inf) {
    state_.consecutive_overflows = 0;
    state_.floor_overflows = 0;
    if (mode_ != LossScalingMode::kDynamic) return Action::kContinue;
    ++state_.growth_tracker;
    if (state_.growth_tracker >= options_.growth_interval) {
      state_.growth_tracker = 0;
      state_.hysteresis_tracker = std::max(1, options_.hysteresis);
      const double grown = state_.scale * options_.growth_factor;
      // Like GradScaler, never grow into a non-finite scale.
      if (std::isfinite(grown)) {
        state_.scale = std::min(grown, options_.max_scale);
      }
    }
    return Action::kContinue;
  }

  ++state_.total_overflows;
  ++state_.consecutive_overflows;
  if (mode_ != LossScalingMode::kDynamic) {
    return state_.consecutive_overflows >= patience ? Action::kFail
                                                    : Action::kContinue;
  }
  const bool at_floor = state_.scale <= options_.min_scale;
  state_.growth_tracker = 0;
  --state_.hysteresis_tracker;
  if (state_.hysteresis_tracker <= 0) {
    state_.scale =
        std::max(state_.scale * options_.backoff_factor, options_.min_scale);
  }
  if (at_floor) {
    ++state_.floor_overflows;
    if (state_.floor_overflows >= patience) {
      return options_.on_min_scale == OnMinScale::kFallback ? Action::kFallback
                                                            : Action::kFail;
    }
  } else {
    state_.floor_overflows = 0;
  }
  return Action::kContinue;
}

LossScalingMode ResolveLossScalingMode(LossScalingMode mode,
                                       Precision precision) {
  if (mode != LossScalingMode::kDefault) return mode;
  const precision::Rules* rules = precision::RulesOf(precision);
  return rules != nullptr && rules->default_dynamic_scaling
             ? LossScalingMode::kDynamic
             : LossScalingMode::kNone;
}

}  // namespace halftime::engine
