// precision_checks: the engine's precision checks on one device, for a
// CUDA machine (run by hand; the CPU run is a CTest smoke test).
//
//   precision_checks [--device cuda|cpu] [--speed] [--python PATH]
//                    [--fixtures DIR] [--work DIR]
//
// 1. The probe: what the device is and which precisions it runs natively.
// 2. Gating: every precision the device does not run natively fails at
//    start with kUnsupported and a message naming the precision.
// 3. Quality: a GPT pre-trained in fp32 on one text is fine-tuned on
//    another in every native precision; each final eval loss must be within
//    2% of fp32's.
// 4. Overflow: a 16-bit mixed run from init_scale 2^120, growing after
//    every clean step (2^24 cap lifted), overflows at the ceiling, skips
//    those steps, backs off and trains between them.
// 5. Parity with PyTorch (when --python has torch for this device): fp32
//    losses within 1e-4 relative over 20 steps, bf16-mixed and fp16-mixed
//    (CUDA) within 1e-2 of torch.autocast.
// 6. With --speed: step time and peak memory of gpt-micro (CPU) or
//    gpt-small (CUDA) per native precision, against fp32.
// Exits 0 when every check passes, 1 when one fails, 2 when the device is
// missing; prints one line per check.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/worker/trainer/test_util.h"
#include "worker/trainer/device.h"
#include "worker/trainer/trainer.h"

namespace ht = halftime::trainer;
namespace testing = halftime::trainer::testing;
namespace fs = std::filesystem;

namespace {

struct Args {
  bool cuda = true;
  bool speed = false;
  std::string python = "/usr/bin/python3";
  std::string fixtures;  // tests/worker/trainer/python
  std::string work = "/tmp/halftime-precision-checks";
  ht::DeviceRequest device() const {
    return cuda ? ht::DeviceRequest::kCuda : ht::DeviceRequest::kCpu;
  }
};

int failures = 0;

void Check(bool ok, const std::string& what) {
  std::printf("%s  %s\n", ok ? "PASS" : "FAIL", what.c_str());
  std::fflush(stdout);
  if (!ok) ++failures;
}

// The trainer tests' tiny text job (gpt-nano over a byte-level corpus) on
// the device under test, with the quality test's eval size.
ht::TrainOptions TextJob(const Args& a, const std::string& path) {
  ht::TrainOptions o = testing::TinyTextJob(path);
  o.steps = 60;
  o.threads = 2;
  o.eval.batches = 16;
  o.device = a.device();
  return o;
}

struct Run {
  ht::TrainStatus status;
  ht::TrainSummary summary;
  std::vector<double> losses;
  std::vector<double> step_seconds;
};

Run DoTrain(const ht::TrainOptions& o) {
  Run r;
  ht::TrainCallbacks cb;
  cb.on_step = [&r](const ht::StepReport& s) {
    r.losses.push_back(s.loss);
    r.step_seconds.push_back(s.step_seconds);
  };
  r.status = ht::Train(o, cb, &r.summary);
  return r;
}

const std::vector<ht::Precision> kAllModes = {
    ht::Precision::kFp32,       ht::Precision::kTf32,
    ht::Precision::kFp16Mixed,  ht::Precision::kBf16Mixed,
    ht::Precision::kFp16Master, ht::Precision::kBf16Master,
    ht::Precision::kBf16Pure};

void GatingAndQuality(const Args& a, const ht::DeviceCapabilities& caps) {
  const std::string pre_text = a.work + "/pre.txt";
  const std::string tune_text = a.work + "/tune.txt";
  testing::WriteBytes(pre_text, testing::MakeCorpus(40000));
  testing::WriteBytes(tune_text, testing::MakeCorpus(40000, /*seed=*/99));
  for (ht::Precision p : kAllModes) {
    if (caps.Supports(p)) continue;
    ht::TrainOptions o = TextJob(a, tune_text);
    o.precision = p;
    o.steps = 2;
    const Run r = DoTrain(o);
    Check(r.status.code == ht::TrainStatus::kUnsupported &&
              r.status.message.find(ht::PrecisionName(p)) != std::string::npos,
          std::string("gating: ") + ht::PrecisionName(p) +
              " refused at start: " + r.status.message);
  }
  ht::TrainOptions pre = TextJob(a, pre_text);
  pre.out_dir = a.work + "/pre";
  const Run base = DoTrain(pre);
  Check(base.status.ok(), "quality: fp32 pre-training " + base.status.message);
  if (!base.status.ok()) return;
  double fp32_eval = 0;
  for (ht::Precision p : kAllModes) {
    if (!caps.Supports(p)) continue;
    ht::TrainOptions o = TextJob(a, tune_text);
    o.model.init_from = base.summary.final_weights;
    o.precision = p;
    o.steps = 120;
    o.lr_schedule.warmup_steps = 10;
    o.lr_schedule.decay = ht::LrDecay::kCosine;
    const Run r = DoTrain(o);
    if (!r.status.ok()) {
      Check(false, std::string("quality: ") + ht::PrecisionName(p) + ": " +
                       r.status.message);
      continue;
    }
    if (p == ht::Precision::kFp32) fp32_eval = r.summary.eval_loss;
    const double rel = std::abs(r.summary.eval_loss - fp32_eval) / fp32_eval;
    char line[200];
    std::snprintf(line, sizeof(line),
                  "quality: %-11s eval loss %.4f (fp32 %.4f, %+.2f%%), %lld "
                  "skipped steps, final scale %g",
                  ht::PrecisionName(p), r.summary.eval_loss, fp32_eval,
                  100.0 * (r.summary.eval_loss - fp32_eval) / fp32_eval,
                  static_cast<long long>(r.summary.skipped_steps),
                  r.summary.final_loss_scale);
    Check(rel <= 0.02, line);
  }
}

void Overflow(const Args& a, const ht::DeviceCapabilities& caps) {
  const ht::Precision p = caps.Supports(ht::Precision::kFp16Mixed)
                              ? ht::Precision::kFp16Mixed
                              : ht::Precision::kBf16Mixed;
  ht::TrainOptions o = TextJob(a, a.work + "/tune.txt");
  o.precision = p;
  o.steps = 40;
  o.loss_scaling.mode = ht::LossScalingMode::kDynamic;
  o.loss_scaling.init_scale = std::ldexp(1.0, 120);
  o.loss_scaling.max_scale = std::ldexp(1.0, 127);
  // Grow after every clean step, so the scale keeps probing the ceiling.
  o.loss_scaling.growth_interval = 1;
  const Run r = DoTrain(o);
  char line[200];
  std::snprintf(line, sizeof(line),
                "overflow: %s from scale 2^120, growing every step: %lld of "
                "%lld steps skipped, final scale 2^%.0f, loss %.3f -> %.3f",
                ht::PrecisionName(p),
                static_cast<long long>(r.summary.skipped_steps),
                static_cast<long long>(r.summary.steps),
                std::log2(r.summary.final_loss_scale),
                r.losses.empty() ? 0.0 : r.losses.front(),
                r.losses.empty() ? 0.0 : r.losses.back());
  // Overflowed at the ceiling, backed off, and trained between overflows.
  Check(r.status.ok() && r.summary.skipped_steps > 0 &&
            r.summary.skipped_steps < r.summary.steps / 2 &&
            std::isfinite(r.losses.back()) &&
            r.losses.back() < r.losses.front(),
        line + (r.status.ok() ? "" : ": " + r.status.message));
}

int Shell(const std::string& cmd) { return std::system(cmd.c_str()); }

std::vector<double> ReadNumbers(const std::string& path) {
  std::vector<double> v;
  std::ifstream in(path);
  double x;
  while (in >> x) v.push_back(x);
  return v;
}

void Parity(const Args& a, const ht::DeviceCapabilities& caps) {
  const std::string device = a.cuda ? "cuda" : "cpu";
  if (a.fixtures.empty() ||
      Shell(a.python + " -c 'import torch,sys; sys.exit(0 if \"" + device +
            "\" == \"cpu\" or torch.cuda.is_available() else 1)' "
            "2>/dev/null") != 0) {
    std::printf("SKIP  parity: %s has no torch for %s\n", a.python.c_str(),
                device.c_str());
    return;
  }
  if (Shell(a.python + " " + a.fixtures + "/make_fixtures.py " + a.work) != 0) {
    Check(false, "parity: make_fixtures.py failed");
    return;
  }
  struct Mode {
    ht::Precision precision;
    double tolerance;
  };
  for (const Mode& m :
       {Mode{ht::Precision::kFp32, 1e-4}, Mode{ht::Precision::kBf16Mixed, 1e-2},
        Mode{ht::Precision::kFp16Mixed, 1e-2}}) {
    if (!caps.Supports(m.precision)) continue;
    ht::TrainOptions o =
        testing::GptParityJob(m.precision, a.work + "/tokens.pt");
    o.device = a.device();
    const std::string name = ht::PrecisionName(m.precision);
    const std::string init = a.work + "/init-" + name + ".safetensors";
    const std::string out = a.work + "/pytorch-" + name + ".txt";
    if (!ht::ExportInitialWeights(o, init).ok()) {
      Check(false, "parity: exporting initial weights");
      continue;
    }
    const Run ours = DoTrain(o);
    const int rc =
        Shell(a.python + " " + a.fixtures + "/gpt_parity.py " + init + " " +
              o.data.path + " " + out + " --precision " + name + " --device " +
              device + " " + testing::kGptParityArgs);
    const std::vector<double> theirs = ReadNumbers(out);
    double worst = 0;
    const bool complete = rc == 0 && ours.status.ok() &&
                          ours.losses.size() == 20 && theirs.size() == 20;
    for (size_t i = 0; complete && i < 20; ++i) {
      worst = std::max(
          worst, std::abs(ours.losses[i] - theirs[i]) / std::abs(theirs[i]));
    }
    char line[200];
    std::snprintf(line, sizeof(line),
                  "parity: %s against PyTorch on %s, worst relative loss "
                  "difference over 20 steps %.2e (<= %.0e)",
                  name.c_str(), device.c_str(), worst, m.tolerance);
    Check(complete && worst <= m.tolerance, line);
  }
}

void Speed(const Args& a, const ht::DeviceCapabilities& caps) {
  std::printf("\n%-12s %12s %10s %12s %10s\n", "precision", "step (s)",
              "speedup", "peak (MiB)", "peak/fp32");
  double fp32_step = 0, fp32_peak = 0;
  for (ht::Precision p : kAllModes) {
    if (!caps.Supports(p)) continue;
    ht::TrainOptions o;
    o.model.builtin = a.cuda ? "gpt-small" : "gpt-micro";
    o.data.kind = ht::DataKind::kSynthetic;
    o.data.seq_len = a.cuda ? 1024 : 256;
    o.data.synthetic_tokens = 1 << 20;
    o.data.eval_fraction = 0;
    o.batch_size = 16;
    o.steps = 12;
    o.threads = 2;
    o.eval.every_steps = 0;
    o.eval.batches = 0;
    o.checkpoint.every_steps = 0;
    o.precision = p;
    o.device = a.device();
    Run r = DoTrain(o);
    if (!r.status.ok()) {
      Check(false, std::string("speed: ") + ht::PrecisionName(p) + ": " +
                       r.status.message);
      continue;
    }
    std::vector<double> t(r.step_seconds.begin() + 2, r.step_seconds.end());
    std::sort(t.begin(), t.end());
    const double step = t[t.size() / 2];
    const double peak = static_cast<double>(r.summary.peak_memory_bytes);
    if (p == ht::Precision::kFp32) fp32_step = step, fp32_peak = peak;
    std::printf("%-12s %12.4f %9.2fx %12.1f %10.3f\n", ht::PrecisionName(p),
                step, fp32_step / step, peak / 1048576.0, peak / fp32_peak);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    const bool has_value = i + 1 < argc;
    if (flag == "--device" && has_value) {
      a.cuda = std::string(argv[++i]) == "cuda";
    } else if (flag == "--speed") {
      a.speed = true;
    } else if (flag == "--python" && has_value) {
      a.python = argv[++i];
    } else if (flag == "--fixtures" && has_value) {
      a.fixtures = argv[++i];
    } else if (flag == "--work" && has_value) {
      a.work = argv[++i];
    } else {
      std::fprintf(stderr,
                   "usage: %s [--device cuda|cpu] [--speed] [--python PATH] "
                   "[--fixtures DIR] [--work DIR]\n",
                   argv[0]);
      return 2;
    }
  }
  fs::create_directories(a.work);
  if (a.cuda && !ht::CudaAvailable()) {
    std::fprintf(stderr,
                 "--device cuda: no CUDA device (a CPU-only libtorch, or no "
                 "GPU visible)\n");
    return 2;
  }
  const ht::DeviceCapabilities caps = ht::ProbeDevice(2, a.cuda);
  std::printf(
      "device: %s %s (compute capability %s), %.1f GiB\n", caps.kind.c_str(),
      caps.name.c_str(),
      caps.compute_capability.empty() ? "n/a" : caps.compute_capability.c_str(),
      caps.memory_bytes / 1073741824.0);
  std::printf("matmul TFLOP/s: fp32 %.1f, tf32 %.1f, fp16 %.1f, bf16 %.1f\n",
              caps.fp32_flops / 1e12, caps.tf32_flops / 1e12,
              caps.fp16_flops / 1e12, caps.bf16_flops / 1e12);
  std::printf("native:");
  for (ht::Precision p : caps.native_precisions) {
    std::printf(" %s", ht::PrecisionName(p));
  }
  std::printf("\n\n");
  GatingAndQuality(a, caps);
  Overflow(a, caps);
  Parity(a, caps);
  if (a.speed) Speed(a, caps);
  std::printf("\n%s: %d check(s) failed\n", failures ? "FAILED" : "OK",
              failures);
  return failures ? 1 : 0;
}
