// bench_engine: the training engine's overhead, speed and memory, side by
// side, on gpt-micro (run by hand; not part of CI).
//
//   bench_engine [--threads N] [--steps N] [--batch N] [--seq N]
//                 [--rounds N] [--overhead-only] [--memory-only]
//                 [--vs-pytorch-only] [--gemm-only] [--llama-only]
//                 [--lora-only]
//
// Chooses OPENBLAS_CORETYPE from /proc/cpuinfo as halftime-train does
// (train/blas_env.h). On a machine shared with other work, also set
// OMP_WAIT_POLICY=passive: spinning OpenMP workers on busy cores slow every
// mode by an order of magnitude.
//
// Prints (a) the engine's step time against a bare libtorch loop of the same
// model and precision, alternated over --rounds (target <= 1.03x), (b)
// bf16-mixed against fp32 step time (target >= 2.5x), (c) peak tensor memory of
// each bf16 mode relative to fp32 (targets: bf16-mixed <= 0.7, bf16-master <=
// 0.65, bf16-pure <= 0.5), and (d) our fp32 and bf16-mixed step times
// against PyTorch's own (bench/engine/pytorch_autocast.py, in its fastest
// arrangement here) on three shapes: the demo's gpt-nano, gpt-micro and a
// wide one (768 x 2 layers), alternating ours and PyTorch's run by run over
// --rounds (target: ours <= PyTorch's), with MFU (model FLOP/s over the
// probed GEMM rate of the mode's dtype) per mode; and (e) with
// --gemm-only, emulated bf16 (bf16 operands widened to fp32, fp32 BLAS,
// result rounded to bf16: engine/bf16_emulation.h) against fp32 at
// gpt-micro's GEMM shapes, forward and backward, alternating fp32 and bf16
// shape by shape over --rounds (target: within 15% of fp32), beside
// libtorch's own bf16 kernels (native ones where the CPU has them, else its
// naive loops, timed once); and (f) with --llama-only (and at the end of a
// full run), a ~25M-parameter Llama read from a Hugging Face folder
// (bench/engine/pytorch_llama.py writes it) against the same model written
// in plain PyTorch, fp32 and bf16-mixed, alternating run by run (target:
// ours <= PyTorch's); and (g) with --lora-only, the same Llama's step time
// and peak memory fine-tuned in full (fp32, bf16-mixed) and with LoRA on
// fp32, bf16 and nf4 bases.

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/baseline_check.h"
#include "engine/bf16_emulation.h"
#include "engine/data.h"
#include "engine/device.h"
#include "engine/model.h"
#include "engine/models/kernels.h"
#include "engine/train.h"
#include "train/blas_env.h"

namespace ht = halftime::engine;

namespace {

struct Config {
  int threads = 2;
  int steps = 8;
  int warmup = 2;
  int batch = 16;
  int seq = 256;
  // Alternating bare/engine rounds for (a).
  int rounds = 3;
  // Only (a).
  bool overhead_only = false;
  // Only (c): peaks are deterministic, so one short run of each mode.
  bool memory_only = false;
  // Only (d).
  bool vs_pytorch_only = false;
  // Only (e).
  bool gemm_only = false;
  // Only (f).
  bool llama_only = false;
  // Only (g).
  bool lora_only = false;
};

// A model and batch shape of (d).
struct Shape {
  const char* name;
  const char* builtin;
  int n_layer, n_embd, n_head, batch, seq;
};

// The demo's fine-tune shape, gpt-micro, and a wide one whose GEMMs are
// larger than gpt-micro's (k = 768, 3072).
constexpr Shape kShapes[] = {
    {"gpt-nano (demo)", "gpt-nano", 4, 128, 4, 16, 64},
    {"gpt-micro", "gpt-micro", 6, 384, 6, 16, 256},
    {"wide 768x2", "gpt-micro", 2, 768, 12, 8, 256},
};

struct Result {
  double step_seconds = 0;
  int64_t peak_bytes = 0;
  double loss = 0;
  double flops_per_step = 0;  // model FLOPs of one step
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

ht::TrainOptions Options(const Config& c, ht::Precision p) {
  ht::TrainOptions o;
  o.model.builtin = "gpt-micro";
  o.data.kind = ht::DataKind::kSynthetic;
  o.data.seq_len = c.seq;
  o.data.synthetic_tokens = 1 << 18;
  o.precision = p;
  o.batch_size = c.batch;
  o.steps = c.steps + c.warmup;
  o.threads = c.threads;
  o.eval.every_steps = 0;
  o.eval.batches = 0;
  o.data.eval_fraction = 0.0;
  o.checkpoint.every_steps = 0;
  o.optimizer.lr = 3e-4;
  o.allow_emulation = true;  // bf16 without native bf16: emulated
  return o;
}

Result Engine(const Config& c, ht::Precision p,
              ht::PureUpdate update = ht::PureUpdate::kKahan,
              const Shape* shape = nullptr) {
  std::vector<double> times;
  ht::TrainCallbacks cb;
  Result r;
  cb.on_step = [&](const ht::StepReport& s) {
    if (s.step > c.warmup) times.push_back(s.step_seconds);
    r.loss = s.loss;
    r.flops_per_step = s.model_flops_per_second * s.step_seconds;
  };
  ht::TrainSummary sum;
  ht::TrainOptions o = Options(c, p);
  if (shape != nullptr) {
    o.model.builtin = shape->builtin;
    o.model.gpt.n_layer = shape->n_layer;
    o.model.gpt.n_embd = shape->n_embd;
    o.model.gpt.n_head = shape->n_head;
    o.batch_size = shape->batch;
    o.data.seq_len = shape->seq;
  }
  o.optimizer.pure_update = update;
  ht::TrainStatus st = ht::Train(o, cb, &sum);
  if (!st.ok()) {
    std::fprintf(stderr, "%s: %s\n", ht::PrecisionName(p), st.message.c_str());
    std::exit(1);
  }
  r.step_seconds = Median(times);
  r.peak_bytes = sum.peak_memory_bytes;
  return r;
}

// The same model, data and update written as a plain libtorch loop:
// torch::optim::AdamW, clip_grad_norm_, autocast for bf16-mixed.
Result Bare(const Config& c, bool bf16) {
  at::set_num_threads(c.threads);
  torch::manual_seed(1);
  ht::DataOptions d;
  d.kind = ht::DataKind::kSynthetic;
  d.seq_len = c.seq;
  d.synthetic_tokens = 1 << 18;
  d.eval_fraction = 0;
  std::unique_ptr<ht::Dataset> data;
  ht::Dataset::Open(d, 1, c.batch, &data);
  ht::GptConfig g;
  ht::GptPreset("gpt-micro", {}, 256, &g);
  auto model = ht::MakeGpt(g);
  std::vector<at::Tensor> params;
  for (auto& [n, p] : model->NamedParameters()) {
    p.requires_grad_(true);
    params.push_back(p);
  }
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(3e-4));
  std::vector<double> times;
  Result r;
  for (int step = 0; step < c.steps + c.warmup; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    opt.zero_grad();
    ht::Batch b = data->TrainBatch(step);
    at::Tensor loss;
    {
      ht::AutocastGuard ac(bf16, false, true);
      loss = model->Loss(b);
    }
    loss.backward();
    torch::nn::utils::clip_grad_norm_(params, 1.0);
    opt.step();
    r.loss = loss.item<double>();
    const double dt =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
    if (step >= c.warmup) times.push_back(dt);
  }
  r.step_seconds = Median(times);
  return r;
}

// PyTorch's median step time for `shape` in fp32 or bf16-mixed, from
// pytorch_autocast.py in a child process (its own libtorch, same BLAS and
// OPENBLAS_CORETYPE); 0 when it fails.
double PyTorch(const Config& c, const Shape& shape, bool bf16) {
  char command[1024];
  std::snprintf(command, sizeof(command),
                "/usr/bin/python3 %s/bench/engine/pytorch_autocast.py --json "
                "--threads %d --steps %d --warmup %d --batch %d --seq %d "
                "--layers %d --embd %d --heads %d --vocab 256 --mode %s",
                HALFTIME_SOURCE_DIR, c.threads, c.steps, c.warmup, shape.batch,
                shape.seq, shape.n_layer, shape.n_embd, shape.n_head,
                bf16 ? "bf16-mixed" : "fp32");
  std::FILE* pipe = popen(command, "r");
  if (pipe == nullptr) return 0;
  char line[4096];
  double seconds = 0;
  while (std::fgets(line, sizeof(line), pipe) != nullptr) {
    // {"step_seconds": 0.25, ...}; other lines are skipped.
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("step_seconds") &&
        j["step_seconds"].is_number()) {
      seconds = j["step_seconds"].get<double>();
    }
  }
  if (pclose(pipe) != 0) return 0;
  return seconds;
}

// (d): ours against PyTorch on each shape, fp32 and bf16-mixed, alternating
// run by run; the figure per mode is the median of the per-round ratios.
void VsPyTorch(const Config& c) {
  std::printf(
      "(d) ours vs PyTorch's best, median of %d alternating rounds (%d steps "
      "after %d warm-up each; target: ours/PyTorch <= 1.00)\n",
      c.rounds, c.steps, c.warmup);
  std::printf("%-16s %-10s %10s %10s %8s %7s\n", "shape", "mode", "ours (s)",
              "PyTorch", "ratio", "MFU");
  for (const Shape& shape : kShapes) {
    for (const bool bf16 : {false, true}) {
      std::vector<double> ours, theirs, ratios;
      double flops_per_step = 0, ceiling = 0;
      const ht::Precision precision =
          bf16 ? ht::Precision::kBf16Mixed : ht::Precision::kFp32;
      for (int round = 0; round < c.rounds; ++round) {
        const Result r = Engine(c, precision, ht::PureUpdate::kKahan, &shape);
        // The ceiling summary.json divides by, measured right after the
        // run (the best of the rounds: what the machine sustains).
        ceiling = std::max(ceiling, ht::GemmCeilingFlops(precision, false));
        const double pt = PyTorch(c, shape, bf16);
        flops_per_step = r.flops_per_step;
        ours.push_back(r.step_seconds);
        theirs.push_back(pt);
        if (pt > 0) ratios.push_back(r.step_seconds / pt);
      }
      const double mfu =
          ceiling > 0 ? flops_per_step / Median(ours) / ceiling : 0;
      std::printf("%-16s %-10s %10.4f %10.4f %7.3fx %6.1f%%\n", shape.name,
                  bf16 ? "bf16-mixed" : "fp32", Median(ours), Median(theirs),
                  ratios.empty() ? 0.0 : Median(ratios), 100 * mfu);
      std::fflush(stdout);
    }
  }
}

// (f)'s Llama: ~25M parameters (hidden 512, 7 layers, 8 query and 4
// key/value heads, SwiGLU 1408, vocabulary 8192, tied), batch 8 x seq 256.
constexpr char kLlamaShape[] =
    "--hidden 512 --layers 7 --heads 8 --kv-heads 4 --intermediate 1408 "
    "--vocab 8192";
constexpr int kLlamaBatch = 8, kLlamaSeq = 256, kLlamaVocab = 8192;

// Runs bench/engine/pytorch_llama.py with `args`; the value of `key` in the
// last JSON line it prints, or 0 when it fails.
double PyTorchLlama(const std::string& args, const char* key) {
  const std::string command = std::string("/usr/bin/python3 ") +
                              HALFTIME_SOURCE_DIR +
                              "/bench/engine/pytorch_llama.py " + args;
  std::FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return 0;
  char line[4096];
  double value = 0;
  while (std::fgets(line, sizeof(line), pipe) != nullptr) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains(key) && j[key].is_number()) {
      value = j[key].get<double>();
    }
  }
  if (pclose(pipe) != 0) return 0;
  return value;
}

// (f): a ~25M-parameter Llama from a Hugging Face folder, ours against the
// same model in plain PyTorch, fp32 and bf16-mixed, alternating run by run.
void VsPyTorchLlama(const Config& c) {
  char folder_template[] = "/tmp/halftime-bench-llama-XXXXXX";
  const char* folder = mkdtemp(folder_template);
  if (folder == nullptr) return;
  const double parameters = PyTorchLlama(
      std::string("make ") + folder + " " + kLlamaShape, "parameters");
  std::printf(
      "(f) Llama from a Hugging Face folder (%.1fM parameters), batch %d x "
      "seq %d: ours vs the same model in PyTorch, median of %d alternating "
      "rounds (%d steps after %d warm-up; target: ours/PyTorch <= 1.00)\n",
      parameters / 1e6, kLlamaBatch, kLlamaSeq, c.rounds, c.steps, c.warmup);
  std::printf("%-10s %10s %10s %8s\n", "mode", "ours (s)", "PyTorch", "ratio");
  for (const bool bf16 : {false, true}) {
    const char* mode = bf16 ? "bf16-mixed" : "fp32";
    std::vector<double> ours, theirs, ratios;
    for (int round = 0; round < c.rounds; ++round) {
      std::vector<double> times;
      ht::TrainCallbacks cb;
      cb.on_step = [&](const ht::StepReport& s) {
        if (s.step > c.warmup) times.push_back(s.step_seconds);
      };
      ht::TrainOptions o =
          Options(c, bf16 ? ht::Precision::kBf16Mixed : ht::Precision::kFp32);
      o.model.pretrained = folder;
      o.data.vocab_size = kLlamaVocab;
      o.data.seq_len = kLlamaSeq;
      o.batch_size = kLlamaBatch;
      const ht::TrainStatus st = ht::Train(o, cb, nullptr);
      if (!st.ok()) {
        std::fprintf(stderr, "llama: %s\n", st.message.c_str());
        return;
      }
      const std::string args =
          "time " + std::string(kLlamaShape) + " --threads " +
          std::to_string(c.threads) + " --steps " + std::to_string(c.steps) +
          " --warmup " + std::to_string(c.warmup) + " --batch " +
          std::to_string(kLlamaBatch) + " --seq " + std::to_string(kLlamaSeq) +
          " --mode " + mode +
          // PyTorch's CPU autocast without native bf16 runs naive kernels
          // (minutes per step here): skip timing both AdamW variants.
          (bf16 && ht::ProbeDevice(c.threads, false).bf16_emulated
               ? " --foreach on"
               : "");
      const double pt = PyTorchLlama(args, "step_seconds");
      ours.push_back(Median(times));
      theirs.push_back(pt);
      if (pt > 0) ratios.push_back(ours.back() / pt);
      std::printf("  round %d %-10s ours %.4f PyTorch %.4f\n", round + 1, mode,
                  ours.back(), pt);
      std::fflush(stdout);
    }
    std::printf("%-10s %10.4f %10.4f %7.3fx\n", mode, Median(ours),
                Median(theirs), ratios.empty() ? 0.0 : Median(ratios));
    std::fflush(stdout);
  }
  std::error_code ec;
  std::filesystem::remove_all(folder, ec);
}

// (g): the same Llama, fine-tuned in full and with LoRA on fp32, bf16 and
// nf4 bases: step time and peak tensor memory, alternating the five
// configurations round by round.
void LoraTable(const Config& c) {
  char folder_template[] = "/tmp/halftime-bench-lora-XXXXXX";
  const char* folder = mkdtemp(folder_template);
  if (folder == nullptr) return;
  const double parameters = PyTorchLlama(
      std::string("make ") + folder + " " + kLlamaShape, "parameters");
  struct Row {
    const char* name;
    ht::Precision precision;
    bool lora;
    ht::BaseDtype base;
    std::vector<double> seconds = {};
    int64_t peak = 0;
    int64_t trainable = 0;
  };
  const bool emulated = ht::ProbeDevice(c.threads, false).bf16_emulated;
  std::vector<Row> rows = {
      {"full fp32", ht::Precision::kFp32, false, ht::BaseDtype::kDefault},
      {"full bf16-mixed", ht::Precision::kBf16Mixed, false,
       ht::BaseDtype::kDefault},
      {"LoRA, fp32 base", ht::Precision::kFp32, true, ht::BaseDtype::kFp32},
      {"LoRA, bf16 base", ht::Precision::kBf16Mixed, true,
       ht::BaseDtype::kBf16},
      {"LoRA, nf4 base", ht::Precision::kBf16Mixed, true, ht::BaseDtype::kNf4},
  };
  std::printf(
      "(g) Llama (%.1fM parameters), batch %d x seq %d, full fine-tuning "
      "against LoRA (rank 16, all-linear) on fp32, bf16 and nf4 bases; "
      "bf16 rows compute in bf16%s; median step of %d alternating rounds "
      "(%d steps after %d warm-up)\n",
      parameters / 1e6, kLlamaBatch, kLlamaSeq,
      emulated ? " (emulated on this CPU)" : "", c.rounds, c.steps, c.warmup);
  for (int round = 0; round < c.rounds; ++round) {
    for (Row& r : rows) {
      std::vector<double> times;
      ht::TrainCallbacks cb;
      cb.on_step = [&](const ht::StepReport& s) {
        if (s.step > c.warmup) times.push_back(s.step_seconds);
      };
      ht::TrainOptions o = Options(c, r.precision);
      o.model.pretrained = folder;
      o.data.vocab_size = kLlamaVocab;
      o.data.seq_len = kLlamaSeq;
      o.batch_size = kLlamaBatch;
      o.allow_emulation = true;
      if (r.lora) {
        o.adapter.kind = ht::AdapterKind::kLora;
        o.adapter.rank = 16;
        o.adapter.alpha = 32;
        o.adapter.target_modules = {"all-linear"};
        o.adapter.base_dtype = r.base;
      }
      ht::TrainSummary summary;
      const ht::TrainStatus st = ht::Train(o, cb, &summary);
      if (!st.ok()) {
        std::fprintf(stderr, "%s: %s\n", r.name, st.message.c_str());
        return;
      }
      r.seconds.push_back(Median(times));
      r.peak = summary.peak_memory_bytes;
      r.trainable = summary.trainable_parameters;
      std::printf("  round %d %-16s %.4f s/step, peak %.1f MiB\n", round + 1,
                  r.name, r.seconds.back(), r.peak / 1048576.0);
      std::fflush(stdout);
    }
  }
  const double base_time = Median(rows[0].seconds);
  const double base_peak = static_cast<double>(rows[0].peak);
  std::printf("%-16s %12s %10s %12s %10s %12s\n", "configuration", "s/step",
              "vs full", "peak MiB", "vs full", "trainable");
  for (const Row& r : rows) {
    std::printf("%-16s %12.4f %9.2fx %12.1f %9.2fx %12lld\n", r.name,
                Median(r.seconds), Median(r.seconds) / base_time,
                r.peak / 1048576.0, r.peak / base_peak,
                static_cast<long long>(r.trainable));
  }
  std::fflush(stdout);
  std::error_code ec;
  std::filesystem::remove_all(folder, ec);
}

// Seconds of the best of `reps` forward+backward passes of Linear on
// [n, in] x [out, in] in `dtype`, with bf16 `emulated` (forced) or not.
double LinearSeconds(int64_t n, int64_t in, int64_t out, at::ScalarType dtype,
                     bool emulated, int reps) {
  ht::SetBf16EmulationForTesting(emulated);
  const auto opts = at::TensorOptions().dtype(dtype);
  const at::Tensor x = at::randn({n, in}).to(dtype).requires_grad_(true);
  const at::Tensor w =
      (at::randn({out, in}) * 0.02).to(dtype).requires_grad_(true);
  const at::Tensor b = at::zeros({out}, opts).requires_grad_(true);
  const at::Tensor g = at::randn({n, out}).to(dtype);
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    ht::Linear(x, w, b).backward(g);
    best = std::min(best, std::chrono::duration<double>(
                              std::chrono::steady_clock::now() - start)
                              .count());
    x.mutable_grad().reset();
    w.mutable_grad().reset();
    b.mutable_grad().reset();
  }
  ht::ClearBf16EmulationForTesting();
  return best;
}

// (e): emulated bf16 GEMMs against fp32 at gpt-micro's shapes.
void EmulatedGemms(const Config& c) {
  at::set_num_threads(c.threads);
  const int64_t n = static_cast<int64_t>(c.batch) * c.seq;
  struct Gemm {
    const char* name;
    int64_t in, out;
  };
  const Gemm gemms[] = {{"attn c_attn", 384, 1152},
                        {"attn c_proj", 384, 384},
                        {"mlp c_fc", 384, 1536},
                        {"mlp c_proj", 1536, 384}};
  constexpr int kReps = 3;
  std::printf(
      "(e) Linear forward+backward at gpt-micro's GEMM shapes (%lld rows), "
      "best of %d per round, fp32 and emulated bf16 alternating, %d rounds\n",
      static_cast<long long>(n), kReps, c.rounds);
  std::vector<std::vector<double>> ratios(std::size(gemms));
  std::vector<double> totals;
  double sum32 = 0, sum16 = 0;
  for (int round = 0; round < c.rounds; ++round) {
    double t32 = 0, t16 = 0;
    for (size_t i = 0; i < std::size(gemms); ++i) {
      const Gemm& g = gemms[i];
      const double a = LinearSeconds(n, g.in, g.out, at::kFloat, false, kReps);
      const double b =
          LinearSeconds(n, g.in, g.out, at::kBFloat16, true, kReps);
      ratios[i].push_back(b / a);
      t32 += a;
      t16 += b;
    }
    totals.push_back(t16 / t32);
    sum32 += t32;
    sum16 += t16;
    std::printf("  round %d: fp32 %.4f s, emulated bf16 %.4f s: %.3fx\n",
                round + 1, t32, t16, totals.back());
    std::fflush(stdout);
  }
  std::printf("  %-12s %18s %14s\n", "gemm", "bf16/fp32 (median)",
              "GFLOP/s fp32");
  for (size_t i = 0; i < std::size(gemms); ++i) {
    const Gemm& g = gemms[i];
    const double flops = 3 * 2.0 * n * g.in * g.out;
    std::printf(
        "  %-12s %17.3fx %14.1f\n", g.name, Median(ratios[i]),
        flops / LinearSeconds(n, g.in, g.out, at::kFloat, false, 1) / 1e9);
  }
  std::printf(
      "  all four, median of the per-round ratios: emulated bf16 takes "
      "%.3fx the fp32 time (target <= 1.15x)\n",
      Median(totals));
  // libtorch's own bf16 kernels at the first shape, once: oneDNN where the
  // CPU has native bf16, its naive loops where it has not.
  const Gemm& g = gemms[2];
  const double t32 = LinearSeconds(n, g.in, g.out, at::kFloat, false, 1);
  const double own = LinearSeconds(n, g.in, g.out, at::kBFloat16, false, 1);
  std::printf(
      "  libtorch's own bf16 kernels (%s), %s, once: %.3fx the fp32 time\n",
      ht::CpuBf16Native() ? "native" : "naive loops: no native bf16 here",
      g.name, own / t32);
}

}  // namespace

int main(int argc, char** argv) {
  halftime::EnsureOpenBlasCoreType(argv);  // as halftime-train does
  Config c;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--overhead-only") c.overhead_only = true;
    if (std::string(argv[i]) == "--memory-only") c.memory_only = true;
    if (std::string(argv[i]) == "--vs-pytorch-only") c.vs_pytorch_only = true;
    if (std::string(argv[i]) == "--gemm-only") c.gemm_only = true;
    if (std::string(argv[i]) == "--llama-only") c.llama_only = true;
    if (std::string(argv[i]) == "--lora-only") c.lora_only = true;
  }
  for (int i = 1; i + 1 < argc; ++i) {
    const std::string flag = argv[i];
    const int v = std::atoi(argv[i + 1]);
    if (flag == "--threads")
      c.threads = v;
    else if (flag == "--steps")
      c.steps = v;
    else if (flag == "--batch")
      c.batch = v;
    else if (flag == "--seq")
      c.seq = v;
    else if (flag == "--rounds")
      c.rounds = std::max(1, v);
  }
  ht::DeviceCapabilities caps = ht::ProbeDevice(c.threads, false);
  const char* core = std::getenv("OPENBLAS_CORETYPE");
  std::printf(
      "device: %s, %d threads; matmul fp32 %.0f GFLOP/s (OpenBLAS "
      "core %s), bf16 %.0f GFLOP/s (%s)\n",
      caps.name.c_str(), c.threads, caps.fp32_flops / 1e9, core ? core : "auto",
      caps.bf16_flops / 1e9,
      caps.bf16_emulated ? "emulated through fp32" : "oneDNN, native");
  const ht::BlasLibrary blas = ht::DetectBlas();
  std::printf("BLAS: %s\n", blas.Describe().c_str());
  for (const std::string& why : caps.baseline_degradations) {
    std::printf("warning: fp32 baseline degraded: %s\n", why.c_str());
  }
  if (c.vs_pytorch_only) {
    VsPyTorch(c);
    return 0;
  }
  if (c.gemm_only) {
    EmulatedGemms(c);
    return 0;
  }
  if (c.llama_only) {
    VsPyTorchLlama(c);
    return 0;
  }
  if (c.lora_only) {
    LoraTable(c);
    return 0;
  }
  std::printf(
      "gpt-micro, batch %d x seq %d, median of %d steps after %d "
      "warm-up\n\n",
      c.batch, c.seq, c.steps, c.warmup);

  // (a) alternates bare and engine runs of each precision, round after
  // round, so that this VM's slow and fast phases hit both alike; the
  // figure is the median of the per-round ratios. (b) likewise pairs the
  // fp32 and bf16-mixed engine runs of each round.
  std::vector<double> ratio32, ratio16, speedup, bare32_s, bare16_s, fp32_s,
      mixed_s;
  Result fp32, mixed;
  if (c.memory_only) {
    fp32 = Engine(c, ht::Precision::kFp32);
    mixed = Engine(c, ht::Precision::kBf16Mixed);
    fp32_s.push_back(fp32.step_seconds);
    mixed_s.push_back(mixed.step_seconds);
  }
  for (int round = 0; !c.memory_only && round < c.rounds; ++round) {
    const Result b32 = Bare(c, false);
    fp32 = Engine(c, ht::Precision::kFp32);
    const Result b16 = Bare(c, true);
    mixed = Engine(c, ht::Precision::kBf16Mixed);
    ratio32.push_back(fp32.step_seconds / b32.step_seconds);
    ratio16.push_back(mixed.step_seconds / b16.step_seconds);
    speedup.push_back(fp32.step_seconds / mixed.step_seconds);
    bare32_s.push_back(b32.step_seconds);
    bare16_s.push_back(b16.step_seconds);
    fp32_s.push_back(fp32.step_seconds);
    mixed_s.push_back(mixed.step_seconds);
    std::printf(
        "round %d: fp32 bare %.4f engine %.4f (%.3fx); bf16-mixed bare "
        "%.4f engine %.4f (%.3fx); bf16-mixed speedup %.2fx\n",
        round + 1, b32.step_seconds, fp32.step_seconds, ratio32.back(),
        b16.step_seconds, mixed.step_seconds, ratio16.back(), speedup.back());
    std::fflush(stdout);
  }
  fp32.step_seconds = Median(fp32_s);
  mixed.step_seconds = Median(mixed_s);
  if (c.overhead_only) {
    std::printf("(a) median engine/bare: fp32 %.3fx, bf16-mixed %.3fx\n",
                Median(ratio32), Median(ratio16));
    return 0;
  }
  const Result master = Engine(c, ht::Precision::kBf16Master);
  const Result pure = Engine(c, ht::Precision::kBf16Pure);
  const Result pure_sr =
      Engine(c, ht::Precision::kBf16Pure, ht::PureUpdate::kStochasticRounding);
  std::printf("\n");

  std::printf("%-12s %12s %12s %14s %10s\n", "mode", "step (s)", "vs fp32",
              "peak (MiB)", "peak/fp32");
  for (const auto& [name, r] :
       std::vector<std::pair<const char*, Result>>{{"fp32", fp32},
                                                   {"bf16-mixed", mixed},
                                                   {"bf16-master", master},
                                                   {"bf16-pure", pure},
                                                   {"bf16-pure-sr", pure_sr}}) {
    std::printf("%-12s %12.4f %11.2fx %14.1f %10.3f\n", name, r.step_seconds,
                fp32.step_seconds / r.step_seconds, r.peak_bytes / 1048576.0,
                static_cast<double>(r.peak_bytes) / fp32.peak_bytes);
  }
  if (!c.memory_only) {
    std::printf(
        "\n(a) engine vs bare libtorch loop, median of %d alternating rounds: "
        "fp32 %.3fx, bf16-mixed %.3fx (target <= 1.03x)\n",
        c.rounds, Median(ratio32), Median(ratio16));
    std::printf(
        "    median bare fp32 %.4f s/step, bare bf16-mixed %.4f s/step\n",
        Median(bare32_s), Median(bare16_s));
    std::printf(
        "(b) bf16-mixed speedup over fp32, median of the per-round speedups: "
        "%.2fx (target >= 2.5x); ratio of the median step times %.2fx\n",
        Median(speedup), fp32.step_seconds / mixed.step_seconds);
  }
  std::printf(
      "(c) peak memory vs fp32: bf16-mixed %.4f (<= 0.7), "
      "bf16-master %.4f (<= 0.65), bf16-pure %.4f Kahan / %.4f "
      "stochastic rounding (<= 0.5)\n",
      static_cast<double>(mixed.peak_bytes) / fp32.peak_bytes,
      static_cast<double>(master.peak_bytes) / fp32.peak_bytes,
      static_cast<double>(pure.peak_bytes) / fp32.peak_bytes,
      static_cast<double>(pure_sr.peak_bytes) / fp32.peak_bytes);
  std::printf(
      "    final losses: fp32 %.4f, bf16-mixed %.4f, bf16-master "
      "%.4f, bf16-pure %.4f / %.4f\n",
      fp32.loss, mixed.loss, master.loss, pure.loss, pure_sr.loss);
  // What no precision can halve: a peak of D + F in fp32 (D scales with the
  // dtype; F, the token ids, LayerNorm statistics and other fixed-size
  // tensors, does not) is D/2 + F in bf16, so its ratio is above 0.5 by F/2
  // over the fp32 peak, however lean the bf16 path.
  std::printf(
      "    bf16-pure (stochastic rounding) over half of fp32: %+.3f MiB\n",
      (pure_sr.peak_bytes - fp32.peak_bytes / 2.0) / 1048576.0);
  if (!c.memory_only) {
    std::printf("\n");
    VsPyTorch(c);
    std::printf("\n");
    VsPyTorchLlama(c);
  }
  return 0;
}
