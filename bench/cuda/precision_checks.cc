// precision_checks: the engine's precision checks on one device, for a
// CUDA machine (bench/cuda/run.sh; the CPU run is a CTest smoke test).
//
//   precision_checks [--device cuda|cpu] [--speed] [--python PATH]
//                    [--fixtures DIR] [--work DIR] [--json PATH]
//
// 1. The probe: what the device is, which precisions it runs natively and
//    its measured GEMM rate per dtype.
// 2. Gating: every precision the device does not run natively fails at
//    start with kUnsupported and a message naming the precision.
// 3. Quality: a GPT (gpt-small on CUDA, a tiny one on the CPU) pre-trained
//    in fp32 on one text is fine-tuned on another in every native
//    precision; each final eval loss must be within 2% of fp32's.
// 4. Overflow: a 16-bit mixed run from init_scale 2^120, growing after
//    every clean step (2^24 cap lifted), overflows at the ceiling, skips
//    those steps, backs off and trains between them.
// 5. Parity with PyTorch (when --python has torch for this device): fp32
//    losses within 1e-4 relative over 20 steps; bf16-mixed and fp16-mixed
//    (CUDA) step-1 and every later loss within 1e-2 of torch.autocast; and
//    for fp16-mixed, the loss scale of every step identical to GradScaler's
//    when both start at 2^40 and grow every 3 clean steps (overflows,
//    back-offs and regrowth).
// 6. With --speed: step time, tokens/s, MFU against the probed bf16 GEMM
//    ceiling and peak memory of gpt-micro (CPU) or gpt-small (CUDA) per
//    native precision, with PyTorch's step time for the same model beside
//    ours (bench/cuda/pytorch_speed.py, CUDA only).
// Exits 0 when every check passes, 1 when one fails, 2 when the device is
// missing; prints one line per check. With --json, also writes every result
// to PATH (rewritten after each section, so a run cut short keeps what it
// measured).

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/step_stats.h"
#include "engine/train.h"
#include "tests/engine/test_util.h"

namespace ht = halftime::engine;
namespace testing = halftime::engine::testing;
namespace fs = std::filesystem;

namespace {

struct Args {
  bool cuda = true;
  bool speed = false;
  std::string python = "/usr/bin/python3";
  std::string fixtures;  // tests/engine/python
  std::string work = "/tmp/halftime-precision-checks";
  std::string json;  // results file; empty: none
  ht::DeviceRequest device() const {
    return cuda ? ht::DeviceRequest::kCuda : ht::DeviceRequest::kCpu;
  }
};

using Json = nlohmann::ordered_json;

// Every result, per section, written out after each section.
struct Results {
  std::string path;
  Json device;                   // an object, null until probed
  Json checks = Json::array();   // objects: name, pass, detail
  Json quality = Json::array();  // objects per precision
  Json parity = Json::array();   // objects per precision
  Json speed = Json::array();    // objects per precision
  int failures = 0;

  void Write() const {
    if (path.empty()) return;
    const Json o = {{"device", device},   {"checks", checks},
                    {"quality", quality}, {"parity", parity},
                    {"speed", speed},     {"failures", failures}};
    const std::string tmp = path + ".tmp";
    std::ofstream(tmp) << o.dump(2, ' ', false, Json::error_handler_t::replace)
                       << "\n";
    fs::rename(tmp, path);
  }
};

// Shortest round-trip text of `v` (as the results file writes it).
std::string Number(double v) { return Json(v).dump(); }

// `v` as one line of numbers, for the log.
std::string Series(const std::vector<double>& v) {
  std::string out;
  for (double x : v) out += (out.empty() ? "" : " ") + Number(x);
  return out;
}

Results results;

void Check(bool ok, const std::string& what) {
  std::printf("%s  %s\n", ok ? "PASS" : "FAIL", what.c_str());
  std::fflush(stdout);
  if (!ok) ++results.failures;
  results.checks.push_back({{"name", what.substr(0, what.find(':'))},
                            {"pass", ok},
                            {"detail", what}});
}

// The text job of the quality and overflow checks on the device under
// test: gpt-small on CUDA, the trainer tests' tiny GPT on the CPU, over a
// byte-level corpus.
ht::TrainOptions TextJob(const Args& a, const std::string& path) {
  ht::TrainOptions o = testing::TinyTextJob(path);
  if (a.cuda) {
    o.model.gpt = {};  // the gpt-small preset as it is
    o.model.builtin = "gpt-small";
    o.data.seq_len = 256;
    o.optimizer.lr = 3e-4;
  }
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
  std::vector<double> scales;
  std::vector<double> step_seconds;
  std::vector<double> model_flops;
};

Run DoTrain(const ht::TrainOptions& o) {
  Run r;
  ht::TrainCallbacks cb;
  cb.on_step = [&r](const ht::StepReport& s) {
    r.losses.push_back(s.loss);
    r.scales.push_back(s.loss_scale);
    r.step_seconds.push_back(s.step_seconds);
    r.model_flops.push_back(s.model_flops_per_second);
  };
  r.status = ht::Train(o, cb, &r.summary);
  return r;
}

const std::vector<ht::Precision> kAllModes = {
    ht::Precision::kFp32,       ht::Precision::kTf32,
    ht::Precision::kFp16Mixed,  ht::Precision::kBf16Mixed,
    ht::Precision::kFp16Master, ht::Precision::kBf16Master,
    ht::Precision::kBf16Pure};

// Final eval loss per precision, for the speed table.
std::map<std::string, double> final_eval_loss;

void GatingAndQuality(const Args& a, const ht::DeviceCapabilities& caps) {
  const std::string pre_text = a.work + "/pre.txt";
  const std::string tune_text = a.work + "/tune.txt";
  testing::WriteBytes(pre_text, testing::MakeCorpus(40000));
  testing::WriteBytes(tune_text, testing::MakeCorpus(40000, /*seed=*/99));
  int refused = 0;
  for (ht::Precision p : kAllModes) {
    if (caps.Supports(p)) continue;
    ht::TrainOptions o = TextJob(a, tune_text);
    o.precision = p;
    o.steps = 2;
    o.allow_emulation = false;  // the default: native precisions only
    const Run r = DoTrain(o);
    ++refused;
    // A mode the device emulates is refused too, naming how to allow it.
    Check(
        r.status.code == ht::TrainStatus::kUnsupported &&
            r.status.message.find(ht::PrecisionName(p)) != std::string::npos &&
            (!caps.Emulates(p) ||
             r.status.message.find("resources.emulation: allow") !=
                 std::string::npos),
        std::string("gating: ") + ht::PrecisionName(p) +
            " refused at start: " + r.status.message);
  }
  if (refused == 0) {
    std::printf(
        "INFO  gating: the device runs every precision natively; "
        "nothing to refuse\n");
  }
  ht::TrainOptions pre = TextJob(a, pre_text);
  pre.out_dir = a.work + "/pre";
  const Run base = DoTrain(pre);
  Check(base.status.ok(), "quality: fp32 pre-training " + base.status.message);
  if (!base.status.ok()) return;
  double fp32_eval = 0;
  // Every mode the device runs, natively or (allowed) emulated.
  for (ht::Precision p : kAllModes) {
    if (!caps.Supports(p) && !caps.Emulates(p)) continue;
    ht::TrainOptions o = TextJob(a, tune_text);
    o.allow_emulation = true;
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
    final_eval_loss[ht::PrecisionName(p)] = r.summary.eval_loss;
    char line[240];
    std::snprintf(line, sizeof(line),
                  "quality: %-11s%s eval loss %.4f (fp32 %.4f, %+.2f%%), %lld "
                  "skipped steps, final scale %g",
                  ht::PrecisionName(p), r.summary.emulated ? " (emulated)" : "",
                  r.summary.eval_loss, fp32_eval,
                  100.0 * (r.summary.eval_loss - fp32_eval) / fp32_eval,
                  static_cast<long long>(r.summary.skipped_steps),
                  r.summary.final_loss_scale);
    Check(rel <= 0.02, line);
    results.quality.push_back(
        {{"precision", ht::PrecisionName(p)},
         {"emulated", r.summary.emulated},
         {"model", o.model.builtin},
         {"steps", static_cast<int64_t>(o.steps)},
         {"eval_loss", r.summary.eval_loss},
         {"fp32_eval_loss", fp32_eval},
         {"relative_to_fp32", rel},
         {"final_train_loss", r.summary.final_loss},
         {"skipped_steps", r.summary.skipped_steps},
         {"final_loss_scale", r.summary.final_loss_scale}});
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
  char line[240];
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

bool PythonHasTorchFor(const Args& a) {
  return Shell(a.python + " -c 'import torch,sys; sys.exit(0 if " +
               (a.cuda ? "torch.cuda.is_available()" : "True") +
               " else 1)' 2>/dev/null") == 0;
}

void Parity(const Args& a, const ht::DeviceCapabilities& caps) {
  const std::string device = a.cuda ? "cuda" : "cpu";
  if (a.fixtures.empty() || !PythonHasTorchFor(a)) {
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
    bool provoke_overflows;  // start at 2^40, grow every 3 clean steps
  };
  std::vector<Mode> modes = {{ht::Precision::kFp32, 1e-4, false},
                             {ht::Precision::kBf16Mixed, 1e-2, false},
                             {ht::Precision::kFp16Mixed, 1e-2, false}};
  if (a.cuda) modes.push_back({ht::Precision::kFp16Mixed, 1e-2, true});
  for (const Mode& m : modes) {
    if (!caps.Supports(m.precision)) continue;
    ht::TrainOptions o =
        testing::GptParityJob(m.precision, a.work + "/tokens.pt");
    o.device = a.device();
    std::string extra;
    if (m.provoke_overflows) {
      o.loss_scaling.mode = ht::LossScalingMode::kDynamic;
      o.loss_scaling.init_scale = std::ldexp(1.0, 40);
      o.loss_scaling.max_scale = std::ldexp(1.0, 127);  // GradScaler has none
      o.loss_scaling.growth_interval = 3;
      extra = " --init-scale 1099511627776 --growth-interval 3";
    }
    const std::string name = ht::PrecisionName(m.precision);
    const std::string tag = name + (m.provoke_overflows ? "-overflows" : "");
    const std::string init = a.work + "/init-" + tag + ".safetensors";
    const std::string out = a.work + "/pytorch-" + tag + ".txt";
    const std::string scales_out = a.work + "/pytorch-" + tag + "-scales.txt";
    if (!ht::ExportInitialWeights(o, init).ok()) {
      Check(false, "parity: exporting initial weights");
      continue;
    }
    const Run ours = DoTrain(o);
    const int rc =
        Shell(a.python + " " + a.fixtures + "/gpt_parity.py " + init + " " +
              o.data.path + " " + out + " --precision " + name + " --device " +
              device + " --scales " + scales_out + " " +
              testing::kGptParityArgs + extra);
    const std::vector<double> theirs = testing::ReadNumbers(out);
    const std::vector<double> their_scales = testing::ReadNumbers(scales_out);
    double worst = 0, first = 0;
    const bool complete = rc == 0 && ours.status.ok() &&
                          ours.losses.size() == 20 && theirs.size() == 20;
    for (size_t i = 0; complete && i < 20; ++i) {
      const double rel =
          std::abs(ours.losses[i] - theirs[i]) / std::abs(theirs[i]);
      worst = std::max(worst, rel);
      if (i == 0) first = rel;
    }
    char line[300];
    if (m.provoke_overflows) {
      int overflows = 0;
      for (size_t i = 1; i < ours.scales.size(); ++i) {
        overflows += ours.scales[i] < ours.scales[i - 1];
      }
      const bool same = complete && ours.scales == their_scales;
      std::snprintf(line, sizeof(line),
                    "parity: %s loss scale per step against GradScaler from "
                    "2^40, growth every 3 steps: %s (%d back-offs); worst "
                    "relative loss difference %.2e",
                    name.c_str(), same ? "identical" : "DIFFERENT", overflows,
                    worst);
      Check(same && overflows > 0, line);
      if (!same) {
        std::printf("      ours:    %s\n      PyTorch: %s\n",
                    Series(ours.scales).c_str(), Series(their_scales).c_str());
      }
    } else {
      std::snprintf(line, sizeof(line),
                    "parity: %s against PyTorch on %s, step-1 relative loss "
                    "difference %.2e, worst over 20 steps %.2e (<= %.0e)",
                    name.c_str(), device.c_str(), first, worst, m.tolerance);
      Check(complete && worst <= m.tolerance, line);
    }
    results.parity.push_back({{"precision", tag},
                              {"complete", complete},
                              {"step1_relative_difference", first},
                              {"worst_relative_difference", worst},
                              {"tolerance", m.tolerance},
                              {"ours_losses", ours.losses},
                              {"pytorch_losses", theirs},
                              {"ours_scales", ours.scales},
                              {"pytorch_scales", their_scales}});
  }
}

// PyTorch's median step seconds per mode (bench/cuda/pytorch_speed.py), or
// none when it cannot run here.
std::map<std::string, double> PyTorchStepSeconds(const Args& a,
                                                 const std::string& modes) {
  std::map<std::string, double> out;
  if (!a.cuda || a.fixtures.empty() || !PythonHasTorchFor(a)) return out;
  const std::string script =
      (fs::path(a.fixtures) / "../../../../bench/cuda/pytorch_speed.py")
          .lexically_normal()
          .string();
  const std::string file = a.work + "/pytorch-speed.jsonl";
  if (Shell(a.python + " " + script + " --modes " + modes + " > " + file) !=
      0) {
    Check(false, "speed: pytorch_speed.py failed (see the log)");
  }
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    // {"mode": "fp32", "step_seconds": 0.25, ...}; other lines are skipped.
    const Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("mode") || !j["mode"].is_string() ||
        !j.contains("step_seconds") || !j["step_seconds"].is_number()) {
      continue;
    }
    out[j["mode"].get<std::string>()] = j["step_seconds"].get<double>();
  }
  return out;
}

void Speed(const Args& a, const ht::DeviceCapabilities& caps) {
  const double ceiling =
      caps.bf16_flops > 0 ? caps.bf16_flops : caps.fp32_flops;
  const int64_t batch = 16, seq = a.cuda ? 1024 : 256;
  std::string modes;
  for (ht::Precision p : kAllModes) {
    if (caps.Supports(p)) {
      modes += (modes.empty() ? "" : ",") + std::string(ht::PrecisionName(p));
    }
  }
  const std::map<std::string, double> theirs = PyTorchStepSeconds(a, modes);
  std::printf(
      "\n%s, batch %lld x seq %lld; MFU against the probed bf16 GEMM rate "
      "(%.1f TFLOP/s)\n%-12s %10s %8s %12s %7s %11s %10s %11s %10s\n",
      a.cuda ? "gpt-small" : "gpt-micro", static_cast<long long>(batch),
      static_cast<long long>(seq), ceiling / 1e12, "precision", "step (s)",
      "vs fp32", "tokens/s", "MFU", "peak (MiB)", "final loss", "PyTorch (s)",
      "ours/PT");
  double fp32_step = 0;
  for (ht::Precision p : kAllModes) {
    if (!caps.Supports(p)) continue;
    ht::TrainOptions o;
    o.model.builtin = a.cuda ? "gpt-small" : "gpt-micro";
    o.data.kind = ht::DataKind::kSynthetic;
    o.data.seq_len = seq;
    o.data.synthetic_tokens = 1 << 20;
    o.data.eval_fraction = 0;
    o.batch_size = batch;
    o.steps = 12;
    o.threads = 2;
    o.eval.every_steps = 0;
    o.eval.batches = 0;
    o.checkpoint.every_steps = 0;
    o.precision = p;
    o.device = a.device();
    Run r = DoTrain(o);
    const std::string name = ht::PrecisionName(p);
    if (!r.status.ok()) {
      Check(false, "speed: " + name + ": " + r.status.message);
      continue;
    }
    const double step = ht::SteadyMedian(r.step_seconds);
    const double tokens = batch * seq / step;
    const double flops = ht::SteadyMedian(r.model_flops);
    const double mfu = ceiling > 0 ? flops / ceiling : 0;
    const double peak = static_cast<double>(r.summary.peak_memory_bytes);
    if (p == ht::Precision::kFp32) fp32_step = step;
    const auto it = theirs.find(name);
    const double pt = it == theirs.end() ? 0 : it->second;
    const auto loss = final_eval_loss.find(name);
    std::printf(
        "%-12s %10.4f %7.2fx %12.0f %6.1f%% %11.1f %10s %11s %10s\n",
        name.c_str(), step, fp32_step / step, tokens, 100 * mfu,
        peak / 1048576.0,
        loss == final_eval_loss.end()
            ? "-"
            : Number(std::round(loss->second * 1e4) / 1e4).c_str(),
        pt > 0 ? Number(std::round(pt * 1e4) / 1e4).c_str() : "-",
        pt > 0 ? Number(std::round(step / pt * 1e3) / 1e3).c_str() : "-");
    std::fflush(stdout);
    Json row = {{"precision", name},
                {"model", o.model.builtin},
                {"batch", batch},
                {"seq", seq},
                {"step_seconds", step},
                {"speedup_vs_fp32", fp32_step / step},
                {"tokens_per_second", tokens},
                {"model_flops_per_second", flops},
                {"mfu_vs_bf16_ceiling", mfu},
                {"peak_memory_bytes", r.summary.peak_memory_bytes},
                {"step_seconds_all", r.step_seconds}};
    if (loss != final_eval_loss.end()) row["final_eval_loss"] = loss->second;
    if (pt > 0) {
      row["pytorch_step_seconds"] = pt;
      row["ours_over_pytorch"] = step / pt;
    }
    results.speed.push_back(std::move(row));
    results.Write();
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
    } else if (flag == "--json" && has_value) {
      a.json = argv[++i];
    } else {
      std::fprintf(stderr,
                   "usage: %s [--device cuda|cpu] [--speed] [--python PATH] "
                   "[--fixtures DIR] [--work DIR] [--json PATH]\n",
                   argv[0]);
      return 2;
    }
  }
  fs::create_directories(a.work);
  results.path = a.json;
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
  Json native = Json::array();
  std::printf("native:");
  for (ht::Precision p : caps.native_precisions) {
    std::printf(" %s", ht::PrecisionName(p));
    native.push_back(ht::PrecisionName(p));
  }
  std::printf("\n\n");
  results.device = {{"kind", caps.kind},
                    {"name", caps.name},
                    {"compute_capability", caps.compute_capability},
                    {"memory_bytes", caps.memory_bytes},
                    {"fp32_flops", caps.fp32_flops},
                    {"tf32_flops", caps.tf32_flops},
                    {"fp16_flops", caps.fp16_flops},
                    {"bf16_flops", caps.bf16_flops},
                    {"native_precisions", native}};
  results.Write();
  GatingAndQuality(a, caps);
  results.Write();
  Overflow(a, caps);
  results.Write();
  Parity(a, caps);
  results.Write();
  if (a.speed) Speed(a, caps);
  results.Write();
  std::printf("\n%s: %d check(s) failed\n", results.failures ? "FAILED" : "OK",
              results.failures);
  return results.failures ? 1 : 0;
}
