// The frozen-base storage of adapter jobs (engine/quantize.h): NF4 against
// the QLoRA code book and bitsandbytes' published error figures, its
// packing and bytes per weight, and per-row int8.

#include "engine/quantize.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace halftime::engine {
namespace {

at::Tensor CodeBook() {
  const auto& c = Nf4CodeBook();
  return at::tensor(std::vector<float>(c.begin(), c.end()));
}

TEST(Nf4Test, CodeBookIsTheQloraOne) {
  const auto& c = Nf4CodeBook();
  EXPECT_EQ(c[0], -1.0f);
  EXPECT_EQ(c[7], 0.0f);
  EXPECT_EQ(c[15], 1.0f);
  EXPECT_FLOAT_EQ(c[1], -0.6961928009986877f);
  EXPECT_FLOAT_EQ(c[8], 0.07958029955625534f);
  EXPECT_FLOAT_EQ(c[14], 0.7229568362236023f);
  for (int i = 1; i < 16; ++i) EXPECT_LT(c[i - 1], c[i]);
}

TEST(Nf4Test, ValuesOnTheCodeBookComeBackExactly) {
  // Each 64-weight block holds code values times its own scale, with +-1
  // (the code's ends) present so that the block's absmax is the scale.
  at::manual_seed(3);
  const std::vector<double> scales = {1.0, 0.375, 6.0, 0.0078125};
  std::vector<at::Tensor> blocks;
  for (double s : scales) {
    at::Tensor idx = at::randint(0, 16, {64}, at::kLong);
    idx[0] = 0;
    idx[1] = 15;
    blocks.push_back(CodeBook().index_select(0, idx) * s);
  }
  const at::Tensor w = at::stack(blocks).view({2, 128});
  for (bool double_quant : {false, true}) {
    auto q = FrozenWeight::Nf4(w, double_quant, at::kFloat);
    const at::Tensor back = q->Materialize(at::kFloat);
    if (!double_quant) {
      EXPECT_TRUE(at::equal(back, w)) << (back - w).abs().max();
      EXPECT_EQ(q->relative_error(), 0.0);
    } else {
      // The block maxima pass through 8 bits: each is off by at most half
      // a step of its group's int8 scale (the largest distance from their
      // mean over 127), and a value by that times its code (|code| <= 1).
      const at::Tensor maxima = at::tensor(scales);
      const double step =
          (maxima - maxima.mean()).abs().max().item<double>() / 127;
      EXPECT_LE((back - w).abs().max().item<double>(), step / 2 * 1.0001);
    }
  }
}

TEST(Nf4Test, AMidpointGoesToTheLowerCode) {
  const auto& c = Nf4CodeBook();
  std::vector<float> v(64, 0.0f);
  v[0] = 1.0f;  // absmax
  v[1] = (c[9] + c[10]) / 2;
  v[2] = (c[3] + c[4]) / 2;
  auto q = FrozenWeight::Nf4(at::tensor(v).view({1, 64}), false, at::kFloat);
  const at::Tensor back = q->Materialize(at::kFloat).view({-1});
  EXPECT_EQ(back[1].item<float>(), c[9]);
  EXPECT_EQ(back[2].item<float>(), c[3]);
}

TEST(Nf4Test, GaussianErrorIsWithinBitsandbytesPublishedFigures) {
  // bitsandbytes' test_4bit_quant on randn(1024, 1024), blocksize 64:
  // mean |A - A'| 0.072798 (std 0.000074) and mean |A - A'| / |A| 0.203339
  // (std 0.000340); its bound is mean + 7 std.
  at::manual_seed(11);
  const at::Tensor a = at::randn({1024, 1024});
  auto q = FrozenWeight::Nf4(a, /*double_quant=*/false, at::kFloat);
  const at::Tensor err = (a - q->Materialize(at::kFloat)).abs();
  const double mean_abs = err.mean().item<double>();
  const double mean_rel = (err / (a.abs() + 1e-8)).mean().item<double>();
  EXPECT_LT(mean_abs, 0.072798 + 7 * 0.000074);
  EXPECT_GT(mean_abs, 0.072798 - 7 * 0.000074);
  EXPECT_LT(mean_rel, 0.203339 + 7 * 0.000340);
  // Double quantization costs almost nothing in accuracy.
  auto dq = FrozenWeight::Nf4(a, /*double_quant=*/true, at::kFloat);
  const double dq_abs =
      (a - dq->Materialize(at::kFloat)).abs().mean().item<double>();
  EXPECT_LT(dq_abs, mean_abs * 1.01);
  EXPECT_NEAR(q->relative_error(),
              (a - q->Materialize(at::kFloat)).norm().item<double>() /
                  a.norm().item<double>(),
              1e-6);
}

TEST(Nf4Test, StoresFourAndAHalfBitsOrFourPointOneWithDoubleQuant) {
  const at::Tensor a = at::randn({1024, 1024});
  const double n = static_cast<double>(a.numel());
  auto q = FrozenWeight::Nf4(a, false, at::kBFloat16);
  EXPECT_DOUBLE_EQ(q->bytes() * 8 / n, 4.5);
  auto dq = FrozenWeight::Nf4(a, true, at::kBFloat16);
  // 4 + 8/64 + 32/(64*256) bits, plus one fp32 offset.
  EXPECT_NEAR(dq->bytes() * 8 / n, 4.127, 1e-3);
  EXPECT_EQ(dq->Materialize().scalar_type(), at::kBFloat16);
}

TEST(Nf4Test, PacksTheFirstValueInTheHighNibbleAndPadsTheLastBlock) {
  // 3 x 30 = 90 values: one full block and a padded one.
  at::manual_seed(5);
  const at::Tensor a = at::randn({3, 30});
  auto q = FrozenWeight::Nf4(a, false, at::kFloat);
  EXPECT_EQ(q->bytes(), 64 + 2 * 4);  // 128 codes in 64 bytes, 2 maxima
  const at::Tensor back = q->Materialize(at::kFloat);
  EXPECT_EQ(back.sizes(), a.sizes());
  // Each value's nearest code, block by block, in order.
  const at::Tensor flat = a.view({-1});
  for (int64_t block = 0; block < 2; ++block) {
    const int64_t first = block * 64, len = std::min<int64_t>(64, 90 - first);
    const at::Tensor part = flat.narrow(0, first, len);
    const double absmax = part.abs().max().item<double>();
    const at::Tensor nearest =
        (part.unsqueeze(1) / absmax - CodeBook().unsqueeze(0)).abs().argmin(1);
    const at::Tensor expect = CodeBook().index_select(0, nearest) * absmax;
    EXPECT_TRUE(
        at::allclose(back.view({-1}).narrow(0, first, len), expect, 0, 1e-6));
  }
}

TEST(Int8Test, RowsScaleByTheirOwnAbsmax) {
  at::manual_seed(7);
  at::Tensor a = at::randn({16, 48});
  a[3] *= 100;  // one loud row does not coarsen the others
  auto q = FrozenWeight::Int8(a, at::kFloat);
  const at::Tensor back = q->Materialize(at::kFloat);
  const at::Tensor step = a.abs().amax(1, true) / 127;
  EXPECT_TRUE(((a - back).abs() <= step / 2 + 1e-6).all().item<bool>());
  EXPECT_EQ(q->bytes(), 16 * 48 + 16 * 4);
  // Multiples of the step are exact.
  const at::Tensor exact =
      at::arange(-127, 127, 2).to(at::kFloat).view({1, -1});
  auto qe = FrozenWeight::Int8(exact * 0.25, at::kFloat);
  EXPECT_TRUE(at::equal(qe->Materialize(at::kFloat), exact * 0.25));
}

TEST(FrozenWeightTest, DenseMaterializesInTheComputeDtype) {
  const at::Tensor a = at::randn({4, 8}).to(at::kBFloat16);
  auto d = FrozenWeight::Dense(a, at::kFloat);
  EXPECT_EQ(d->Materialize().scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(d->Materialize(), a.to(at::kFloat)));
  EXPECT_EQ(d->bytes(), 4 * 8 * 2);
}

}  // namespace
}  // namespace halftime::engine
