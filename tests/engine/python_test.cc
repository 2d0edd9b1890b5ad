// Tests against PyTorch itself (/usr/bin/python3): loss parity of the GPT in
// fp32 and bf16-mixed, tensor data saved by torch.save, TorchScript
// fine-tuning, and safetensors files read and written from the published
// layout. Skipped only when /usr/bin/python3 or its torch is missing.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/serialize.h>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "engine/checkpoint.h"
#include "engine/device.h"
#include "engine/train.h"
#include "tests/engine/python_fixture.h"
#include "tests/engine/test_util.h"

namespace halftime::engine {
namespace {

using testing::GptParityJob;
using ::testing::HasSubstr;
using testing::kGptParityArgs;
using testing::PythonTorchAvailable;
using testing::RunPython;
using testing::ScratchDir;

class PythonTest : public testing::PythonFixtureTest {
 protected:
  TrainOptions ParityJob(Precision p) {
    return GptParityJob(p, dir_.File("tokens.pt"));
  }

  std::vector<double> OurLosses(const TrainOptions& o) {
    std::vector<double> losses;
    TrainCallbacks cb;
    cb.on_step = [&](const StepReport& r) { losses.push_back(r.loss); };
    TrainStatus st = Train(o, cb, nullptr);
    EXPECT_TRUE(st.ok()) << st.message;
    return losses;
  }

  std::vector<double> TheirLosses(const std::string& precision) {
    const std::string out = dir_.File("py_" + precision + ".txt");
    EXPECT_EQ(RunPython("gpt_parity.py", dir_.File("init.safetensors") + " " +
                                             dir_.File("tokens.pt") + " " +
                                             out + " --precision " + precision +
                                             " " + kGptParityArgs),
              0);
    return testing::ReadNumbers(out);
  }

  void ExpectParity(Precision p, const std::string& name, double rel_tol) {
    TrainOptions o = ParityJob(p);
    ASSERT_TRUE(ExportInitialWeights(o, dir_.File("init.safetensors")).ok());
    const std::vector<double> ours = OurLosses(o);
    const std::vector<double> theirs = TheirLosses(name);
    ASSERT_EQ(ours.size(), 20u);
    ASSERT_EQ(theirs.size(), 20u);
    double worst = 0;
    for (size_t i = 0; i < ours.size(); ++i) {
      const double rel = std::abs(ours[i] - theirs[i]) / std::abs(theirs[i]);
      worst = std::max(worst, rel);
      EXPECT_LE(rel, rel_tol) << "step " << i + 1 << ": ours " << ours[i]
                              << " pytorch " << theirs[i];
    }
    // Training happened: the loss fell over the 20 steps.
    EXPECT_LT(ours.back(), ours.front() - 0.3);
    RecordProperty("worst_relative_difference", std::to_string(worst));
  }
};

TEST_F(PythonTest, Fp32LossesMatchPyTorch) {
  ExpectParity(Precision::kFp32, "fp32", 1e-4);
}

TEST_F(PythonTest, Bf16MixedMatchesPyTorchAutocast) {
  ExpectParity(Precision::kBf16Mixed, "bf16-mixed", 1e-2);
}

TEST_F(PythonTest, GradAccumulationMatchesTheLargerBatch) {
  // In-order data: 2 micro-batches of 4 rows are the 8 rows of one batch, so
  // the mean loss and (up to rounding) the update are the same.
  TrainOptions big = ParityJob(Precision::kFp32);
  big.steps = 8;
  TrainOptions accum = big;
  accum.batch_size = 4;
  accum.grad_accumulation = 2;
  const std::vector<double> a = OurLosses(big);
  const std::vector<double> b = OurLosses(accum);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_NEAR(a[i], b[i], 1e-5 * std::abs(a[i])) << "step " << i + 1;
  }
}

TEST_F(PythonTest, TorchScriptFineTuning) {
  TrainOptions o;
  o.model.torchscript = dir_.File("model.pt");
  o.model.loss = LossKind::kMse;
  o.data.kind = DataKind::kTensors;
  o.data.path = dir_.File("regression.pt");
  o.precision = Precision::kFp32;
  o.batch_size = 32;
  o.steps = 150;
  o.optimizer.lr = 1e-2;
  o.threads = 1;
  o.eval.every_steps = 0;
  o.out_dir = dir_.File("out");
  std::vector<double> losses;
  TrainCallbacks cb;
  cb.on_step = [&](const StepReport& r) { losses.push_back(r.loss); };
  TrainSummary s;
  TrainStatus st = Train(o, cb, &s);
  ASSERT_TRUE(st.ok()) << st.message;
  EXPECT_LT(losses.back(), 0.2 * losses.front());
  ASSERT_FALSE(s.final_torchscript.empty());
  EXPECT_EQ(RunPython("check_outputs.py", "torchscript " + s.final_torchscript +
                                              " " + dir_.File("model.pt") +
                                              " " + dir_.File("regression.pt")),
            0);
  // The same module also trains in bf16-master (bf16 weights, fp32 master)
  // where the CPU has native bf16. Where it would be emulated, it is
  // refused: TorchScript's matmuls cannot be routed through fp32.
  o.precision = Precision::kBf16Master;
  o.allow_emulation = true;
  o.out_dir = dir_.File("out_bf16");
  losses.clear();
  st = Train(o, cb, &s);
  if (!CpuBf16Native()) {
    EXPECT_EQ(st.code, TrainStatus::kUnsupported);
    EXPECT_THAT(st.message, ::testing::HasSubstr("TorchScript"));
    EXPECT_TRUE(losses.empty());
    return;
  }
  ASSERT_TRUE(st.ok()) << st.message;
  EXPECT_LT(losses.back(), 0.2 * losses.front());
}

TEST_F(PythonTest, BuiltinMlpOnTorchSaveClasses) {
  TrainOptions o;
  o.model.builtin = "mlp";
  o.model.mlp_hidden = 32;
  o.data.kind = DataKind::kTensors;
  o.data.path = dir_.File("classes.pt");
  o.precision = Precision::kBf16Mixed;
  o.allow_emulation = true;  // emulated where the CPU lacks native bf16
  o.batch_size = 32;
  o.steps = 80;
  o.optimizer.lr = 1e-2;
  o.threads = 1;
  o.eval.every_steps = 0;
  TrainSummary s;
  TrainStatus st = Train(o, TrainCallbacks(), &s);
  ASSERT_TRUE(st.ok()) << st.message;
  ASSERT_TRUE(s.has_eval_loss);
  EXPECT_LT(s.eval_loss, 0.5);  // 4 separable classes; chance is ln 4 = 1.39
}

TEST_F(PythonTest, BadTensorFilesNameThePath) {
  for (const auto& [file, want] :
       std::vector<std::pair<std::string, std::string>>{
           {"bad_dtype.pt", "inputs have dtype Bool"},
           {"mismatch.pt", "same first dimension"}}) {
    TrainOptions o;
    o.model.builtin = "mlp";
    o.data.kind = DataKind::kTensors;
    o.data.path = dir_.File(file);
    TrainStatus st = Train(o, TrainCallbacks(), nullptr);
    EXPECT_EQ(st.code, TrainStatus::kInvalidInput) << file;
    EXPECT_THAT(st.message, HasSubstr(dir_.File(file)));
    EXPECT_THAT(st.message, HasSubstr(want));
  }
}

TEST_F(PythonTest, SafetensorsRoundTripThroughPython) {
  // C++ -> Python: every supported dtype, odd shapes, a scalar, an empty one.
  NamedTensors tensors = {
      {"w.f32", at::randn({3, 5})},
      {"w.bf16", at::randn({7}).to(at::kBFloat16)},
      {"w.f16", at::randn({2, 2, 2}).to(at::kHalf)},
      {"w.f64", at::randn({4}, at::kDouble)},
      {"i.i64", at::arange(-5, 5, at::kLong)},
      {"i.i32", at::arange(0, 6, at::kInt).reshape({2, 3})},
      {"u.u8", at::arange(0, 250, 7, at::kByte)},
      {"b.bool", at::rand({5}) > 0.5},
      {"s.scalar", at::full({}, 2.5)},
      {"e.empty", at::empty({0, 3})},
      {"t.noncontig", at::randn({4, 6}).t()},
  };
  const std::string st_path = dir_.File("cpp.safetensors");
  ASSERT_TRUE(
      WriteSafetensors(st_path, tensors, {{"producer", "halftime-test"}}).ok());
  c10::impl::GenericDict expected(c10::StringType::get(),
                                  c10::TensorType::get());
  for (const auto& [name, t] : tensors) expected.insert(name, t.contiguous());
  const std::vector<char> bytes = torch::pickle_save(expected);
  std::ofstream(dir_.File("expected.pt"), std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  EXPECT_EQ(RunPython("check_outputs.py", "safetensors " + st_path + " " +
                                              dir_.File("expected.pt")),
            0);

  // Python -> C++.
  NamedTensors read;
  ASSERT_TRUE(ReadSafetensors(dir_.File("py.safetensors"), &read).ok());
  ASSERT_EQ(read.size(), 4u);
  std::map<std::string, at::Tensor> by_name(read.begin(), read.end());
  EXPECT_TRUE(at::equal(by_name["a.f32"],
                        at::arange(12, at::kFloat).reshape({3, 4}) / 4));
  EXPECT_TRUE(at::equal(by_name["b.bf16"],
                        at::arange(6, at::kFloat).to(at::kBFloat16) - 2.5));
  EXPECT_TRUE(at::equal(by_name["c.i64"], at::arange(5, at::kLong) * -3));
  EXPECT_EQ(by_name["d.f16"].scalar_type(), at::kHalf);
  EXPECT_EQ(by_name["d.f16"][0][1].item<float>(), -1.25f);

  // A truncated file is refused with its path.
  std::ifstream in(st_path, std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)),
                  std::istreambuf_iterator<char>());
  testing::WriteBytes(dir_.File("cut.safetensors"),
                      all.substr(0, all.size() - 9));
  NamedTensors none;
  TrainStatus st = ReadSafetensors(dir_.File("cut.safetensors"), &none);
  EXPECT_EQ(st.code, TrainStatus::kInvalidInput);
  EXPECT_THAT(st.message, HasSubstr("cut.safetensors"));
}

}  // namespace
}  // namespace halftime::engine
