// End-to-end tests of Train(): resume, cancellation, outputs, bad data,
// precision checks, overflow handling, memory accounting and quality. Only
// the public, torch-free API is used here.

#include "engine/train.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "engine/device.h"
#include "tests/engine/test_util.h"

namespace halftime::engine {
namespace {

using ::testing::HasSubstr;
using testing::MakeCorpus;
using testing::ScratchDir;
using testing::TinyTextJob;
using testing::WriteBytes;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct RunResult {
  TrainStatus status;
  TrainSummary summary;
  std::vector<StepReport> reports;
  std::vector<std::string> checkpoints;
};

RunResult DoTrain(const TrainOptions& o,
                  const std::atomic<bool>* cancel = nullptr,
                  int cancel_after = -1) {
  RunResult run;
  TrainCallbacks cb;
  std::atomic<bool> local_cancel{false};
  cb.cancel = cancel ? cancel : &local_cancel;
  cb.on_step = [&](const StepReport& r) {
    run.reports.push_back(r);
    if (cancel_after >= 0 && r.step == cancel_after) local_cancel = true;
  };
  cb.on_checkpoint = [&](const std::string& path, int64_t) {
    run.checkpoints.push_back(path);
  };
  run.status = Train(o, cb, &run.summary);
  return run;
}

class TrainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    corpus_ = dir_.File("corpus.txt");
    WriteBytes(corpus_, MakeCorpus(40000));
  }
  ScratchDir dir_;
  std::string corpus_;
};

TEST_F(TrainTest, TrainsAndReportsEveryStep) {
  TrainOptions o = TinyTextJob(corpus_);
  o.steps = 30;
  o.eval.every_steps = 10;
  o.out_dir = dir_.File("out");
  RunResult run = DoTrain(o);
  ASSERT_TRUE(run.status.ok()) << run.status.message;
  ASSERT_EQ(run.reports.size(), 30u);
  EXPECT_LT(run.reports.back().loss, run.reports.front().loss - 0.5);
  int evals = 0;
  for (const StepReport& r : run.reports) {
    EXPECT_FALSE(r.overflow);
    EXPECT_GT(r.grad_norm, 0);
    EXPECT_GT(r.tokens_per_second, 0);
    EXPECT_DOUBLE_EQ(r.tokens_per_second, r.samples_per_second * 32);
    EXPECT_GT(r.model_flops_per_second, 0);
    EXPECT_GT(r.peak_memory_bytes, r.weight_bytes);
    EXPECT_EQ(r.weight_bytes, r.gradient_bytes);  // fp32 weights and grads
    EXPECT_EQ(r.optimizer_state_bytes, 2 * r.weight_bytes);  // AdamW m, v
    evals += r.has_eval_loss;
  }
  EXPECT_EQ(evals, 3);
  // Language models also report next-token accuracy, and it improves.
  std::vector<double> accuracies;
  for (const StepReport& r : run.reports) {
    EXPECT_EQ(r.has_eval_accuracy, r.has_eval_loss);
    if (r.has_eval_accuracy) accuracies.push_back(r.eval_accuracy);
  }
  ASSERT_EQ(accuracies.size(), 3u);
  EXPECT_GT(accuracies.back(), accuracies.front());
  EXPECT_GT(accuracies.front(), 0.0);
  EXPECT_LT(accuracies.back(), 1.0);
  EXPECT_TRUE(run.summary.has_eval_accuracy);
  EXPECT_EQ(run.summary.eval_accuracy, accuracies.back());
  EXPECT_EQ(run.summary.steps, 30);
  EXPECT_EQ(run.summary.precision, Precision::kFp32);
  EXPECT_TRUE(run.summary.has_eval_loss);
  EXPECT_TRUE(std::filesystem::exists(run.summary.final_weights));
  const std::string summary = ReadAll(run.summary.summary_json);
  EXPECT_THAT(summary, HasSubstr("\"steps\":30"));
  EXPECT_THAT(summary, HasSubstr("\"eval_loss\":"));
  EXPECT_THAT(summary, HasSubstr("\"eval_accuracy\":"));
  EXPECT_THAT(summary, HasSubstr("\"peak_memory_bytes\":"));
  EXPECT_EQ(run.checkpoints.size(), 1u);  // only at the end
}

TEST_F(TrainTest, DeterministicBySeed) {
  TrainOptions o = TinyTextJob(corpus_);
  RunResult a = DoTrain(o), b = DoTrain(o);
  o.seed = 6;
  RunResult c = DoTrain(o);
  ASSERT_TRUE(a.status.ok() && b.status.ok() && c.status.ok());
  for (size_t i = 0; i < a.reports.size(); ++i) {
    EXPECT_EQ(a.reports[i].loss, b.reports[i].loss);
  }
  EXPECT_NE(a.reports.back().loss, c.reports.back().loss);
}

void ExpectResumeExact(TrainOptions o, const std::string& out_a,
                       const std::string& out_b) {
  o.steps = 12;
  o.grad_accumulation = 2;
  o.lr_schedule.warmup_steps = 3;
  o.lr_schedule.decay = LrDecay::kCosine;
  o.checkpoint.every_steps = 5;
  o.checkpoint.keep = 0;
  o.out_dir = out_a;
  RunResult full = DoTrain(o);
  ASSERT_TRUE(full.status.ok()) << full.status.message;
  ASSERT_EQ(full.checkpoints.size(), 3u);  // 5, 10, 12
  o.out_dir = out_b;
  o.resume_from = full.checkpoints[0];
  RunResult resumed = DoTrain(o);
  ASSERT_TRUE(resumed.status.ok()) << resumed.status.message;
  ASSERT_EQ(resumed.reports.size(), 7u);
  for (size_t i = 0; i < resumed.reports.size(); ++i) {
    const StepReport& want = full.reports[5 + i];
    const StepReport& got = resumed.reports[i];
    EXPECT_EQ(got.step, want.step);
    EXPECT_EQ(got.loss, want.loss) << "step " << got.step;  // exact
    EXPECT_EQ(got.grad_norm, want.grad_norm) << "step " << got.step;
    EXPECT_EQ(got.lr, want.lr);
  }
  EXPECT_EQ(full.summary.eval_loss, resumed.summary.eval_loss);
  EXPECT_EQ(ReadAll(full.summary.final_weights),
            ReadAll(resumed.summary.final_weights));
}

TEST_F(TrainTest, ResumeEqualsUninterruptedFp32) {
  ExpectResumeExact(TinyTextJob(corpus_), dir_.File("a"), dir_.File("b"));
}

TEST_F(TrainTest, ResumeEqualsUninterruptedBf16Pure) {
  TrainOptions o = TinyTextJob(corpus_);
  o.precision = Precision::kBf16Pure;
  ExpectResumeExact(o, dir_.File("a"), dir_.File("b"));
}

TEST_F(TrainTest, ResumeEqualsUninterruptedBf16MasterDynamicScalingSgd) {
  TrainOptions o = TinyTextJob(corpus_);
  o.precision = Precision::kBf16Master;
  o.optimizer.name = OptimizerName::kSgd;
  o.optimizer.lr = 0.05;
  o.loss_scaling.mode = LossScalingMode::kDynamic;
  o.loss_scaling.growth_interval = 2;
  ExpectResumeExact(o, dir_.File("a"), dir_.File("b"));
}

TEST_F(TrainTest, ResumeRefusesOtherOptions) {
  TrainOptions o = TinyTextJob(corpus_);
  o.steps = 2;
  o.out_dir = dir_.File("a");
  RunResult first = DoTrain(o);
  ASSERT_TRUE(first.status.ok());
  o.batch_size = 4;
  o.resume_from = first.summary.last_checkpoint;
  RunResult second = DoTrain(o);
  EXPECT_EQ(second.status.code, TrainStatus::kInvalidInput);
  EXPECT_THAT(second.status.message, HasSubstr("different training options"));
}

TEST_F(TrainTest, CancelWritesCheckpointAndReturnsCancelled) {
  TrainOptions o = TinyTextJob(corpus_);
  o.steps = 50;
  o.out_dir = dir_.File("out");
  RunResult run = DoTrain(o, nullptr, /*cancel_after=*/3);
  EXPECT_EQ(run.status.code, TrainStatus::kCancelled);
  EXPECT_EQ(run.reports.size(), 3u);
  ASSERT_EQ(run.checkpoints.size(), 1u);
  EXPECT_THAT(run.checkpoints[0], HasSubstr("step-00000003.ckpt"));
  EXPECT_TRUE(std::filesystem::exists(run.checkpoints[0]));
  EXPECT_FALSE(std::filesystem::exists(run.checkpoints[0] + ".tmp"));
}

TEST_F(TrainTest, CheckpointsArePrunedAndAtomic) {
  TrainOptions o = TinyTextJob(corpus_);
  o.steps = 8;
  o.checkpoint.every_steps = 2;
  o.checkpoint.keep = 2;
  o.out_dir = dir_.File("out");
  RunResult run = DoTrain(o);
  ASSERT_TRUE(run.status.ok());
  EXPECT_EQ(run.checkpoints.size(), 4u);
  int files = 0;
  for (const auto& e :
       std::filesystem::directory_iterator(dir_.File("out/checkpoints"))) {
    EXPECT_EQ(e.path().extension(), ".ckpt") << e.path();
    ++files;
  }
  EXPECT_EQ(files, 2);
}

TEST_F(TrainTest, InitFromContinuesFromEarlierWeights) {
  TrainOptions o = TinyTextJob(corpus_);
  o.steps = 30;
  o.out_dir = dir_.File("pre");
  RunResult pre = DoTrain(o);
  ASSERT_TRUE(pre.status.ok());
  for (const std::string& from :
       {pre.summary.final_weights, pre.summary.last_checkpoint}) {
    TrainOptions ft = TinyTextJob(corpus_);
    ft.steps = 1;
    ft.model.init_from = from;
    RunResult run = DoTrain(ft);
    ASSERT_TRUE(run.status.ok()) << run.status.message;
    // Starts near where pre-training ended, far below a fresh model's loss.
    EXPECT_LT(run.reports[0].loss, pre.reports.front().loss - 0.5) << from;
  }
  TrainOptions bad = TinyTextJob(corpus_);
  bad.model.gpt.n_embd = 32;
  bad.model.init_from = pre.summary.final_weights;
  RunResult run = DoTrain(bad);
  EXPECT_EQ(run.status.code, TrainStatus::kInvalidInput);
  EXPECT_THAT(run.status.message, HasSubstr("wte.weight"));
}

TEST_F(TrainTest, BadDataErrorsNameThePath) {
  struct Case {
    DataKind kind;
    std::string name;
    std::string bytes;  // "" with write=false: missing
    bool write;
    std::string want;
  };
  std::string llmc(1024, '\0');
  const int32_t header[3] = {20240520, 1, 100};
  std::memcpy(llmc.data(), header, sizeof(header));
  llmc += std::string(50, '\1');  // 25 tokens, header says 100
  const std::vector<Case> cases = {
      {DataKind::kText, "missing.txt", "", false, "cannot be opened"},
      {DataKind::kText, "empty.txt", "", true, "is empty"},
      {DataKind::kText, "short.txt", "hello world", true, "too short"},
      {DataKind::kText, "binary.txt",
       std::string("ab\xff\xfe", 4) + std::string(200, 'a'), true, "not UTF-8"},
      {DataKind::kTokens, "odd.bin", std::string(401, '\1'), true, "truncated"},
      {DataKind::kTokens, "llmc.bin", llmc, true, "truncated"},
      {DataKind::kTensors, "junk.pt", std::string(300, 'x'), true,
       "neither a torch.save file"},
  };
  for (const Case& c : cases) {
    const std::string path = dir_.File(c.name);
    if (c.write) WriteBytes(path, c.bytes);
    TrainOptions o = TinyTextJob(path);
    o.data.kind = c.kind;
    RunResult run = DoTrain(o);
    EXPECT_EQ(run.status.code, TrainStatus::kInvalidInput) << c.name;
    EXPECT_THAT(run.status.message, HasSubstr(path)) << c.name;
    EXPECT_THAT(run.status.message, HasSubstr(c.want)) << c.name;
  }
}

TEST_F(TrainTest, TokenFilesRawAndLlmcHeader) {
  std::vector<uint16_t> tokens(4000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = (i * 7 + i / 13) % 500;
  const std::string raw(reinterpret_cast<const char*>(tokens.data()),
                        tokens.size() * 2);
  std::string llmc(1024, '\0');
  const int32_t header[3] = {20240520, 1, static_cast<int32_t>(tokens.size())};
  std::memcpy(llmc.data(), header, sizeof(header));
  WriteBytes(dir_.File("raw.bin"), raw);
  WriteBytes(dir_.File("llmc.bin"), llmc + raw);
  std::vector<double> first_losses;
  for (const char* name : {"raw.bin", "llmc.bin"}) {
    TrainOptions o = TinyTextJob(dir_.File(name));
    o.data.kind = DataKind::kTokens;
    o.steps = 3;
    RunResult run = DoTrain(o);
    ASSERT_TRUE(run.status.ok()) << name << ": " << run.status.message;
    first_losses.push_back(run.reports[0].loss);
  }
  // Same tokens, same batches, same model: identical.
  EXPECT_EQ(first_losses[0], first_losses[1]);
  EXPECT_NEAR(first_losses[0], std::log(500.0), 0.3);
}

TEST_F(TrainTest, InvalidOptionsNameTheField) {
  TrainOptions o = TinyTextJob(corpus_);
  o.batch_size = 0;
  EXPECT_THAT(DoTrain(o).status.message, HasSubstr("batch_size"));
  o = TinyTextJob(corpus_);
  o.model.builtin = "gpt-huge";
  RunResult run = DoTrain(o);
  EXPECT_EQ(run.status.code, TrainStatus::kInvalidInput);
  EXPECT_THAT(run.status.message, HasSubstr("model.builtin 'gpt-huge'"));
  o = TinyTextJob(corpus_);
  o.data.seq_len = 100;  // block_size is 64
  EXPECT_THAT(DoTrain(o).status.message, HasSubstr("data.seq_len 100"));
}

TEST_F(TrainTest, Fp16AndTf32NeedCuda) {
  if (CudaAvailable()) GTEST_SKIP() << "CUDA present";
  TrainOptions o = TinyTextJob(corpus_);
  o.precision = Precision::kFp16Mixed;
  RunResult run = DoTrain(o);
  EXPECT_EQ(run.status.code, TrainStatus::kUnsupported);
  EXPECT_EQ(run.status.message,
            "precision fp16-mixed needs a CUDA device; this build/device has "
            "none");
  o.precision = Precision::kTf32;
  EXPECT_THAT(DoTrain(o).status.message,
              HasSubstr("precision tf32 needs a CUDA device of compute "
                        "capability 8.0"));
}

TEST(DeviceTest, ProbeReportsNativeBf16AndResolvesAuto) {
  DeviceCapabilities caps = ProbeDevice(2, /*want_cuda=*/false);
  EXPECT_EQ(caps.kind, "cpu");
  EXPECT_GT(caps.memory_bytes, 0);
  EXPECT_GT(caps.fp32_flops, 1e8);
  EXPECT_TRUE(caps.Supports(Precision::kFp32));
  EXPECT_FALSE(caps.Supports(Precision::kFp16Mixed));
  std::ifstream cpuinfo("/proc/cpuinfo");
  const std::string info((std::istreambuf_iterator<char>(cpuinfo)),
                         std::istreambuf_iterator<char>());
  // HALFTIME_CPU_ISA=avx2 (scripts/test.sh's second pass) hides them.
  const char* cap = std::getenv("HALFTIME_CPU_ISA");
  const bool capped = cap != nullptr && std::string(cap) == "avx2";
  const bool bf16_flags =
      !capped && (info.find("avx512_bf16") != std::string::npos ||
                  info.find("amx_bf16") != std::string::npos);
  EXPECT_EQ(CpuBf16Native(), bf16_flags);
  EXPECT_EQ(caps.Supports(Precision::kBf16Mixed), bf16_flags);
  EXPECT_EQ(caps.bf16_emulated, !bf16_flags);
  EXPECT_EQ(caps.Emulates(Precision::kBf16Mixed), !bf16_flags);
  EXPECT_EQ(caps.Emulates(Precision::kBf16Pure), !bf16_flags);
  EXPECT_FALSE(caps.Emulates(Precision::kFp32));
  // bf16 always has a rate: native, or that of the emulated GEMM, which
  // runs near fp32's (far above the ~4 GFLOP/s of libtorch's naive loops,
  // 1/25 of fp32's). A tenth leaves room for the probe's noise when other
  // tests share the cores (measured 0.65x under the suite's load).
  EXPECT_GT(caps.bf16_flops, bf16_flags ? 0 : caps.fp32_flops / 10);
  Precision resolved;
  bool emulated = true;
  ASSERT_TRUE(
      ResolvePrecision(Precision::kAuto, caps, true, &resolved, &emulated)
          .ok());
  // auto never picks an emulated mode.
  EXPECT_EQ(resolved, bf16_flags ? Precision::kBf16Mixed : Precision::kFp32);
  EXPECT_FALSE(emulated);
  // A CPU without bf16 lists the bf16 modes as emulated: refused unless
  // allowed, and the refusal says how to allow it.
  caps.native_precisions = {Precision::kFp32};
  caps.emulated_precisions = {Precision::kBf16Mixed, Precision::kBf16Master,
                              Precision::kBf16Pure};
  TrainStatus st =
      ResolvePrecision(Precision::kBf16Pure, caps, false, &resolved, &emulated);
  EXPECT_EQ(st.code, TrainStatus::kUnsupported);
  EXPECT_THAT(st.message, HasSubstr("would only emulate it"));
  EXPECT_THAT(st.message, HasSubstr("resources.emulation: allow"));
  ASSERT_TRUE(
      ResolvePrecision(Precision::kBf16Pure, caps, true, &resolved, &emulated)
          .ok());
  EXPECT_EQ(resolved, Precision::kBf16Pure);
  EXPECT_TRUE(emulated);
}

TEST_F(TrainTest, Bf16JobSaysWhetherItRanEmulated) {
  TrainOptions o = TinyTextJob(corpus_);
  o.precision = Precision::kBf16Mixed;
  o.steps = 2;
  o.out_dir = dir_.File("out");
  RunResult run = DoTrain(o);
  ASSERT_TRUE(run.status.ok()) << run.status.message;
  EXPECT_EQ(run.summary.emulated, !CpuBf16Native());
  EXPECT_THAT(
      ReadAll(o.out_dir + "/summary.json"),
      HasSubstr(CpuBf16Native() ? "\"emulated\":false" : "\"emulated\":true"));
  o.allow_emulation = false;
  o.out_dir.clear();
  run = DoTrain(o);
  if (CpuBf16Native()) {
    EXPECT_TRUE(run.status.ok()) << run.status.message;
  } else {
    EXPECT_EQ(run.status.code, TrainStatus::kUnsupported);
    EXPECT_THAT(run.status.message, HasSubstr("--allow-emulation"));
  }
}

TEST_F(TrainTest, NaturalBf16OverflowIsSkippedAndBacksOff) {
  TrainOptions o = TinyTextJob(corpus_);
  o.precision = Precision::kBf16Mixed;
  o.steps = 12;
  o.loss_scaling.mode = LossScalingMode::kDynamic;
  o.loss_scaling.init_scale = std::ldexp(1.0, 120);
  o.loss_scaling.growth_interval = 1;
  o.loss_scaling.max_scale = std::ldexp(1.0, 127);
  RunResult run = DoTrain(o);
  ASSERT_TRUE(run.status.ok()) << run.status.message;
  int overflows = 0;
  for (size_t i = 0; i < run.reports.size(); ++i) {
    const StepReport& r = run.reports[i];
    if (r.overflow) {
      ++overflows;
      EXPECT_EQ(r.lr, 0.0);  // no optimizer or schedule step
      EXPECT_FALSE(std::isfinite(r.grad_norm));
      // The next step runs at half the scale.
      if (i + 1 < run.reports.size()) {
        EXPECT_EQ(run.reports[i + 1].loss_scale, r.loss_scale / 2);
      }
    } else {
      EXPECT_TRUE(std::isfinite(r.grad_norm));
      EXPECT_GT(r.lr, 0.0);
    }
    EXPECT_EQ(r.skipped_steps, overflows);
    EXPECT_TRUE(std::isfinite(r.loss));
  }
  EXPECT_GT(overflows, 0);
  // The scale backed off to one that fits and steps ran (a false overflow
  // from squaring scaled grads would skip them all).
  EXPECT_LT(overflows, static_cast<int>(run.reports.size()) - 2);
  EXPECT_EQ(run.summary.skipped_steps, overflows);
  EXPECT_EQ(run.reports[0].loss_scale, std::ldexp(1.0, 120));
}

TEST_F(TrainTest, OverflowsAtMinScaleFailOrRequestFallback) {
  TrainOptions o = TinyTextJob(corpus_);
  o.precision = Precision::kBf16Mixed;
  o.steps = 20;
  o.out_dir = dir_.File("out");
  o.loss_scaling.mode = LossScalingMode::kDynamic;
  // Every step overflows: the scale sits at 2^127, where any gradient
  // element above 2 (activation gradients included) is beyond bf16/fp32.
  o.loss_scaling.init_scale = std::ldexp(1.0, 127);
  o.loss_scaling.min_scale = std::ldexp(1.0, 127);
  o.loss_scaling.max_scale = std::ldexp(1.0, 127);
  o.loss_scaling.min_scale_patience = 3;
  RunResult run = DoTrain(o);
  EXPECT_EQ(run.status.code, TrainStatus::kTrainingFailed);
  EXPECT_THAT(run.status.message, HasSubstr("min_scale"));
  EXPECT_EQ(run.reports.size(), 3u);  // 3 overflows at the floor
  o.loss_scaling.on_min_scale = OnMinScale::kFallback;
  run = DoTrain(o);
  EXPECT_EQ(run.status.code, TrainStatus::kFallbackRequested);
  EXPECT_THAT(run.status.message, HasSubstr("bf16-mixed"));
  ASSERT_FALSE(run.summary.last_checkpoint.empty());
  // The fallback resumes from that checkpoint in another precision, with
  // that precision's own scaling, and finishes the job.
  o.precision = Precision::kFp32;
  o.loss_scaling.mode = LossScalingMode::kNone;
  o.resume_from = run.summary.last_checkpoint;
  RunResult fallback = DoTrain(o);
  ASSERT_TRUE(fallback.status.ok()) << fallback.status.message;
  EXPECT_EQ(fallback.reports.front().step, run.reports.back().step + 1);
  EXPECT_EQ(fallback.summary.steps, 20);
  for (const StepReport& r : fallback.reports) EXPECT_FALSE(r.overflow);
}

TEST_F(TrainTest, PeakMemoryBf16PureBelowFp32) {
  int64_t peak[2];
  int i = 0;
  for (Precision p : {Precision::kFp32, Precision::kBf16Pure}) {
    TrainOptions o = TinyTextJob(corpus_);
    o.precision = p;
    o.steps = 3;
    RunResult run = DoTrain(o);
    ASSERT_TRUE(run.status.ok()) << run.status.message;
    peak[i++] = run.summary.peak_memory_bytes;
    EXPECT_GT(run.summary.peak_memory_bytes, 0);
  }
  EXPECT_LT(peak[1], peak[0]);
  EXPECT_LT(static_cast<double>(peak[1]) / peak[0], 0.75);
}

TEST_F(TrainTest, EveryCpuModeReachesFp32Quality) {
  // Fine-tuning: a model pre-trained on one text is tuned on another in each
  // mode this machine runs; each final eval loss lands within 2% of fp32's.
  TrainOptions pre = TinyTextJob(corpus_);
  pre.steps = 60;
  pre.out_dir = dir_.File("pre");
  RunResult base = DoTrain(pre);
  ASSERT_TRUE(base.status.ok()) << base.status.message;
  const std::string tune_text = dir_.File("tune.txt");
  WriteBytes(tune_text, MakeCorpus(40000, /*seed=*/99));
  double fp32_eval = 0;
  for (Precision p : {Precision::kFp32, Precision::kBf16Mixed,
                      Precision::kBf16Master, Precision::kBf16Pure}) {
    TrainOptions o = TinyTextJob(tune_text);
    o.model.init_from = base.summary.final_weights;
    o.precision = p;
    o.steps = 120;
    o.lr_schedule.warmup_steps = 10;
    o.lr_schedule.decay = LrDecay::kCosine;
    o.eval.batches = 16;
    RunResult run = DoTrain(o);
    ASSERT_TRUE(run.status.ok()) << PrecisionName(p) << run.status.message;
    ASSERT_TRUE(run.summary.has_eval_loss);
    if (p == Precision::kFp32) fp32_eval = run.summary.eval_loss;
    EXPECT_NEAR(run.summary.eval_loss, fp32_eval, 0.02 * fp32_eval)
        << PrecisionName(p);
    RecordProperty(std::string("eval_loss_") + PrecisionName(p),
                   std::to_string(run.summary.eval_loss));
  }
}

TEST(JsonTest, StepReportLineEscapesAndNulls) {
  StepReport r;
  r.step = 3;
  r.loss = 1.5;
  r.overflow = true;
  r.grad_norm = std::nan("");
  const std::string line = StepReportJson(r);
  EXPECT_THAT(line, HasSubstr("\"step\":3"));
  EXPECT_THAT(line, HasSubstr("\"loss\":1.5"));
  EXPECT_THAT(line, HasSubstr("\"overflow\":true"));
  EXPECT_THAT(line, HasSubstr("\"grad_norm\":null"));
  EXPECT_EQ(line.find('\n'), std::string::npos);
  TrainSummary s;
  s.last_checkpoint = "dir/\"quoted\"\\\n\x01";
  EXPECT_THAT(
      SummaryJson(s),
      HasSubstr("\"last_checkpoint\":\"dir/\\\"quoted\\\"\\\\\\n\\u0001\""));
}

}  // namespace
}  // namespace halftime::engine
