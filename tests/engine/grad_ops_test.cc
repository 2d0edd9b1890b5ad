// The fused gradient pass (overflow detection, unscale, clip) and the
// optimizer's behaviour around skipped steps.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/function.h>

#include <cmath>
#include <limits>
#include <vector>

#include "engine/bf16_emulation.h"
#include "engine/device.h"
#include "engine/loss_scaler.h"
#include "engine/model.h"
#include "engine/models/kernels.h"
#include "engine/optimizer.h"

namespace halftime::engine {
namespace {

class GradOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    at::set_num_threads(1);
    at::manual_seed(0);
  }
};

std::vector<at::Tensor> RandomGrads() {
  return {at::randn({8, 4}), at::randn({16}), at::randn({3, 3, 3})};
}

double RefNorm(const std::vector<at::Tensor>& g) {
  double s = 0;
  for (const auto& t : g) s += t.to(at::kDouble).pow(2).sum().item<double>();
  return std::sqrt(s);
}

TEST_F(GradOpsTest, FiniteGradsGiveNormAndNoOverflow) {
  auto g = RandomGrads();
  GradCheck c = CheckGradients(g, 1.0, 0.0);
  EXPECT_FALSE(c.found_inf);
  EXPECT_NEAR(c.grad_norm, RefNorm(g), 1e-4);
  EXPECT_FALSE(c.grad_coef.defined());
}

TEST_F(GradOpsTest, OverflowFlagMarksTheNormOnlyWhenSet) {
  // The fused CUDA path's combination of norm and found_inf flag.
  const at::Tensor norm = at::full({}, 3.5f);
  EXPECT_EQ(NormWithOverflowFlag(norm, at::zeros({})).item<float>(), 3.5f);
  EXPECT_TRUE(
      std::isinf(NormWithOverflowFlag(norm, at::ones({})).item<float>()));
  const at::Tensor nan = at::full({}, std::nanf(""));
  EXPECT_TRUE(
      std::isnan(NormWithOverflowFlag(nan, at::zeros({})).item<float>()));
}

TEST_F(GradOpsTest, LargeScalesAreNotFalseOverflows) {
  // Scaled by 2^100, squares of these grads overflow fp32; the check must
  // still see finite grads and report the unscaled norm.
  auto g = RandomGrads();
  const double ref = RefNorm(g);
  const double scale = std::ldexp(1.0, 100);
  std::vector<at::Tensor> scaled;
  for (const auto& t : g) scaled.push_back(t * scale);
  GradCheck c = CheckGradients(scaled, scale, 0.0);
  EXPECT_FALSE(c.found_inf);
  EXPECT_NEAR(c.grad_norm, ref, 1e-5 * ref);
  // And bf16 grads at 2^120.
  std::vector<at::Tensor> bf16;
  for (const auto& t : g) {
    bf16.push_back((t * std::ldexp(1.0, 120)).to(at::kBFloat16));
  }
  c = CheckGradients(bf16, std::ldexp(1.0, 120), 0.0);
  EXPECT_FALSE(c.found_inf);
  EXPECT_NEAR(c.grad_norm, ref, 1e-2 * ref);
}

TEST_F(GradOpsTest, InfAndNanAnywhereAreOverflows) {
  for (float bad : {std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity(),
                    std::numeric_limits<float>::quiet_NaN()}) {
    for (size_t which = 0; which < 3; ++which) {
      auto g = RandomGrads();
      g[which].view({-1})[1] = bad;
      GradCheck c = CheckGradients(g, 1024.0, 1.0);
      EXPECT_TRUE(c.found_inf) << bad << " in grad " << which;
      EXPECT_FALSE(std::isfinite(c.grad_norm));
    }
  }
}

TEST_F(GradOpsTest, Bf16GradsOverflowDetected) {
  auto g = RandomGrads();
  for (auto& t : g) t = t.to(at::kBFloat16);
  EXPECT_FALSE(CheckGradients(g, 1.0, 1.0).found_inf);
  g[2].view({-1})[0] = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(CheckGradients(g, 1.0, 1.0).found_inf);
}

TEST_F(GradOpsTest, UnscaleThenClipEqualsClippingFp32Grads) {
  const double scale = 65536.0, max_norm = 0.5;
  auto fp32 = RandomGrads();
  std::vector<at::Tensor> scaled;
  for (const auto& t : fp32) scaled.push_back(t * scale);
  GradCheck c = CheckGradients(scaled, scale, max_norm);
  ASSERT_FALSE(c.found_inf);
  // The reported norm is the unscaled one.
  EXPECT_NEAR(c.grad_norm, RefNorm(fp32), 1e-4 * RefNorm(fp32));
  // Reference: torch.nn.utils.clip_grad_norm_ on the fp32 grads.
  GradCheck ref = CheckGradients(fp32, 1.0, max_norm);
  ASSERT_TRUE(ref.grad_coef.defined());
  for (size_t i = 0; i < fp32.size(); ++i) {
    at::Tensor ours = scaled[i] * c.grad_coef;
    at::Tensor theirs = fp32[i] * ref.grad_coef;
    EXPECT_TRUE(at::allclose(ours, theirs, 1e-5, 1e-7)) << i;
  }
  const double clipped =
      RefNorm({scaled[0] * c.grad_coef, scaled[1] * c.grad_coef,
               scaled[2] * c.grad_coef});
  EXPECT_NEAR(clipped, max_norm, 1e-4);
}

TEST_F(GradOpsTest, NoClipWhenBelowMaxNorm) {
  auto g = RandomGrads();
  GradCheck c = CheckGradients(g, 1.0, 1e6);
  ASSERT_TRUE(c.grad_coef.defined());
  EXPECT_EQ(c.grad_coef.item<float>(), 1.0f);
}

TEST_F(GradOpsTest, SkippedStepLeavesWeightsStateAndLrUnchanged) {
  // Emulates the loop: an overflowing step is not applied, the optimizer
  // (and so the schedule, which follows Optimizer::steps()) does not move.
  at::Tensor w = at::randn({4, 4}).requires_grad_(true);
  at::Tensor b = at::randn({4}).requires_grad_(true);
  OptimizerOptions oo;
  LrScheduleOptions sched;
  sched.warmup_steps = 10;
  Optimizer opt({{"w", w}, {"b", b}}, oo, WeightLayout::kPlain, 1);
  LossScalingOptions lo;
  lo.mode = LossScalingMode::kDynamic;
  LossScaler scaler(lo);
  auto step = [&](bool poison) {
    w.mutable_grad() = at::randn({4, 4}) * scaler.scale();
    b.mutable_grad() = at::randn({4}) * scaler.scale();
    if (poison) b.mutable_grad()[0] = std::numeric_limits<float>::quiet_NaN();
    GradCheck c = CheckGradients({w.grad(), b.grad()}, scaler.scale(), 1.0);
    if (!c.found_inf) {
      opt.Step(LearningRate(oo, sched, opt.steps(), 100), c.grad_coef);
    }
    scaler.Update(c.found_inf);
    return c.found_inf;
  };
  ASSERT_FALSE(step(false));
  const at::Tensor w_before = w.detach().clone();
  std::vector<at::Tensor> state_before;
  for (auto& [n, t] : opt.StateTensors()) state_before.push_back(t.clone());
  const double lr_before = LearningRate(oo, sched, opt.steps(), 100);
  ASSERT_TRUE(step(true));
  EXPECT_TRUE(at::equal(w, w_before));
  auto state_after = opt.StateTensors();
  ASSERT_EQ(state_after.size(), state_before.size());
  for (size_t i = 0; i < state_before.size(); ++i) {
    EXPECT_TRUE(at::equal(state_after[i].second, state_before[i]));
  }
  EXPECT_EQ(opt.steps(), 1);
  EXPECT_EQ(LearningRate(oo, sched, opt.steps(), 100), lr_before);
  EXPECT_EQ(scaler.scale(), 32768.0);
}

TEST_F(GradOpsTest, LearningRateSchedules) {
  OptimizerOptions oo;
  oo.lr = 1.0;
  LrScheduleOptions s;
  s.warmup_steps = 4;
  s.min_lr_ratio = 0.1;
  s.decay = LrDecay::kConstant;
  EXPECT_DOUBLE_EQ(LearningRate(oo, s, 0, 14), 0.25);
  EXPECT_DOUBLE_EQ(LearningRate(oo, s, 3, 14), 1.0);
  EXPECT_DOUBLE_EQ(LearningRate(oo, s, 10, 14), 1.0);
  s.decay = LrDecay::kCosine;
  EXPECT_DOUBLE_EQ(LearningRate(oo, s, 4, 14), 1.0);
  EXPECT_NEAR(LearningRate(oo, s, 9, 14), 0.55, 1e-12);
  EXPECT_NEAR(LearningRate(oo, s, 14, 14), 0.1, 1e-12);
  s.decay = LrDecay::kLinear;
  EXPECT_NEAR(LearningRate(oo, s, 9, 14), 0.55, 1e-12);
  EXPECT_NEAR(LearningRate(oo, s, 14, 14), 0.1, 1e-12);
}

TEST_F(GradOpsTest, KahanKeepsUpdatesBelowBf16Ulp) {
  // 1.0 in bf16 has an ulp of 2^-7; updates of 1e-4 vanish when added
  // directly but accumulate under Kahan compensation.
  OptimizerOptions oo;
  oo.name = OptimizerName::kSgd;
  oo.momentum = 0.0;
  oo.weight_decay = 0.0;
  at::Tensor p = at::ones({64}, at::kBFloat16).requires_grad_(true);
  Optimizer opt({{"p", p}}, oo, WeightLayout::kPure, 1);
  for (int i = 0; i < 200; ++i) {
    p.mutable_grad() = at::full({64}, -1.0, at::kBFloat16);
    opt.Step(1e-4, at::Tensor());
  }
  // Exact: 1 + 200 * 1e-4 = 1.02; naive bf16 would stay at 1.0.
  EXPECT_NEAR(p.to(at::kFloat).mean().item<double>(), 1.02, 4e-3);
  at::Tensor naive = at::ones({64}, at::kBFloat16);
  for (int i = 0; i < 200; ++i) naive.add_(at::full({64}, 1e-4, at::kBFloat16));
  EXPECT_EQ(naive.to(at::kFloat).mean().item<double>(), 1.0);
}

TEST_F(GradOpsTest, StochasticRoundingKeepsUpdatesInExpectation) {
  OptimizerOptions oo;
  oo.name = OptimizerName::kSgd;
  oo.momentum = 0.0;
  oo.weight_decay = 0.0;
  oo.pure_update = PureUpdate::kStochasticRounding;
  at::Tensor p = at::ones({4096}, at::kBFloat16).requires_grad_(true);
  Optimizer opt({{"p", p}}, oo, WeightLayout::kPure, 1);
  for (int i = 0; i < 200; ++i) {
    p.mutable_grad() = at::full({4096}, -1.0, at::kBFloat16);
    opt.Step(1e-4, at::Tensor());
  }
  EXPECT_NEAR(p.to(at::kFloat).mean().item<double>(), 1.02, 2e-3);
  EXPECT_TRUE(opt.StateTensors().empty());  // no compensation buffer
}

TEST(ModelTest, PresetSizes) {
  auto count = [](const std::string& name, int64_t vocab) {
    GptConfig c;
    EXPECT_TRUE(GptPreset(name, {}, vocab, &c));
    int64_t n = 0;
    for (const auto& [k, p] : MakeGpt(c)->NamedParameters()) n += p.numel();
    return n;
  };
  const int64_t nano = count("gpt-nano", 256);
  const int64_t micro = count("gpt-micro", 256);
  const int64_t small = count("gpt-small", 256);
  EXPECT_GT(nano, 700000);
  EXPECT_LT(nano, 1300000);
  EXPECT_GT(micro, 9000000);
  EXPECT_LT(micro, 12000000);
  // GPT-2 small: 124,439,808 parameters with tied embeddings.
  EXPECT_EQ(small, 124439808);
  GptConfig c;
  EXPECT_FALSE(GptPreset("gpt-huge", {}, 256, &c));
}

TEST_F(GradOpsTest, MasterWeightsTrackFp32Update) {
  at::Tensor p32 = at::randn({32, 8}).requires_grad_(true);
  at::Tensor p16 = p32.detach().to(at::kBFloat16).requires_grad_(true);
  OptimizerOptions oo;
  Optimizer plain({{"p", p32}}, oo, WeightLayout::kPlain, 1);
  Optimizer master({{"p", p16}}, oo, WeightLayout::kMaster, 1);
  // Start both from the same (bf16-representable) weights.
  {
    at::NoGradGuard ng;
    p32.copy_(p16.to(at::kFloat));
    master.SetWeights({{"p", p16.to(at::kFloat)}});
  }
  for (int i = 0; i < 5; ++i) {
    at::Tensor g = at::randn({32, 8});
    p32.mutable_grad() = g;
    p16.mutable_grad() = g.to(at::kBFloat16);
    plain.Step(1e-3, at::Tensor());
    master.Step(1e-3, at::Tensor());
  }
  at::Tensor m = master.Fp32Weights()[0].second;
  EXPECT_TRUE(at::allclose(m, p32, 1e-3, 1e-3));
  EXPECT_TRUE(at::equal(p16, m.to(at::kBFloat16)));
}

// Max |a - b| / max |b|, in double.
double RelError(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor ad = a.to(at::kDouble), bd = b.to(at::kDouble);
  return ((ad - bd).abs().max() / bd.abs().max()).item<double>();
}

TEST_F(GradOpsTest, CrossEntropyMatchesAtenWithIgnoredTargets) {
  // 2500 rows: two full slices and a partial one; some targets ignored.
  at::Tensor logits = (at::randn({2500, 37}) * 4).requires_grad_(true);
  at::Tensor targets = at::randint(0, 37, {2500}, at::kLong);
  targets.index_put_({at::arange(0, 2500, 7)}, -100);
  at::Tensor ref_logits = logits.detach().clone().requires_grad_(true);
  at::Tensor ours = CrossEntropy(logits, targets);
  at::Tensor ref = at::cross_entropy_loss(ref_logits, targets);
  EXPECT_NEAR(ours.item<double>(), ref.item<double>(),
              1e-6 * ref.item<double>());
  (ours * 3).backward();
  (ref * 3).backward();
  EXPECT_LT(RelError(logits.grad(), ref_logits.grad()), 1e-5);
  // Ignored rows get no gradient.
  EXPECT_EQ(
      logits.grad().index({at::arange(0, 2500, 7)}).abs().max().item<float>(),
      0.0f);
}

TEST_F(GradOpsTest, CrossEntropyOfBf16LogitsIsComputedInFp32) {
  at::Tensor logits16 =
      (at::randn({1500, 256}) * 3).to(at::kBFloat16).requires_grad_(true);
  at::Tensor targets = at::randint(0, 256, {1500}, at::kLong);
  at::Tensor logits32 = logits16.detach().to(at::kFloat).requires_grad_(true);
  at::Tensor ours = CrossEntropy(logits16, targets);
  at::Tensor ref = at::cross_entropy_loss(logits32, targets);
  EXPECT_EQ(ours.scalar_type(), at::kFloat);
  EXPECT_NEAR(ours.item<double>(), ref.item<double>(),
              1e-6 * ref.item<double>());
  ours.backward();
  ref.backward();
  EXPECT_EQ(logits16.grad().scalar_type(), at::kBFloat16);
  // The fp32 gradient, rounded once to bf16.
  EXPECT_LT(RelError(logits16.grad(), logits32.grad().to(at::kBFloat16)), 1e-2);
}

TEST_F(GradOpsTest, CrossEntropyRefusesTargetsOutOfRange) {
  at::Tensor logits = at::randn({4, 5});
  at::Tensor targets = at::tensor({0, 1, 5, 2}, at::kLong);
  EXPECT_THROW(CrossEntropy(logits, targets), c10::Error);
}

TEST_F(GradOpsTest, LayerNormFp32OfBf16MatchesFp32LayerNorm) {
  // 1300 rows of 48: slices of 512 rows and a partial one.
  at::Tensor x16 =
      (at::randn({2, 650, 48}) * 3 + 1).to(at::kBFloat16).requires_grad_(true);
  at::Tensor w = (at::randn({48}) + 1).requires_grad_(true);
  at::Tensor b = at::randn({48}).requires_grad_(true);
  at::Tensor x32 = x16.detach().to(at::kFloat).requires_grad_(true);
  at::Tensor w32 = w.detach().clone().requires_grad_(true);
  at::Tensor b32 = b.detach().clone().requires_grad_(true);
  at::Tensor ours = LayerNormFp32(x16, w, b);
  at::Tensor ref = at::layer_norm(x32, {48}, w32, b32, 1e-5);
  EXPECT_EQ(ours.scalar_type(), at::kBFloat16);
  // Computed in fp32, rounded once.
  EXPECT_TRUE(at::equal(ours, ref.to(at::kBFloat16)));
  at::Tensor g = at::randn({2, 650, 48});
  ours.backward(g.to(at::kBFloat16));
  ref.backward(g.to(at::kBFloat16).to(at::kFloat));
  EXPECT_TRUE(at::equal(x16.grad(), x32.grad().to(at::kBFloat16)));
  // Weight and bias gradients stay fp32, summed over slices.
  EXPECT_LT(RelError(w.grad(), w32.grad()), 1e-5);
  EXPECT_LT(RelError(b.grad(), b32.grad()), 1e-5);
}

// RMSNorm written with differentiable aten ops, as transformers writes it.
at::Tensor RmsNormReference(const at::Tensor& x, const at::Tensor& w,
                            double eps) {
  return x * at::rsqrt(x.pow(2).mean({-1}, true) + eps) * w;
}

TEST_F(GradOpsTest, RmsNormFp32MatchesAtenAutograd) {
  // 1300 rows of 48: slices of rows and a partial one.
  at::Tensor x = (at::randn({2, 650, 48}) * 3 + 1).requires_grad_(true);
  at::Tensor w = (at::randn({48}) + 1).requires_grad_(true);
  at::Tensor x2 = x.detach().clone().requires_grad_(true);
  at::Tensor w2 = w.detach().clone().requires_grad_(true);
  at::Tensor ours = RmsNormFp32(x, w, 1e-6);
  at::Tensor ref = RmsNormReference(x2, w2, 1e-6);
  EXPECT_LT(RelError(ours, ref), 1e-6);
  at::Tensor g = at::randn({2, 650, 48});
  ours.backward(g);
  ref.backward(g);
  EXPECT_LT(RelError(x.grad(), x2.grad()), 1e-5);
  EXPECT_LT(RelError(w.grad(), w2.grad()), 1e-5);
}

TEST_F(GradOpsTest, RmsNormFp32OfBf16IsComputedInFp32AndRoundedOnce) {
  at::Tensor x16 =
      (at::randn({700, 40}) * 2).to(at::kBFloat16).requires_grad_(true);
  at::Tensor w = (at::randn({40}) + 1).requires_grad_(true);
  at::Tensor x32 = x16.detach().to(at::kFloat).requires_grad_(true);
  at::Tensor w32 = w.detach().clone().requires_grad_(true);
  at::Tensor ours = RmsNormFp32(x16, w, 1e-5);
  at::Tensor ref = RmsNormReference(x32, w32, 1e-5);
  EXPECT_EQ(ours.scalar_type(), at::kBFloat16);
  EXPECT_LT(RelError(ours.to(at::kFloat), ref.to(at::kBFloat16).to(at::kFloat)),
            1e-2);
  at::Tensor g = at::randn({700, 40}).to(at::kBFloat16);
  ours.backward(g);
  ref.backward(g.to(at::kFloat));
  EXPECT_EQ(x16.grad().scalar_type(), at::kBFloat16);
  EXPECT_LT(RelError(x16.grad().to(at::kFloat), x32.grad()), 1e-2);
  // The weight gradient stays fp32.
  EXPECT_EQ(w.grad().scalar_type(), at::kFloat);
  EXPECT_LT(RelError(w.grad(), w32.grad()), 1e-5);
}

TEST(MemoryCounterTest, CountsTheBytesTensorsAskFor) {
  InstallMemoryCounter();
  const int64_t before = LiveMemoryBytes(false);
  ResetPeakMemory(false);
  {
    // A small block and one far above malloc's mmap threshold: malloc
    // rounds both up, the count does not.
    at::Tensor small = at::empty({1001}, at::kByte);
    at::Tensor large = at::empty({300001}, at::kFloat);
    EXPECT_EQ(LiveMemoryBytes(false) - before, 1001 + 300001 * 4);
    EXPECT_EQ(PeakMemoryBytes(false) - before, 1001 + 300001 * 4);
    large.fill_(1.0f);  // the memory is the tensor's to use
    EXPECT_EQ(large.sum().item<float>(), 300001.0f);
  }
  EXPECT_EQ(LiveMemoryBytes(false), before);
  // Tensor data stays aligned for vectorized kernels.
  at::Tensor t = at::empty({7}, at::kDouble);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % 64, 0u);
}

TEST_F(GradOpsTest, LayerNormFp32OfFp32EqualsAtenLayerNorm) {
  at::Tensor x = (at::randn({3, 400, 40}) * 2 - 1).requires_grad_(true);
  at::Tensor w = (at::randn({40}) + 1).requires_grad_(true);
  at::Tensor b = at::randn({40}).requires_grad_(true);
  at::Tensor x2 = x.detach().clone().requires_grad_(true);
  at::Tensor w2 = w.detach().clone().requires_grad_(true);
  at::Tensor b2 = b.detach().clone().requires_grad_(true);
  at::Tensor ours = LayerNormFp32(x, w, b);
  at::Tensor ref = at::layer_norm(x2, {40}, w2, b2, 1e-5);
  EXPECT_TRUE(at::equal(ours, ref));
  at::Tensor g = at::randn({3, 400, 40});
  ours.backward(g);
  ref.backward(g);
  // Recomputed statistics are forward's, bit for bit, and rows are
  // independent: the input gradient is at::layer_norm's exactly.
  EXPECT_TRUE(at::equal(x.grad(), x2.grad()));
  // Summed over slices of rows instead of at once.
  EXPECT_LT(RelError(w.grad(), w2.grad()), 1e-5);
  EXPECT_LT(RelError(b.grad(), b2.grad()), 1e-5);
}

TEST_F(GradOpsTest, LayerNormFp32KeepsNoRowStatisticsForBackward) {
  InstallMemoryCounter();
  at::Tensor w = at::ones({64}).requires_grad_(true);
  at::Tensor b = at::zeros({64}).requires_grad_(true);
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dtype));
    at::Tensor x = at::randn({1000, 64}).to(dtype).requires_grad_(true);
    const int64_t before = LiveMemoryBytes(false);
    at::Tensor y = LayerNormFp32(x, w, b);
    // The graph keeps x, w and b, which exist anyway: forward leaves the
    // output behind (and a few bytes of bookkeeping), not a float per row.
    const int64_t kept = LiveMemoryBytes(false) - before;
    EXPECT_GE(kept, static_cast<int64_t>(y.nbytes()));
    EXPECT_LT(kept, static_cast<int64_t>(y.nbytes() + 1000 * sizeof(float)));
    y.sum().backward();
    EXPECT_TRUE(at::isfinite(x.grad()).all().item<bool>());
  }
  // at::layer_norm also keeps an fp32 mean and rstd per row.
  at::Tensor x = at::randn({1000, 64}).requires_grad_(true);
  const int64_t before = LiveMemoryBytes(false);
  at::Tensor y = at::layer_norm(x, {64}, w, b, 1e-5);
  EXPECT_GE(LiveMemoryBytes(false) - before,
            static_cast<int64_t>(y.nbytes() + 2 * 1000 * sizeof(float)));
}

// Extra bytes at the peak of the backward of `linear` applied to an input
// that only the layer holds (a contiguous copy of a broadcast row, whose own
// backward is a sum, so the layer's backward is the peak), over what was
// live when backward started. Sets *input_bytes to the input's size.
template <typename LinearFn>
int64_t LinearBackwardExtraPeak(LinearFn linear, int64_t* input_bytes) {
  InstallMemoryCounter();
  // 16 MiB of bf16 input: four times an emulated slice's fp32 operand.
  const int64_t rows = 16384, in = 512, out = 32;
  at::Tensor h = at::randn({1, in}).to(at::kBFloat16).requires_grad_(true);
  at::Tensor w =
      (at::randn({out, in}) * 0.1).to(at::kBFloat16).requires_grad_(true);
  at::Tensor b = at::randn({out}).to(at::kBFloat16).requires_grad_(true);
  at::Tensor y;
  {
    at::Tensor x = h.expand({rows, in}).contiguous();
    *input_bytes = x.nbytes();
    y = linear(x, w, b);
  }
  at::Tensor g = at::randn({rows, out}).to(at::kBFloat16);
  const int64_t before = LiveMemoryBytes(false);
  ResetPeakMemory(false);
  y.backward(g);
  EXPECT_TRUE(h.grad().defined());
  return PeakMemoryBytes(false) - before;
}

TEST_F(GradOpsTest, LinearFreesItsInputBeforeTheInputGradient) {
  // Both bf16 paths: the native one (libtorch's bf16 GEMMs) and the one a
  // CPU without native bf16 runs (fp32 GEMMs on slices, bf16_emulation.h).
  for (bool emulated : {false, true}) {
    SCOPED_TRACE(emulated ? "emulated bf16" : "native bf16");
    SetBf16EmulationForTesting(emulated);
    int64_t input_bytes = 0;
    const int64_t ours = LinearBackwardExtraPeak(
        [](const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
          return Linear(x, w, b);
        },
        &input_bytes);
    SetBf16EmulationForTesting(false);
    const int64_t aten = LinearBackwardExtraPeak(
        [](const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
          return at::linear(x, w, b);
        },
        &input_bytes);
    ClearBf16EmulationForTesting();
    // at::linear holds its input while it allocates the input gradient, of
    // the same size; ours has freed it by then.
    EXPECT_GE(aten, input_bytes);
    EXPECT_LT(ours, input_bytes / 2) << "at::linear: " << aten;
  }
}

TEST_F(GradOpsTest, LinearOfBf16WeightsRunsBackwardOnce) {
  at::Tensor x = at::randn({8, 6}).to(at::kBFloat16).requires_grad_(true);
  at::Tensor w = at::randn({4, 6}).to(at::kBFloat16).requires_grad_(true);
  at::Tensor b = at::randn({4}).to(at::kBFloat16).requires_grad_(true);
  at::Tensor loss = Linear(x, w, b).sum();
  loss.backward({}, /*retain_graph=*/true);
  try {
    loss.backward();
    FAIL() << "a second backward ran";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("backward a second time"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(GradOpsTest, LinearOfBf16WeightsMatchesAtenLinearWithItsOwnBackward) {
  // The native bf16 path (bf16_emulation_test covers the emulated one).
  SetBf16EmulationForTesting(false);
  at::Tensor x = at::randn({2, 33, 48}).to(at::kBFloat16).requires_grad_(true);
  at::Tensor w = (at::randn({40, 48}) * 0.1).to(at::kBFloat16);
  at::Tensor b = at::randn({40}).to(at::kBFloat16);
  w.requires_grad_(true);
  b.requires_grad_(true);
  at::Tensor x2 = x.detach().clone().requires_grad_(true);
  at::Tensor w2 = w.detach().clone().requires_grad_(true);
  at::Tensor b2 = b.detach().clone().requires_grad_(true);
  at::Tensor ours = Linear(x, w, b);
  at::Tensor ref = at::linear(x2, w2, b2);
  ASSERT_NE(ours.grad_fn(), nullptr);
  EXPECT_NE(ours.grad_fn()->name().find("WeightGradFirstLinearFn"),
            std::string::npos)
      << ours.grad_fn()->name();
  EXPECT_TRUE(at::equal(ours, ref));
  at::Tensor g = at::randn({2, 33, 40}).to(at::kBFloat16);
  ours.backward(g);
  ref.backward(g);
  // The same products, summed in another order: bf16 rounding apart.
  EXPECT_LT(RelError(x.grad().to(at::kFloat), x2.grad().to(at::kFloat)), 1e-2);
  EXPECT_LT(RelError(w.grad().to(at::kFloat), w2.grad().to(at::kFloat)), 1e-2);
  EXPECT_LT(RelError(b.grad().to(at::kFloat), b2.grad().to(at::kFloat)), 1e-2);
  EXPECT_EQ(w.grad().sizes(), w.sizes());
  ClearBf16EmulationForTesting();
}

TEST_F(GradOpsTest, LinearKeepsAtenLinearForFp32AndFrozenInputs) {
  at::Tensor w32 = at::randn({4, 3}).requires_grad_(true);
  at::Tensor b32 = at::randn({4}).requires_grad_(true);
  at::Tensor x = at::randn({5, 3});
  at::Tensor y = Linear(x, w32, b32);
  EXPECT_EQ(y.grad_fn()->name().find("WeightGradFirstLinearFn"),
            std::string::npos);
  // A 16-bit layer whose input needs no gradient (the first layer's).
  at::Tensor w16 = w32.detach().to(at::kBFloat16).requires_grad_(true);
  at::Tensor b16 = b32.detach().to(at::kBFloat16).requires_grad_(true);
  at::Tensor y16 = Linear(x.to(at::kBFloat16), w16, b16);
  y16.sum().backward();
  ASSERT_TRUE(w16.grad().defined());
  // d sum / dW[i][j] = sum over rows of x[:, j].
  at::Tensor expected = x.sum(0).expand({4, 3});
  EXPECT_LT(RelError(w16.grad().to(at::kFloat), expected), 1e-2);
  EXPECT_TRUE(at::equal(b16.grad().to(at::kFloat), at::full({4}, 5.0)));
}

}  // namespace
}  // namespace halftime::engine
