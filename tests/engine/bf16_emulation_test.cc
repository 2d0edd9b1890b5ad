// Tests of the emulated bf16 ops (engine/bf16_emulation.h): their
// results against an fp64 reference of the same bf16 operands and against
// PyTorch's own bf16 kernels, their gradients, autocast, their memory, the
// agreement with the native bf16 path where the CPU has one, and that no
// bf16 GEMM or GELU kernel of libtorch runs in an emulated training step.

#include "engine/bf16_emulation.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include <cmath>
#include <mutex>
#include <set>
#include <string>

#include "engine/device.h"
#include "engine/model.h"
#include "engine/models/kernels.h"
#include "engine/train.h"
#include "tests/engine/test_util.h"

namespace halftime::engine {
namespace {

using testing::MakeCorpus;
using testing::ScratchDir;
using testing::TinyTextJob;
using testing::WriteBytes;

// Forces the emulated path for one test, whatever this CPU has.
class ForcedEmulation {
 public:
  explicit ForcedEmulation(bool on) { SetBf16EmulationForTesting(on); }
  ~ForcedEmulation() { ClearBf16EmulationForTesting(); }
};

at::Tensor Bf16Randn(std::vector<int64_t> sizes, double scale = 1.0) {
  return (at::randn(sizes, at::kDouble) * scale).to(at::kBFloat16);
}

// Expects `got` (bf16) to be a product's exact value `exact` (fp64)
// accumulated in fp32 and rounded once to bf16: within the bf16 rounding of
// |exact| (2^-8 relative) plus the fp32 accumulation bound, k * 2^-24 *
// `magnitude` (the product of the operands' absolute values, which bounds
// every partial sum), for `k` terms; and nearly all elements exactly the
// bf16 rounding of `exact`.
void ExpectRoundedFrom(const at::Tensor& got, const at::Tensor& exact,
                       const at::Tensor& magnitude, int64_t k,
                       const std::string& what) {
  ASSERT_EQ(got.scalar_type(), at::kBFloat16) << what;
  const at::Tensor error = (got.to(at::kDouble) - exact).abs();
  const at::Tensor bound = exact.abs() * std::ldexp(1.0, -8) +
                           magnitude * (k * std::ldexp(1.0, -24));
  EXPECT_TRUE(error.le(bound).all().item<bool>())
      << what << ": worst excess " << (error - bound).max().item<double>();
  const double exact_share =
      got.eq(exact.to(at::kBFloat16)).to(at::kDouble).mean().item<double>();
  EXPECT_GT(exact_share, 0.95) << what;
}

at::Tensor F64(const at::Tensor& t) { return t.to(at::kDouble); }

class Bf16EmulationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    at::set_num_threads(1);
    at::manual_seed(7);
  }
};

TEST_F(Bf16EmulationTest, LinearForwardAndBackwardMatchAnFp64Reference) {
  ForcedEmulation emulate(true);
  // More rows than one slice, so slices and their sums are exercised.
  const at::Tensor x = Bf16Randn({3, 1500, 96}).requires_grad_(true);
  const at::Tensor w = Bf16Randn({200, 96}, 0.1).requires_grad_(true);
  const at::Tensor b = Bf16Randn({200}).requires_grad_(true);
  ASSERT_TRUE(EmulatesBf16Gemm(w));
  const at::Tensor y = Linear(x, w, b);
  const at::Tensor ax = F64(x).abs(), aw = F64(w).abs();
  ExpectRoundedFrom(y, at::linear(F64(x), F64(w), F64(b)),
                    at::linear(ax, aw, F64(b).abs()), 97, "forward");

  const at::Tensor g = Bf16Randn({3, 1500, 200});
  y.backward(g);
  const at::Tensor g2 = F64(g).reshape({-1, 200}), ag = g2.abs();
  const at::Tensor x2 = F64(x).reshape({-1, 96}), ax2 = x2.abs();
  ExpectRoundedFrom(x.grad(), g2.mm(F64(w)).view({3, 1500, 96}),
                    ag.mm(aw).view({3, 1500, 96}), 200, "grad x");
  ExpectRoundedFrom(w.grad(), g2.t().mm(x2), ag.t().mm(ax2), 4500, "grad w");
  ExpectRoundedFrom(b.grad(), g2.sum(0), ag.sum(0), 4500, "grad b");
}

// When only the layer holds its input, the input gradient is written over
// it slice by slice, after each slice's weight gradient has read it.
TEST_F(Bf16EmulationTest, InputGradientWrittenOverTheInputIsExact) {
  ForcedEmulation emulate(true);
  const at::Tensor h = Bf16Randn({3000, 64}).requires_grad_(true);
  const at::Tensor w = Bf16Randn({160, 64}, 0.1).requires_grad_(true);
  at::Tensor y;
  {
    const at::Tensor x = h * 1.0;  // exact; held by the layer alone below
    y = Linear(x, w, at::Tensor());
  }
  const at::Tensor g = Bf16Randn({3000, 160});
  y.backward(g);
  const at::Tensor g2 = F64(g), h2 = F64(h);
  ExpectRoundedFrom(h.grad(), g2.mm(F64(w)), g2.abs().mm(F64(w).abs()), 160,
                    "grad x");
  ExpectRoundedFrom(w.grad(), g2.t().mm(h2), g2.abs().t().mm(h2.abs()), 3000,
                    "grad w");
}

TEST_F(Bf16EmulationTest, LinearAgreesWithPyTorchsBf16Kernel) {
  const at::Tensor x = Bf16Randn({64, 128});
  const at::Tensor w = Bf16Randn({96, 128}, 0.1);
  at::Tensor emulated;
  {
    ForcedEmulation emulate(true);
    emulated = Linear(x, w, at::Tensor());
  }
  // PyTorch's bf16 GEMM (oneDNN where the CPU has bf16, else its reference
  // loops), fp32 accumulation: the same products, another summation order.
  // Both are the exact product rounded, within the same bound, and nearly
  // always the same bits.
  const at::Tensor pytorch = at::linear(x, w);
  const at::Tensor exact = at::linear(F64(x), F64(w));
  const at::Tensor magnitude = at::linear(F64(x).abs(), F64(w).abs());
  ExpectRoundedFrom(emulated, exact, magnitude, 128, "emulated");
  ExpectRoundedFrom(pytorch, exact, magnitude, 128, "pytorch");
  EXPECT_GT(emulated.eq(pytorch).to(at::kDouble).mean().item<double>(), 0.95);
}

TEST_F(Bf16EmulationTest, EmulatedEqualsNativeBf16Path) {
  if (!CpuBf16Native()) {
    GTEST_SKIP() << "needs a CPU with native bf16 (avx512_bf16 or amx_bf16) "
                    "to compare against; this one has none (or "
                    "HALFTIME_CPU_ISA caps it), and the fp64 and PyTorch "
                    "comparisons above cover the emulated path";
  }
  const at::Tensor x = Bf16Randn({4, 256, 192}).requires_grad_(true);
  const at::Tensor w = Bf16Randn({384, 192}, 0.1).requires_grad_(true);
  const at::Tensor b = Bf16Randn({384}).requires_grad_(true);
  const at::Tensor g = Bf16Randn({4, 256, 384});
  auto run = [&](bool emulated) {
    ForcedEmulation mode(emulated);
    x.mutable_grad().reset();
    w.mutable_grad().reset();
    at::Tensor y = Linear(x, w, b);
    y.backward(g);
    return std::vector<at::Tensor>{y.detach(), x.grad().clone(),
                                   w.grad().clone()};
  };
  const auto native = run(false), emulated = run(true);
  const at::Tensor g2 = F64(g).reshape({-1, 384}),
                   x2 = F64(x).reshape({-1, 192});
  const std::vector<std::pair<at::Tensor, at::Tensor>> exact = {
      {at::linear(F64(x), F64(w), F64(b)),
       at::linear(F64(x).abs(), F64(w).abs(), F64(b).abs())},
      {g2.mm(F64(w)).view({4, 256, 192}),
       g2.abs().mm(F64(w).abs()).view({4, 256, 192})},
      {g2.t().mm(x2), g2.abs().t().mm(x2.abs())}};
  const int64_t terms[] = {193, 384, 1024};
  for (size_t i = 0; i < native.size(); ++i) {
    const std::string what = "output " + std::to_string(i);
    ExpectRoundedFrom(native[i], exact[i].first, exact[i].second, terms[i],
                      "native " + what);
    ExpectRoundedFrom(emulated[i], exact[i].first, exact[i].second, terms[i],
                      "emulated " + what);
    EXPECT_GT(emulated[i].eq(native[i]).to(at::kDouble).mean().item<double>(),
              0.95)
        << what;
  }
}

TEST_F(Bf16EmulationTest, BatchedMatmulMatchesAnFp64Reference) {
  ForcedEmulation emulate(true);
  const at::Tensor a = Bf16Randn({2, 40, 64, 32}).requires_grad_(true);
  const at::Tensor b = Bf16Randn({2, 40, 32, 64}).requires_grad_(true);
  const at::Tensor c = Matmul(a, b);
  const at::Tensor aa = F64(a).abs(), ab = F64(b).abs();
  ExpectRoundedFrom(c, at::matmul(F64(a), F64(b)), at::matmul(aa, ab), 32,
                    "forward");
  const at::Tensor g = Bf16Randn({2, 40, 64, 64});
  c.backward(g);
  const at::Tensor ag = F64(g).abs();
  ExpectRoundedFrom(a.grad(), at::matmul(F64(g), F64(b).transpose(-2, -1)),
                    at::matmul(ag, ab.transpose(-2, -1)), 64, "grad a");
  ExpectRoundedFrom(b.grad(), at::matmul(F64(a).transpose(-2, -1), F64(g)),
                    at::matmul(aa.transpose(-2, -1), ag), 64, "grad b");
}

TEST_F(Bf16EmulationTest, GeluIsFp32GeluRounded) {
  ForcedEmulation emulate(true);
  const at::Tensor x = Bf16Randn({3000, 48}, 3.0).requires_grad_(true);
  const at::Tensor y = Gelu(x);
  const at::Tensor x32 = x.detach().to(at::kFloat);
  EXPECT_TRUE(at::equal(y, at::gelu(x32).to(at::kBFloat16)));
  const at::Tensor g = Bf16Randn({3000, 48});
  y.backward(g);
  EXPECT_TRUE(at::equal(
      x.grad(), at::gelu_backward(g.to(at::kFloat), x32).to(at::kBFloat16)));
}

TEST_F(Bf16EmulationTest, UnderAutocastFp32WeightsGetFp32Gradients) {
  ForcedEmulation emulate(true);
  const at::Tensor x = at::randn({2, 300, 64}).requires_grad_(true);
  const at::Tensor w = (at::randn({80, 64}) * 0.1).requires_grad_(true);
  const at::Tensor b = at::randn({80}).requires_grad_(true);
  at::Tensor y;
  {
    AutocastGuard autocast(/*enabled=*/true, /*cuda=*/false, /*bf16=*/true);
    ASSERT_TRUE(EmulatesBf16Gemm(w));
    y = Linear(x, w, b);
  }
  // As native CPU autocast: bf16 operands and result, fp32 gradients.
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  const at::Tensor xb = F64(x.to(at::kBFloat16)), wb = F64(w.to(at::kBFloat16));
  const at::Tensor bb = F64(b.to(at::kBFloat16));
  ExpectRoundedFrom(y, at::linear(xb, wb, bb),
                    at::linear(xb.abs(), wb.abs(), bb.abs()), 65, "forward");
  const at::Tensor g = Bf16Randn({2, 300, 80});
  y.backward(g);
  EXPECT_EQ(w.grad().scalar_type(), at::kFloat);
  EXPECT_EQ(x.grad().scalar_type(), at::kFloat);
  // The bf16 weight gradient, widened by the cast's backward: exact.
  const at::Tensor g2 = F64(g).reshape({-1, 80});
  const at::Tensor x2 = xb.reshape({-1, 64});
  ExpectRoundedFrom(w.grad().to(at::kBFloat16), g2.t().mm(x2),
                    g2.abs().t().mm(x2.abs()), 600, "grad w");
}

TEST_F(Bf16EmulationTest, FollowsTheCpuUnlessForced) {
  const at::Tensor bf16 = at::zeros({2, 2}, at::kBFloat16);
  const at::Tensor fp32 = at::zeros({2, 2});
  EXPECT_EQ(EmulatesBf16Gemm(bf16), !CpuBf16Native());
  EXPECT_EQ(EmulatesBf16Op(bf16), !CpuBf16Native());
  EXPECT_FALSE(EmulatesBf16Gemm(fp32));  // fp32 outside autocast
  ForcedEmulation never(false);
  EXPECT_FALSE(EmulatesBf16Gemm(bf16));
  EXPECT_FALSE(EmulatesBf16Op(bf16));
}

// Only one slice's fp32 copies are alive at a time: a forward and backward
// on a 16 MiB bf16 input never hold an fp32 copy of it (32 MiB).
TEST_F(Bf16EmulationTest, HoldsNoFp32CopyOfAnActivation) {
  InstallMemoryCounter();
  ForcedEmulation emulate(true);
  const int64_t rows = 16384, width = 512;
  const at::Tensor x = Bf16Randn({rows, width}).requires_grad_(true);
  const at::Tensor w = Bf16Randn({width, width}, 0.05).requires_grad_(true);
  const at::Tensor g = Bf16Randn({rows, width});
  const int64_t activation_bytes = x.nbytes();  // 16 MiB
  ResetPeakMemory(false);
  const int64_t before = LiveMemoryBytes(false);
  at::Tensor y = Linear(x, w, at::Tensor());
  y = Gelu(y);
  y.backward(g);
  const int64_t peak = PeakMemoryBytes(false) - before;
  // At most three bf16 activations at once (GELU's output, its input
  // gradient, the linear's input gradient) and a few MiB of slices; an fp32
  // copy of x would add 2 x activation_bytes on its own.
  EXPECT_LT(peak, 4 * activation_bytes) << "peak " << peak << " bytes";
}

// The ops that would run libtorch's bf16 GEMM or GELU kernels.
const std::set<std::string>& SlowBf16Ops() {
  static const std::set<std::string> ops = {
      "aten::mm",     "aten::bmm",  "aten::addmm",         "aten::baddbmm",
      "aten::addbmm", "aten::gelu", "aten::gelu_backward", "aten::addmv",
      "aten::mv",     "aten::dot"};
  return ops;
}

// Records every slow op that ran with a bf16 tensor among its inputs.
class SlowBf16OpRecorder {
 public:
  SlowBf16OpRecorder() {
    handle_ = at::addGlobalCallback(
        at::RecordFunctionCallback([](const at::RecordFunction& fn)
                                       -> std::unique_ptr<at::ObserverContext> {
          if (!SlowBf16Ops().count(fn.name())) return nullptr;
          for (const c10::IValue& input : fn.inputs()) {
            if (input.isTensor() && input.toTensor().defined() &&
                input.toTensor().scalar_type() == at::kBFloat16) {
              std::lock_guard<std::mutex> lock(Mutex());
              Seen().insert(fn.name());
            }
          }
          return nullptr;
        }).needsInputs(true));
  }
  ~SlowBf16OpRecorder() { at::removeCallback(handle_); }
  static std::set<std::string>& Seen() {
    static std::set<std::string> seen;
    return seen;
  }
  static std::mutex& Mutex() {
    static std::mutex mu;
    return mu;
  }

 private:
  at::CallbackHandle handle_;
};

TEST_F(Bf16EmulationTest, NoBf16GemmOrGeluKernelRunsInAnEmulatedStep) {
  ScratchDir dir;
  const std::string corpus = dir.File("corpus.txt");
  WriteBytes(corpus, MakeCorpus(20000));
  ForcedEmulation emulate(true);
  // The recorder must see an op with bf16 inputs to be trusted: a native
  // bf16 GEMM outside the engine is one.
  {
    SlowBf16OpRecorder recorder;
    (void)at::mm(Bf16Randn({4, 4}), Bf16Randn({4, 4}));
    EXPECT_EQ(SlowBf16OpRecorder::Seen().count("aten::mm"), 1u);
    SlowBf16OpRecorder::Seen().clear();
  }
  for (Precision p :
       {Precision::kBf16Mixed, Precision::kBf16Master, Precision::kBf16Pure}) {
    TrainOptions o = TinyTextJob(corpus);
    o.precision = p;
    o.steps = 2;
    o.eval.every_steps = 2;
    o.eval.batches = 1;
    TrainCallbacks callbacks;
    std::atomic<bool> cancel{false};
    callbacks.cancel = &cancel;
    TrainSummary summary;
    SlowBf16OpRecorder recorder;
    const TrainStatus status = Train(o, callbacks, &summary);
    ASSERT_TRUE(status.ok()) << status.message;
    std::lock_guard<std::mutex> lock(SlowBf16OpRecorder::Mutex());
    EXPECT_THAT(SlowBf16OpRecorder::Seen(), ::testing::IsEmpty())
        << PrecisionName(p);
    SlowBf16OpRecorder::Seen().clear();
  }
}

}  // namespace
}  // namespace halftime::engine
