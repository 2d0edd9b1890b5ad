#include "engine/train.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>

#include "engine/adapter.h"
#include "engine/checkpoint.h"
#include "engine/data.h"
#include "engine/device.h"
#include "engine/events.h"
#include "engine/generate.h"
#include "engine/hf/export.h"
#include "engine/hf/pretrained.h"
#include "engine/hf/safetensors_file.h"
#include "engine/loss_scaler.h"
#include "engine/model.h"
#include "engine/optimizer.h"
#include "engine/step_stats.h"

#ifdef HALFTIME_WITH_CUDA
#include <ATen/cuda/CUDAGeneratorImpl.h>
#endif

namespace halftime::engine {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

TrainStatus Invalid(const std::string& msg) {
  return TrainStatus::Error(TrainStatus::kInvalidInput, msg);
}

// Everything Train() builds before the step loop.
struct Setup {
  Precision precision = Precision::kFp32;
  bool emulated = false;  // the device only emulates `precision`
  bool cuda = false;
  at::Device device = at::Device(at::kCPU);
  at::ScalarType param_dtype = at::kFloat;
  WeightLayout layout = WeightLayout::kPlain;
  bool autocast = false;
  bool autocast_bf16 = true;
  int threads = 1;
  // Tensor bytes live before this job allocated anything.
  int64_t baseline_bytes = 0;
  std::unique_ptr<Dataset> data;
  std::unique_ptr<TrainModel> model;
  // The model, when it is an adapter job's (owned by `model`).
  AdaptedModel* adapted = nullptr;
};

TrainStatus Validate(const TrainOptions& o) {
  if (o.batch_size <= 0) return Invalid("batch_size must be positive");
  if (o.grad_accumulation <= 0) {
    return Invalid("grad_accumulation must be positive");
  }
  if (o.steps < 0) return Invalid("steps must not be negative");
  if (o.max_grad_norm < 0) return Invalid("max_grad_norm must not be negative");
  if (!(o.optimizer.lr > 0)) return Invalid("optimizer.lr must be positive");
  if (o.optimizer.beta1 < 0 || o.optimizer.beta1 >= 1 ||
      o.optimizer.beta2 < 0 || o.optimizer.beta2 >= 1) {
    return Invalid("optimizer.beta1 and optimizer.beta2 must be in [0, 1)");
  }
  if (o.lr_schedule.warmup_steps < 0) {
    return Invalid("lr_schedule.warmup_steps must not be negative");
  }
  if (o.lr_schedule.min_lr_ratio < 0 || o.lr_schedule.min_lr_ratio > 1) {
    return Invalid("lr_schedule.min_lr_ratio must be in [0, 1]");
  }
  if (o.eval.every_steps < 0 || o.eval.batches < 0) {
    return Invalid("eval.every_steps and eval.batches must not be negative");
  }
  if (o.checkpoint.every_steps < 0) {
    return Invalid("checkpoint.every_steps must not be negative");
  }
  const LossScalingOptions& l = o.loss_scaling;
  if (!(l.init_scale > 0) || !(l.growth_factor >= 1) ||
      !(l.backoff_factor > 0 && l.backoff_factor < 1) ||
      l.growth_interval < 1 || l.hysteresis < 1 || !(l.min_scale > 0) ||
      !(l.max_scale >= l.min_scale) || l.min_scale_patience < 1) {
    return Invalid(
        "loss_scaling: need init_scale > 0, growth_factor >= 1, 0 < "
        "backoff_factor < 1, growth_interval >= 1, hysteresis >= 1, "
        "0 < min_scale <= max_scale, min_scale_patience >= 1");
  }
  if (o.threads < 0) return Invalid("threads must not be negative");
  if (o.eval.max_new_tokens < 0) {
    return Invalid("eval.max_new_tokens must not be negative");
  }
  if (o.output.merge && o.adapter.kind == AdapterKind::kNone) {
    return Invalid("output.merge needs an adapter (adapter.kind: lora)");
  }
  if (o.output.merge && o.model.pretrained.empty()) {
    return Invalid(
        "output.merge writes a Hugging Face folder: it needs model.pretrained");
  }
  return TrainStatus::Ok();
}

TrainStatus ApplyInitFrom(const std::string& path, TrainModel& model) {
  NamedTensors weights;
  TrainStatus st = ReadWeights(path, &weights);
  if (!st.ok()) return st;
  std::map<std::string, at::Tensor> by_name(weights.begin(), weights.end());
  at::NoGradGuard no_grad;
  for (auto& [name, p] : model.NamedParameters()) {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      return Invalid("model.init_from " + path + " has no tensor " + name);
    }
    if (!it->second.sizes().equals(p.sizes())) {
      std::ostringstream msg;
      msg << "model.init_from " << path << ": tensor " << name << " has shape "
          << it->second.sizes() << ", the model wants " << p.sizes();
      return Invalid(msg.str());
    }
    p.copy_(it->second);
  }
  return TrainStatus::Ok();
}

// The dtype the safetensors of Hugging Face folder `dir` store weights in.
TrainStatus FolderDtype(const std::string& dir, at::ScalarType* out) {
  std::unique_ptr<hf::PretrainedFolder> folder;
  TrainStatus st = hf::PretrainedFolder::Open(dir, &folder);
  if (!st.ok()) return st;
  *out = hf::SafetensorsFile::ScalarTypeOf(folder->StoredDType());
  return TrainStatus::Ok();
}

// output.dtype as a tensor dtype; kSource gives `source`.
at::ScalarType ExportScalarType(ExportDtype d, at::ScalarType source) {
  switch (d) {
    case ExportDtype::kSource:
      return source;
    case ExportDtype::kFp32:
      return at::kFloat;
    case ExportDtype::kBf16:
      return at::kBFloat16;
    case ExportDtype::kFp16:
      return at::kHalf;
  }
  return source;
}

// The dtype an adapter job reads its base in: the storage dtype of a
// float base (so it is never widened), and for a quantized one the
// pretrained files' own dtype (quantized from exactly what was stored).
TrainStatus BaseLoadDtype(const TrainOptions& o, at::ScalarType compute_dtype,
                          at::ScalarType* out) {
  *out = BaseStorageDtype(o.adapter.base_dtype, compute_dtype);
  if (*out != at::ScalarType::Undefined) return TrainStatus::Ok();
  *out = at::kFloat;
  if (o.model.pretrained.empty()) return TrainStatus::Ok();
  return FolderDtype(o.model.pretrained, out);
}

// Builds data and model (fp32, initialized) and resolves the precision.
TrainStatus Prepare(const TrainOptions& o, Setup* s) {
  TrainStatus st = Validate(o);
  if (!st.ok()) return st;
  s->threads =
      o.threads > 0
          ? o.threads
          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(s->threads);
  if (o.device == DeviceRequest::kCuda && !CudaAvailable()) {
    return TrainStatus::Error(TrainStatus::kUnsupported,
                              "resources.device cuda: this build/device has "
                              "no CUDA device");
  }
  const DeviceCapabilities caps = ProbeDevice(
      s->threads, o.device != DeviceRequest::kCpu, /*measure=*/false);
  st = ResolvePrecision(o.precision, caps, o.allow_emulation, &s->precision,
                        &s->emulated);
  if (!st.ok()) return st;
  s->cuda = caps.kind == "cuda";
  s->device =
      s->cuda ? at::Device(at::kCUDA, kCudaDeviceIndex) : at::Device(at::kCPU);
  {
    const precision::Rules& rules = *precision::RulesOf(s->precision);
    const bool half = rules.compute == precision::Compute::kFp16 ||
                      rules.compute == precision::Compute::kBf16;
    const at::ScalarType half_dtype =
        rules.compute == precision::Compute::kFp16 ? at::kHalf : at::kBFloat16;
    switch (rules.weights) {
      case precision::Weights::kFp32:
        s->autocast = half;
        s->autocast_bf16 = half_dtype == at::kBFloat16;
        break;
      case precision::Weights::kHalfFp32Master:
        s->param_dtype = half_dtype;
        s->layout = WeightLayout::kMaster;
        break;
      case precision::Weights::kHalfOnly:
        s->param_dtype = half_dtype;
        s->layout = WeightLayout::kPure;
        break;
    }
  }
  if (s->cuda) {
    const bool tf32 =
        precision::RulesOf(s->precision)->compute == precision::Compute::kTf32;
    at::globalContext().setAllowTF32CuBLAS(tf32);
    at::globalContext().setAllowTF32CuDNN(tf32);
  }
  if (!s->cuda) {
    InstallMemoryCounter();
    KeepFreedHostMemory();
  }
  s->baseline_bytes = LiveMemoryBytes(s->cuda);
  torch::manual_seed(static_cast<uint64_t>(o.seed));
  st = Dataset::Open(o.data, static_cast<uint64_t>(o.seed), o.batch_size,
                     &s->data);
  if (!st.ok()) return st;
  const bool adapter = o.adapter.kind != AdapterKind::kNone;
  // The dtype frozen layers compute in: what autocast or the weights
  // compute in.
  const at::ScalarType compute_dtype =
      s->autocast ? (s->autocast_bf16 ? at::kBFloat16 : at::kHalf)
                  : s->param_dtype;
  at::ScalarType load_dtype = s->param_dtype;
  if (adapter) {
    st = BaseLoadDtype(o, compute_dtype, &load_dtype);
    if (!st.ok()) return st;
  }
  st = BuildModel(o.model, *s->data, load_dtype, &s->model);
  if (!st.ok()) return st;
  if (s->emulated && s->model->is_torchscript()) {
    // Its ops dispatch inside TorchScript, out of the engine's reach: they
    // would run libtorch's naive bf16 kernels, ~30x slower than fp32.
    return TrainStatus::Error(
        TrainStatus::kUnsupported,
        "model.torchscript: precision " +
            std::string(PrecisionName(s->precision)) +
            " is only emulated on this CPU, and a TorchScript module's "
            "matmuls cannot be routed through fp32; use fp32, or a worker "
            "with native bf16");
  }
  if (!o.model.init_from.empty()) {
    st = ApplyInitFrom(o.model.init_from, *s->model);
    if (!st.ok()) return st;
  }
  if (adapter) {
    std::unique_ptr<AdaptedModel> adapted;
    st = AdaptedModel::Wrap(o.adapter, compute_dtype, std::move(s->model),
                            &adapted);
    if (!st.ok()) return st;
    s->adapted = adapted.get();
    s->model = std::move(adapted);
  }
  return TrainStatus::Ok();
}

int64_t Bytes(const std::vector<std::pair<std::string, at::Tensor>>& ps,
              bool grads) {
  int64_t n = 0;
  for (const auto& [name, p] : ps) {
    if (!grads) {
      n += p.nbytes();
    } else if (p.grad().defined()) {
      n += p.grad().nbytes();
    }
  }
  return n;
}

std::string CheckpointPath(const std::string& out_dir, int64_t step) {
  char name[64];
  std::snprintf(name, sizeof(name), "step-%08" PRId64 ".ckpt", step);
  return (fs::path(out_dir) / "checkpoints" / name).string();
}

// Deletes all but the newest `keep` step-*.ckpt files in `dir`.
void PruneCheckpoints(const fs::path& dir, int keep) {
  if (keep <= 0) return;
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) == 0 && e.path().extension() == ".ckpt") {
      files.push_back(e.path());
    }
  }
  std::sort(files.begin(), files.end());
  for (size_t i = 0; i + keep < files.size(); ++i) {
    fs::remove(files[i], ec);
    // The exports beside it (output.export_with_checkpoints).
    fs::remove_all(fs::path(files[i]).replace_extension(".hf"), ec);
    fs::remove_all(fs::path(files[i]).replace_extension(".adapter"), ec);
  }
}

class Loop {
 public:
  Loop(const TrainOptions& o, const TrainCallbacks& cb, Setup& s)
      : o_(o), cb_(cb), s_(s), scaler_([&] {
          LossScalingOptions l = o.loss_scaling;
          l.mode = ResolveLossScalingMode(l.mode, s.precision);
          return l;
        }()) {}

  TrainStatus Run(TrainSummary* summary);

 private:
  TrainStatus Resume();
  TrainStatus SaveCheckpoint(int64_t step);
  // Mean eval loss; `*accuracy` is the next-token (arg-max) accuracy, or
  // negative when the loss is not a classification loss.
  double Evaluate(double* accuracy);
  // Completes each eval prompt greedily and hands it to on_eval_sample.
  TrainStatus SampleEvalPrompts();
  TrainStatus WriteOutputs(TrainSummary* summary);
  // Writes the weights as a Hugging Face folder at `dir` in output.dtype
  // (pretrained models only), with the adapters merged in for an adapter
  // job.
  TrainStatus ExportHf(const std::string& dir);
  // Writes the adapters at `dir` in PEFT's format (adapter jobs).
  TrainStatus ExportAdapter(const std::string& dir);
  Batch ToDevice(Batch b) {
    if (s_.cuda) {
      b.inputs = b.inputs.to(s_.device, /*non_blocking=*/true);
      b.targets = b.targets.to(s_.device, /*non_blocking=*/true);
      if (b.positions.defined()) {
        b.positions = b.positions.to(s_.device, /*non_blocking=*/true);
        b.segments = b.segments.to(s_.device, /*non_blocking=*/true);
      }
    }
    return b;
  }

  const TrainOptions& o_;
  const TrainCallbacks& cb_;
  Setup& s_;
  LossScaler scaler_;
  std::unique_ptr<Optimizer> opt_;
  std::vector<std::pair<std::string, at::Tensor>> params_;
  int64_t step_ = 0;
  int64_t micro_batches_ = 0;
  int64_t skipped_ = 0;
  std::string last_checkpoint_;
};

TrainStatus Loop::Resume() {
  CheckpointData ck;
  TrainStatus st = ReadCheckpoint(o_.resume_from, &ck);
  if (!st.ok()) return st;
  if (ck.fingerprint != OptionsFingerprint(o_)) {
    return Invalid("resume_from " + o_.resume_from +
                   " was written with different training options (model, "
                   "data, optimizer, schedule, batch, clipping or seed "
                   "differ)");
  }
  if (s_.adapted != nullptr && ck.base_hash != s_.adapted->report().base_hash) {
    return Invalid("resume_from " + o_.resume_from +
                   " trained its adapters on another base model: the base " +
                   "read now hashes to " + s_.adapted->report().base_hash +
                   ", the checkpoint's to " +
                   (ck.base_hash.empty() ? std::string("nothing (no adapter)")
                                         : ck.base_hash));
  }
  if (ck.step > o_.steps) {
    return Invalid("resume_from " + o_.resume_from + " is at step " +
                   std::to_string(ck.step) + ", beyond steps " +
                   std::to_string(o_.steps));
  }
  std::map<std::string, at::Tensor> weights(ck.model.begin(), ck.model.end());
  for (const auto& [name, p] : params_) {
    auto it = weights.find(name);
    if (it == weights.end() || !it->second.sizes().equals(p.sizes())) {
      return Invalid("resume_from " + o_.resume_from + ": tensor " + name +
                     " is missing or has another shape");
    }
  }
  std::vector<std::pair<std::string, at::Tensor>> on_device;
  for (auto& [name, t] : ck.model)
    on_device.emplace_back(name, t.to(s_.device));
  opt_->SetWeights(on_device);
  std::map<std::string, at::Tensor> state;
  for (auto& [name, t] : ck.optimizer) state[name] = t.to(s_.device);
  const std::string err = opt_->LoadState(state, ck.optimizer_steps);
  if (!err.empty())
    return Invalid("resume_from " + o_.resume_from + ": " + err);
  // The scaler resumes only in the same precision; after a precision
  // fallback it starts afresh from the options.
  if (ck.precision == PrecisionName(s_.precision)) {
    scaler_.set_state(ck.scaler);
    skipped_ = ck.scaler.total_overflows;
  }
  if (ck.rng_cpu.defined()) {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(ck.rng_cpu);
  }
#ifdef HALFTIME_WITH_CUDA
  // Random ops on the GPU (dropout in a TorchScript model) resume in step.
  if (ck.rng_cuda.defined() && s_.cuda) {
    at::Generator gen = at::cuda::detail::getDefaultCUDAGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(ck.rng_cuda);
  }
#endif
  step_ = ck.step;
  micro_batches_ = ck.micro_batches;
  return TrainStatus::Ok();
}

TrainStatus Loop::SaveCheckpoint(int64_t step) {
  if (o_.out_dir.empty()) return TrainStatus::Ok();
  const fs::path dir = fs::path(o_.out_dir) / "checkpoints";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return TrainStatus::Error(
        TrainStatus::kTrainingFailed,
        "cannot create " + dir.string() + ": " + ec.message());
  }
  CheckpointData ck;
  ck.step = step;
  ck.micro_batches = micro_batches_;
  ck.optimizer_steps = opt_->steps();
  ck.precision = PrecisionName(s_.precision);
  ck.fingerprint = OptionsFingerprint(o_);
  ck.scaler = scaler_.state();
  ck.model = opt_->Fp32Weights();
  ck.optimizer = opt_->StateTensors();
  ck.rng_cpu = at::detail::getDefaultCPUGenerator().get_state();
  if (s_.adapted != nullptr) ck.base_hash = s_.adapted->report().base_hash;
#ifdef HALFTIME_WITH_CUDA
  if (s_.cuda) {
    ck.rng_cuda = at::cuda::detail::getDefaultCUDAGenerator().get_state();
  }
#endif
  const std::string path = CheckpointPath(o_.out_dir, step);
  TrainStatus st = WriteCheckpoint(path, ck);
  if (!st.ok()) return st;
  if (o_.output.export_with_checkpoints && s_.adapted != nullptr) {
    st = ExportAdapter(fs::path(path).replace_extension(".adapter").string());
    if (!st.ok()) return st;
  }
  if (o_.output.export_with_checkpoints && !o_.model.pretrained.empty() &&
      (s_.adapted == nullptr || o_.output.merge)) {
    st = ExportHf(fs::path(path).replace_extension(".hf").string());
    if (!st.ok()) return st;
  }
  last_checkpoint_ = path;
  PruneCheckpoints(dir, o_.checkpoint.keep);
  if (cb_.on_checkpoint) cb_.on_checkpoint(path, step);
  return TrainStatus::Ok();
}

TrainStatus Loop::SampleEvalPrompts() {
  if (o_.eval.prompt_ids.empty() || !cb_.on_eval_sample) {
    return TrainStatus::Ok();
  }
  GenerateOptions g;
  g.max_new_tokens = o_.eval.max_new_tokens;
  g.stop_ids = o_.eval.stop_ids;
  for (size_t i = 0; i < o_.eval.prompt_ids.size(); ++i) {
    std::vector<int32_t> completion;
    TrainStatus st;
    {
      AutocastGuard autocast(s_.autocast, s_.cuda, s_.autocast_bf16);
      st =
          Generate(*s_.model, o_.eval.prompt_ids[i], g, s_.device, &completion);
    }
    if (!st.ok()) {
      return TrainStatus::Error(
          st.code, "eval.prompts[" + std::to_string(i) + "]: " + st.message);
    }
    cb_.on_eval_sample(step_, static_cast<int>(i), completion);
  }
  return TrainStatus::Ok();
}

double Loop::Evaluate(double* accuracy) {
  at::NoGradGuard no_grad;
  double total = 0.0;
  int64_t correct = 0, positions = 0;
  const int n = std::max(1, o_.eval.batches);
  for (int i = 0; i < n; ++i) {
    Batch b = ToDevice(s_.data->EvalBatch(i));
    AutocastGuard autocast(s_.autocast, s_.cuda, s_.autocast_bf16);
    s_.model->Evaluate(b, &total, &correct, &positions);
  }
  *accuracy = positions > 0 ? static_cast<double>(correct) / positions : -1.0;
  return total / n;
}

TrainStatus Loop::Run(TrainSummary* summary) {
  s_.model->To(s_.device, s_.param_dtype);
  params_ = s_.model->NamedParameters();
  for (auto& [name, p] : params_) p.requires_grad_(true);
  opt_ = std::make_unique<Optimizer>(params_, o_.optimizer, s_.layout,
                                     static_cast<uint64_t>(o_.seed));
  if (!o_.resume_from.empty()) {
    TrainStatus st = Resume();
    if (!st.ok()) return st;
  }
  for (size_t i = 0; i < o_.eval.prompt_ids.size(); ++i) {
    // Checked before step 1, not at the first evaluation.
    const int64_t context = s_.model->max_positions();
    if (s_.model->vocab_size() <= 0) {
      return Invalid("eval.prompts need a language model");
    }
    if (context > 0 &&
        static_cast<int64_t>(o_.eval.prompt_ids[i].size()) >= context) {
      return Invalid("eval.prompts[" + std::to_string(i) + "] has " +
                     std::to_string(o_.eval.prompt_ids[i].size()) +
                     " tokens; the model's context holds " +
                     std::to_string(context));
    }
  }
  // A frozen base's weights count with the trained ones.
  const int64_t frozen_bytes =
      s_.adapted != nullptr ? s_.adapted->report().base_bytes : 0;
  std::vector<at::Tensor> grads;
  grads.reserve(params_.size());
  int64_t n_params = 0;
  for (const auto& [name, p] : params_) n_params += p.numel();

  const int64_t samples_per_step =
      static_cast<int64_t>(o_.batch_size) * o_.grad_accumulation;
  // Tokens of a full step; padded instruction rows count fewer.
  const int64_t full_step_tokens =
      samples_per_step * s_.data->tokens_per_sample();
  int64_t tokens_total = 0;
  const double flops_per_token =
      s_.model->TrainFlopsPerToken(s_.data->tokens_per_sample());
  const double inv_accum = 1.0 / o_.grad_accumulation;

  TrainSummary sum;
  sum.precision = s_.precision;
  sum.emulated = s_.emulated;
  sum.device = s_.cuda ? CudaDeviceName() : "cpu";
  sum.parameters = n_params;
  sum.trainable_parameters = n_params;
  if (s_.adapted != nullptr) {
    sum.has_adapter = true;
    sum.adapter = s_.adapted->report();
    sum.parameters = sum.adapter.total_parameters;
  }
  StepReport r;
  double step_seconds_total = 0.0;
  int64_t steps_run = 0;
  std::vector<double> step_times;
  bool have_eval = false;
  double last_eval = 0.0;

  // Peak tensor memory of this job: everything allocated since Prepare()
  // (weights, optimizer state, data tensors, activations), over what was
  // live before it.
  ResetPeakMemory(s_.cuda);
  const auto loop_start = Clock::now();
  TrainStatus result = TrainStatus::Ok();

  while (step_ < o_.steps) {
    if (cb_.cancel != nullptr && cb_.cancel->load()) {
      TrainStatus st = SaveCheckpoint(step_);
      if (!st.ok()) return st;
      result = TrainStatus::Error(
          TrainStatus::kCancelled,
          "cancelled at step " + std::to_string(step_) +
              (last_checkpoint_.empty() ? ""
                                        : "; checkpoint " + last_checkpoint_));
      break;
    }
    const auto t0 = Clock::now();
    const double scale = scaler_.scale();
    const double backward_factor = scale * inv_accum;
    for (auto& [name, p] : params_) p.mutable_grad().reset();
    at::Tensor loss_sum;
    int64_t step_tokens = 0;
    for (int m = 0; m < o_.grad_accumulation; ++m) {
      Batch b = ToDevice(s_.data->TrainBatch(micro_batches_++));
      step_tokens += b.tokens >= 0
                         ? b.tokens
                         : b.inputs.size(0) * s_.data->tokens_per_sample();
      at::Tensor loss;
      {
        AutocastGuard autocast(s_.autocast, s_.cuda, s_.autocast_bf16);
        loss = s_.model->Loss(b);
      }
      // The graph keeps what backward needs; the batch's own references
      // would keep the targets alive until the step's memory peak.
      b = Batch();
      if (backward_factor == 1.0) {
        loss.backward();
      } else {
        (loss * backward_factor).backward();
      }
      loss_sum = loss_sum.defined() ? loss_sum + loss.detach() : loss.detach();
    }
    grads.clear();
    for (const auto& [name, p] : params_) grads.push_back(p.grad());
    const GradCheck check = CheckGradients(grads, scale, o_.max_grad_norm);
    grads.clear();  // do not hold this step's gradients into the next one
    ++step_;
    r = StepReport();
    r.step = step_;
    r.loss_scale = scale;
    r.overflow = check.found_inf;
    r.grad_norm = check.grad_norm;
    if (check.found_inf) {
      ++skipped_;  // no optimizer step, no schedule step
    } else {
      r.lr =
          LearningRate(o_.optimizer, o_.lr_schedule, opt_->steps(), o_.steps);
      opt_->Step(r.lr, check.grad_coef);
    }
    const LossScaler::Action action = scaler_.Update(check.found_inf);
    r.loss = loss_sum.item<double>() * inv_accum;
    r.skipped_steps = skipped_;
    r.gradient_bytes = Bytes(params_, /*grads=*/true);
    if (s_.cuda) {
      // Keep step timing honest on an asynchronous device.
      at::Tensor sync = at::zeros({1}, at::TensorOptions().device(s_.device));
      sync.cpu();
    }
    r.step_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    step_seconds_total += r.step_seconds;
    step_times.push_back(r.step_seconds);
    ++steps_run;
    r.samples_per_second = samples_per_step / r.step_seconds;
    tokens_total += step_tokens;
    r.tokens_per_second = step_tokens / r.step_seconds;
    r.model_flops_per_second = flops_per_token * r.tokens_per_second;
    r.peak_memory_bytes = PeakMemoryBytes(s_.cuda) - s_.baseline_bytes;
    r.weight_bytes = Bytes(params_, /*grads=*/false) + frozen_bytes;
    r.optimizer_state_bytes = opt_->StateBytes();
    r.parameters = sum.parameters;
    r.trainable_parameters = sum.trainable_parameters;
    const bool last = step_ == o_.steps;
    if (s_.data->has_eval() &&
        ((o_.eval.every_steps > 0 && step_ % o_.eval.every_steps == 0) ||
         last)) {
      r.has_eval_loss = true;
      double accuracy = -1.0;
      r.eval_loss = Evaluate(&accuracy);
      r.has_eval_accuracy = accuracy >= 0;
      r.eval_accuracy = std::max(accuracy, 0.0);
      have_eval = true;
      last_eval = r.eval_loss;
      sum.has_eval_accuracy = r.has_eval_accuracy;
      sum.eval_accuracy = r.eval_accuracy;
    }
    if (last || (o_.eval.every_steps > 0 && step_ % o_.eval.every_steps == 0)) {
      TrainStatus st = SampleEvalPrompts();
      if (!st.ok()) return st;
    }
    sum.final_loss = r.loss;
    sum.gradient_bytes = std::max(sum.gradient_bytes, r.gradient_bytes);
    if (cb_.on_step) cb_.on_step(r);

    if (action != LossScaler::Action::kContinue) {
      TrainStatus st = SaveCheckpoint(step_);
      if (!st.ok()) return st;
      const std::string why =
          scaler_.mode() == LossScalingMode::kDynamic
              ? "the loss scale sat at min_scale " +
                    std::to_string(o_.loss_scaling.min_scale) + " for " +
                    std::to_string(scaler_.state().floor_overflows) +
                    " consecutive overflowing steps"
              : std::to_string(scaler_.state().consecutive_overflows) +
                    " consecutive steps had non-finite gradients";
      if (action == LossScaler::Action::kFallback) {
        result = TrainStatus::Error(
            TrainStatus::kFallbackRequested,
            why + " at step " + std::to_string(step_) + "; resume from " +
                last_checkpoint_ + " in precision " +
                PrecisionName(o_.loss_scaling.fallback_precision));
      } else {
        result = TrainStatus::Error(TrainStatus::kTrainingFailed,
                                    why + " at step " + std::to_string(step_) +
                                        " (loss_scaling.on_min_scale: fail)");
      }
      break;
    }
    if (last || (o_.checkpoint.every_steps > 0 &&
                 step_ % o_.checkpoint.every_steps == 0)) {
      TrainStatus st = SaveCheckpoint(step_);
      if (!st.ok()) return st;
    }
  }

  sum.seconds =
      std::chrono::duration<double>(Clock::now() - loop_start).count();
  sum.steps = step_;
  sum.skipped_steps = skipped_;
  sum.has_eval_loss = have_eval;
  sum.eval_loss = last_eval;
  sum.final_loss_scale = scaler_.scale();
  if (steps_run > 0) {
    sum.mean_step_seconds = step_seconds_total / steps_run;
    sum.samples_per_second = samples_per_step / sum.mean_step_seconds;
    sum.tokens_per_second = tokens_total / step_seconds_total;
    sum.model_flops_per_second = flops_per_token * sum.tokens_per_second;
    sum.median_step_seconds = SteadyMedian(step_times);
    // Timed only for a run that writes its summary (a third of a second).
    if (!o_.out_dir.empty()) {
      sum.gemm_ceiling_flops = GemmCeilingFlops(s_.precision, s_.cuda);
    }
    if (sum.gemm_ceiling_flops > 0 && sum.median_step_seconds > 0) {
      sum.mfu = flops_per_token * full_step_tokens / sum.median_step_seconds /
                sum.gemm_ceiling_flops;
    }
  }
  sum.peak_memory_bytes = PeakMemoryBytes(s_.cuda) - s_.baseline_bytes;
  sum.weight_bytes = Bytes(params_, false) + frozen_bytes;
  sum.optimizer_state_bytes = opt_->StateBytes();
  sum.last_checkpoint = last_checkpoint_;
  if (result.ok()) {
    TrainStatus st = WriteOutputs(&sum);
    if (!st.ok()) result = st;
  }
  if (summary != nullptr) *summary = sum;
  return result;
}

TrainStatus Loop::WriteOutputs(TrainSummary* sum) {
  if (o_.out_dir.empty()) return TrainStatus::Ok();
  std::error_code ec;
  fs::create_directories(o_.out_dir, ec);
  const auto weights = opt_->Fp32Weights();
  sum->final_weights = (fs::path(o_.out_dir) / "model.safetensors").string();
  TrainStatus st = WriteSafetensors(sum->final_weights, weights,
                                    {{"format", "pt"},
                                     {"producer", "halftime"},
                                     {"precision", PrecisionName(s_.precision)},
                                     {"step", std::to_string(step_)}});
  if (!st.ok()) return st;
  if (s_.adapted != nullptr) {
    sum->final_adapter = (fs::path(o_.out_dir) / "adapter").string();
    st = ExportAdapter(sum->final_adapter);
    if (!st.ok()) return st;
  }
  if (!o_.model.pretrained.empty() &&
      (s_.adapted == nullptr || o_.output.merge)) {
    sum->final_hf = (fs::path(o_.out_dir) / "hf").string();
    st = ExportHf(sum->final_hf);
    if (!st.ok()) return st;
  }
  if (s_.model->is_torchscript()) {
    // Saved with fp32 weights (the master copy where there is one), on the
    // CPU so that it loads on machines without a GPU.
    s_.model->To(at::kCPU, at::kFloat);
    {
      at::NoGradGuard no_grad;
      std::map<std::string, at::Tensor> by_name(weights.begin(), weights.end());
      for (auto& [name, p] : s_.model->NamedParameters()) {
        p.copy_(by_name.at(name));
      }
    }
    sum->final_torchscript = (fs::path(o_.out_dir) / "model.pt").string();
    const std::string tmp = sum->final_torchscript + ".tmp";
    const std::string err = s_.model->SaveTorchScript(tmp);
    if (!err.empty()) {
      return TrainStatus::Error(TrainStatus::kTrainingFailed, err);
    }
    fs::rename(tmp, sum->final_torchscript, ec);
    if (ec) {
      return TrainStatus::Error(
          TrainStatus::kTrainingFailed,
          "cannot write " + sum->final_torchscript + ": " + ec.message());
    }
  }
  sum->summary_json = (fs::path(o_.out_dir) / "summary.json").string();
  return WriteFileAtomically(sum->summary_json, SummaryJson(*sum) + "\n");
}

TrainStatus Loop::ExportHf(const std::string& dir) {
  // The source folder's layout, in output.dtype or the dtype its weights
  // were stored in.
  at::ScalarType source = at::kFloat;
  if (o_.output.dtype == ExportDtype::kSource) {
    TrainStatus st = FolderDtype(o_.model.pretrained, &source);
    if (!st.ok()) return st;
  }
  const NamedTensors weights =
      s_.adapted != nullptr ? s_.adapted->MergedWeights(opt_->Fp32Weights())
                            : opt_->Fp32Weights();
  return hf::ExportFolder(o_.model.pretrained, s_.model->HfLayout(), weights,
                          ExportScalarType(o_.output.dtype, source), dir);
}

TrainStatus Loop::ExportAdapter(const std::string& dir) {
  // Adapters are trained in fp32 masters; output.dtype may narrow them.
  const std::string base =
      !o_.model.pretrained.empty() ? o_.model.pretrained : o_.model.builtin;
  return s_.adapted->WritePeft(dir, base, opt_->Fp32Weights(),
                               ExportScalarType(o_.output.dtype, at::kFloat));
}

template <typename Fn>
TrainStatus Guarded(Fn&& fn) {
  try {
    return fn();
  } catch (const c10::Error& e) {
    return TrainStatus::Error(
        TrainStatus::kTrainingFailed,
        std::string("libtorch error: ") + e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    return TrainStatus::Error(TrainStatus::kTrainingFailed, "out of memory");
  } catch (const std::exception& e) {
    return TrainStatus::Error(TrainStatus::kTrainingFailed, e.what());
  } catch (...) {
    return TrainStatus::Error(TrainStatus::kTrainingFailed, "unknown error");
  }
}

}  // namespace

TrainStatus Train(const TrainOptions& options, const TrainCallbacks& callbacks,
                  TrainSummary* summary) {
  return Guarded([&] {
    Setup setup;
    TrainStatus st = Prepare(options, &setup);
    if (!st.ok()) return st;
    Loop loop(options, callbacks, setup);
    return loop.Run(summary);
  });
}

TrainStatus ExportInitialWeights(const TrainOptions& options,
                                 const std::string& path) {
  return Guarded([&] {
    Setup setup;
    TrainStatus st = Prepare(options, &setup);
    if (!st.ok()) return st;
    NamedTensors weights;
    for (auto& [name, p] : setup.model->NamedParameters()) {
      weights.emplace_back(name, p.detach().to(at::kFloat));
    }
    return WriteSafetensors(path, weights, {{"format", "pt"}});
  });
}

}  // namespace halftime::engine
