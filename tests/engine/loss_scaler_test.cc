// Scale sequences of LossScaler against PyTorch GradScaler and Megatron
// DynamicGradScaler rules for scripted overflow patterns. No libtorch here:
// the scaler is a pure state machine.

#include "engine/loss_scaler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace halftime::engine {
namespace {

LossScalingOptions Dynamic(double init, int interval, int hysteresis = 1) {
  LossScalingOptions o;
  o.mode = LossScalingMode::kDynamic;
  o.init_scale = init;
  o.growth_interval = interval;
  o.hysteresis = hysteresis;
  // No bounds, like GradScaler; tests that need them set them.
  o.max_scale = std::numeric_limits<double>::infinity();
  o.min_scale = 0.0;
  return o;
}

std::vector<double> RunPattern(LossScaler& s,
                               const std::vector<bool>& pattern) {
  std::vector<double> scales;
  for (bool inf : pattern) {
    s.Update(inf);
    scales.push_back(s.scale());
  }
  return scales;
}

// torch/csrc/.../AmpKernels.cu `_amp_update_scale_cuda_kernel`, transcribed.
struct TorchGradScalerRef {
  double scale;
  int growth_tracker = 0;
  double growth_factor, backoff_factor;
  int growth_interval;
  void Update(bool found_inf) {
    if (found_inf) {
      scale *= backoff_factor;
      growth_tracker = 0;
    } else {
      const int successful = growth_tracker + 1;
      if (successful == growth_interval) {
        const double grown = scale * growth_factor;
        if (std::isfinite(grown)) scale = grown;
        growth_tracker = 0;
      } else {
        growth_tracker = successful;
      }
    }
  }
};

// megatron/optimizer/grad_scaler.py `DynamicGradScaler.update`, transcribed.
struct MegatronRef {
  double scale, min_scale, growth_factor, backoff_factor;
  int growth_interval, hysteresis;
  int growth_tracker = 0;
  int hysteresis_tracker;
  void Update(bool found_inf) {
    if (found_inf) {
      growth_tracker = 0;
      hysteresis_tracker -= 1;
      if (hysteresis_tracker <= 0) {
        scale = std::max(scale * backoff_factor, min_scale);
      }
    } else {
      growth_tracker += 1;
      if (growth_tracker == growth_interval) {
        growth_tracker = 0;
        hysteresis_tracker = hysteresis;
        scale = scale * growth_factor;
      }
    }
  }
};

TEST(LossScalerTest, DefaultsFollowGradScaler) {
  LossScalingOptions o;
  o.mode = LossScalingMode::kDynamic;
  LossScaler s(o);
  EXPECT_EQ(s.scale(), 65536.0);
  for (int i = 0; i < 1999; ++i) s.Update(false);
  EXPECT_EQ(s.scale(), 65536.0);
  s.Update(false);
  EXPECT_EQ(s.scale(), 131072.0);
  s.Update(true);
  EXPECT_EQ(s.scale(), 65536.0);
  EXPECT_EQ(s.state().growth_tracker, 0);
  EXPECT_EQ(s.state().total_overflows, 1);
}

TEST(LossScalerTest, ScriptedPyTorchSequence) {
  LossScaler s(Dynamic(1024, 3));
  // F F F -> grow; I -> back off; F F I -> tracker reset, back off; F F F ->
  // grow; I I -> two back-offs.
  const std::vector<bool> pattern = {false, false, false, true,  false, false,
                                     true,  false, false, false, true,  true};
  const std::vector<double> expected = {1024, 1024, 2048, 1024, 1024, 1024,
                                        512,  512,  512,  1024, 512,  256};
  EXPECT_EQ(RunPattern(s, pattern), expected);
}

TEST(LossScalerTest, GrowthOnlyAfterConsecutiveFiniteSteps) {
  LossScaler s(Dynamic(8, 2));
  // An overflow between finite steps restarts the count.
  EXPECT_EQ(RunPattern(s, {false, true, false, false}),
            (std::vector<double>{8, 4, 4, 8}));
}

TEST(LossScalerTest, MatchesGradScalerOnRandomPatterns) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    const int interval = 1 + static_cast<int>(rng() % 5);
    LossScaler s(Dynamic(65536, interval));
    TorchGradScalerRef ref{65536, 0, 2.0, 0.5, interval};
    for (int i = 0; i < 200; ++i) {
      const bool inf = rng() % 4 == 0;
      s.Update(inf);
      ref.Update(inf);
      ASSERT_EQ(s.scale(), ref.scale) << "trial " << trial << " step " << i;
      ASSERT_EQ(s.state().growth_tracker, ref.growth_tracker);
    }
  }
}

TEST(LossScalerTest, ScriptedMegatronHysteresis) {
  LossScaler s(Dynamic(1024, 2, /*hysteresis=*/2));
  // First overflow only spends hysteresis; second backs off; third backs off
  // again (tracker stays <= 0); growth restores hysteresis.
  const std::vector<bool> pattern = {true,  true, true,  false,
                                     false, true, false, true};
  const std::vector<double> expected = {1024, 512, 256, 256,
                                        512,  512, 512, 256};
  EXPECT_EQ(RunPattern(s, pattern), expected);
  EXPECT_EQ(s.state().hysteresis_tracker, 0);
}

TEST(LossScalerTest, MatchesMegatronOnRandomPatterns) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 50; ++trial) {
    const int interval = 1 + static_cast<int>(rng() % 6);
    const int hysteresis = 1 + static_cast<int>(rng() % 4);
    LossScalingOptions o = Dynamic(4096, interval, hysteresis);
    o.min_scale = 1.0;
    LossScaler s(o);
    MegatronRef ref{4096, 1.0, 2.0, 0.5, interval, hysteresis, 0, hysteresis};
    for (int i = 0; i < 300; ++i) {
      const bool inf = rng() % 3 == 0;
      s.Update(inf);
      ref.Update(inf);
      ASSERT_EQ(s.scale(), ref.scale) << "trial " << trial << " step " << i;
      ASSERT_EQ(s.state().hysteresis_tracker, ref.hysteresis_tracker);
    }
  }
}

TEST(LossScalerTest, HysteresisOneEqualsPyTorch) {
  std::mt19937 rng(3);
  LossScalingOptions o = Dynamic(256, 3, 1);
  LossScaler s(o);
  TorchGradScalerRef ref{256, 0, 2.0, 0.5, 3};
  for (int i = 0; i < 500; ++i) {
    const bool inf = rng() % 5 == 0;
    s.Update(inf);
    ref.Update(inf);
    ASSERT_EQ(s.scale(), ref.scale);
  }
}

TEST(LossScalerTest, MaxScaleCapsGrowth) {
  LossScalingOptions o = Dynamic(4, 1);
  o.max_scale = 16;
  LossScaler s(o);
  EXPECT_EQ(RunPattern(s, {false, false, false, false, true}),
            (std::vector<double>{8, 16, 16, 16, 8}));
}

TEST(LossScalerTest, MinScaleFloorAndFailAfterPatience) {
  LossScalingOptions o = Dynamic(4, 100);
  o.min_scale = 1;
  o.min_scale_patience = 3;
  LossScaler s(o);
  EXPECT_EQ(s.Update(true), LossScaler::Action::kContinue);  // 4 -> 2
  EXPECT_EQ(s.Update(true), LossScaler::Action::kContinue);  // 2 -> 1
  EXPECT_EQ(s.scale(), 1.0);
  EXPECT_EQ(s.Update(true), LossScaler::Action::kContinue);  // at floor: 1
  EXPECT_EQ(s.Update(true), LossScaler::Action::kContinue);  // 2
  EXPECT_EQ(s.scale(), 1.0);
  // A finite step resets the count.
  EXPECT_EQ(s.Update(false), LossScaler::Action::kContinue);
  EXPECT_EQ(s.Update(true), LossScaler::Action::kContinue);
  EXPECT_EQ(s.Update(true), LossScaler::Action::kContinue);
  EXPECT_EQ(s.Update(true), LossScaler::Action::kFail);
  EXPECT_EQ(s.scale(), 1.0);
}

TEST(LossScalerTest, FallbackAction) {
  LossScalingOptions o = Dynamic(1, 100);
  o.min_scale = 1;
  o.min_scale_patience = 2;
  o.on_min_scale = OnMinScale::kFallback;
  LossScaler s(o);
  EXPECT_EQ(s.Update(true), LossScaler::Action::kContinue);
  EXPECT_EQ(s.Update(true), LossScaler::Action::kFallback);
}

TEST(LossScalerTest, StaticAndNoneKeepScale) {
  LossScalingOptions o;
  o.mode = LossScalingMode::kStatic;
  o.init_scale = 128;
  o.min_scale_patience = 2;
  LossScaler st(o);
  EXPECT_EQ(RunPattern(st, {true, false, false}),
            (std::vector<double>{128, 128, 128}));
  EXPECT_EQ(st.Update(true), LossScaler::Action::kContinue);
  EXPECT_EQ(st.Update(true), LossScaler::Action::kFail);
  o.mode = LossScalingMode::kNone;
  LossScaler none(o);
  EXPECT_FALSE(none.enabled());
  EXPECT_EQ(RunPattern(none, {true, false}), (std::vector<double>{1, 1}));
}

TEST(LossScalerTest, StateRoundTrip) {
  LossScaler a(Dynamic(64, 3, 2));
  RunPattern(a, {true, false, true, true, false});
  LossScaler b(Dynamic(64, 3, 2));
  b.set_state(a.state());
  const std::vector<bool> rest = {false, false, true, false, false, false};
  EXPECT_EQ(RunPattern(a, rest), RunPattern(b, rest));
}

TEST(LossScalerTest, DefaultModeResolution) {
  EXPECT_EQ(
      ResolveLossScalingMode(LossScalingMode::kDefault, Precision::kFp16Mixed),
      LossScalingMode::kDynamic);
  EXPECT_EQ(
      ResolveLossScalingMode(LossScalingMode::kDefault, Precision::kBf16Mixed),
      LossScalingMode::kNone);
  EXPECT_EQ(ResolveLossScalingMode(LossScalingMode::kStatic, Precision::kFp32),
            LossScalingMode::kStatic);
}

}  // namespace
}  // namespace halftime::engine
