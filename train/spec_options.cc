#include "train/spec_options.h"

#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "common/enum_names.h"

namespace halftime {
namespace {

namespace fs = std::filesystem;
using engine::TrainOptions;

engine::LossScalingMode ToEngine(v1::LossScalingMode m) {
  switch (m) {
    case v1::LOSS_SCALING_MODE_DYNAMIC:
      return engine::LossScalingMode::kDynamic;
    case v1::LOSS_SCALING_MODE_STATIC:
      return engine::LossScalingMode::kStatic;
    case v1::LOSS_SCALING_MODE_NONE:
      return engine::LossScalingMode::kNone;
    default:
      return engine::LossScalingMode::kDefault;
  }
}

engine::DataKind ToEngine(v1::DataKind k) {
  switch (k) {
    case v1::DATA_KIND_TEXT:
      return engine::DataKind::kText;
    case v1::DATA_KIND_TOKENS:
      return engine::DataKind::kTokens;
    case v1::DATA_KIND_TENSORS:
      return engine::DataKind::kTensors;
    case v1::DATA_KIND_JSONL:
      return engine::DataKind::kJsonl;
    default:
      return engine::DataKind::kSynthetic;
  }
}

engine::LrDecay ToEngine(v1::LrDecay d) {
  switch (d) {
    case v1::LR_DECAY_COSINE:
      return engine::LrDecay::kCosine;
    case v1::LR_DECAY_LINEAR:
      return engine::LrDecay::kLinear;
    default:
      return engine::LrDecay::kConstant;
  }
}

engine::DeviceRequest ToEngine(v1::DeviceKind d) {
  switch (d) {
    case v1::DEVICE_KIND_CPU:
      return engine::DeviceRequest::kCpu;
    case v1::DEVICE_KIND_CUDA:
      return engine::DeviceRequest::kCuda;
    default:
      return engine::DeviceRequest::kAny;
  }
}

engine::BaseDtype ToEngine(v1::BaseDtype d) {
  switch (d) {
    case v1::BASE_DTYPE_FP32:
      return engine::BaseDtype::kFp32;
    case v1::BASE_DTYPE_BF16:
      return engine::BaseDtype::kBf16;
    case v1::BASE_DTYPE_FP16:
      return engine::BaseDtype::kFp16;
    case v1::BASE_DTYPE_NF4:
      return engine::BaseDtype::kNf4;
    case v1::BASE_DTYPE_INT8:
      return engine::BaseDtype::kInt8;
    default:
      return engine::BaseDtype::kDefault;
  }
}

}  // namespace

TrainOptions TrainOptionsFromSpec(const v1::JobSpec& spec) {
  TrainOptions o;
  o.model.builtin = spec.model().builtin();
  o.model.torchscript = spec.model().torchscript();
  o.model.pretrained = spec.model().pretrained();
  o.model.init_from = spec.model().init_from();
  o.model.loss = spec.model().loss() == "mse" ? engine::LossKind::kMse
                                              : engine::LossKind::kCrossEntropy;

  o.data.kind = ToEngine(spec.data().kind());
  o.data.path = spec.data().path();
  o.data.seq_len = spec.data().seq_len();
  o.data.eval_fraction = spec.data().eval_fraction();
  o.data.vocab_size = spec.data().vocab_size();
  o.data.token_dtype = spec.data().token_dtype() == v1::TOKEN_DTYPE_UINT32
                           ? engine::TokenDtype::kUint32
                           : engine::TokenDtype::kUint16;
  o.data.tokenizer = spec.data().tokenizer();
  o.data.packing = spec.data().packing();

  o.precision = ToMode(spec.precision());

  const v1::LossScalingSpec& ls = spec.loss_scaling();
  o.loss_scaling.mode = ToEngine(ls.mode());
  o.loss_scaling.init_scale = ls.init_scale();
  o.loss_scaling.growth_factor = ls.growth_factor();
  o.loss_scaling.backoff_factor = ls.backoff_factor();
  o.loss_scaling.growth_interval = ls.growth_interval();
  o.loss_scaling.hysteresis = ls.hysteresis();
  o.loss_scaling.min_scale = ls.min_scale();
  o.loss_scaling.max_scale = ls.max_scale();
  o.loss_scaling.on_min_scale = ls.on_min_scale() == v1::ON_MIN_SCALE_FALLBACK
                                    ? engine::OnMinScale::kFallback
                                    : engine::OnMinScale::kFail;
  o.loss_scaling.min_scale_patience = ls.min_scale_patience();
  o.loss_scaling.fallback_precision = ToMode(ls.fallback_precision());

  const v1::OptimizerSpec& opt = spec.optimizer();
  o.optimizer.name = opt.name() == v1::OPTIMIZER_NAME_SGD
                         ? engine::OptimizerName::kSgd
                         : engine::OptimizerName::kAdamW;
  o.optimizer.lr = opt.lr();
  o.optimizer.weight_decay = opt.weight_decay();
  if (opt.has_beta1()) o.optimizer.beta1 = opt.beta1();
  if (opt.has_beta2()) o.optimizer.beta2 = opt.beta2();
  if (opt.has_eps()) o.optimizer.eps = opt.eps();
  if (opt.has_momentum()) o.optimizer.momentum = opt.momentum();
  o.optimizer.pure_update =
      opt.pure_update() == v1::PURE_UPDATE_STOCHASTIC_ROUNDING
          ? engine::PureUpdate::kStochasticRounding
          : engine::PureUpdate::kKahan;

  o.lr_schedule.warmup_steps = spec.lr_schedule().warmup_steps();
  o.lr_schedule.decay = ToEngine(spec.lr_schedule().decay());
  o.lr_schedule.min_lr_ratio = spec.lr_schedule().min_lr_ratio();

  o.batch_size = spec.batch_size();
  o.grad_accumulation = spec.grad_accumulation();
  o.max_grad_norm = spec.max_grad_norm();
  o.steps = spec.steps();
  o.seed = spec.seed();
  o.eval.every_steps = spec.eval().every_steps();
  o.eval.batches = spec.eval().batches();
  o.eval.max_new_tokens = spec.eval().max_new_tokens();
  switch (spec.output().dtype()) {
    case v1::OUTPUT_DTYPE_FP32:
      o.output.dtype = engine::ExportDtype::kFp32;
      break;
    case v1::OUTPUT_DTYPE_BF16:
      o.output.dtype = engine::ExportDtype::kBf16;
      break;
    case v1::OUTPUT_DTYPE_FP16:
      o.output.dtype = engine::ExportDtype::kFp16;
      break;
    default:
      o.output.dtype = engine::ExportDtype::kSource;
  }
  o.output.export_with_checkpoints = spec.output().export_with_checkpoints();
  o.output.merge = spec.output().merge();
  const v1::AdapterSpec& adapter = spec.adapter();
  if (adapter.kind() == v1::ADAPTER_KIND_LORA) {
    o.adapter.kind = engine::AdapterKind::kLora;
    o.adapter.rank = adapter.rank();
    o.adapter.alpha = adapter.alpha();
    o.adapter.dropout = adapter.dropout();
    o.adapter.target_modules.assign(adapter.target_modules().begin(),
                                    adapter.target_modules().end());
    o.adapter.rslora = adapter.rslora();
    o.adapter.base_dtype = ToEngine(adapter.base_dtype());
    o.adapter.double_quant = adapter.double_quant();
    o.adapter.modules_to_save.assign(adapter.modules_to_save().begin(),
                                     adapter.modules_to_save().end());
  }
  o.checkpoint.every_steps = spec.checkpoint().every_steps();
  o.device = ToEngine(spec.resources().device());
  o.allow_emulation = spec.resources().emulation() == v1::EMULATION_ALLOW;
  o.threads = spec.threads();
  return o;
}

absl::StatusOr<std::string> ConfinePath(const std::string& field,
                                        const std::string& path,
                                        const std::string& root) {
  if (root.empty() || path.empty()) return path;
  std::error_code ec;
  const fs::path canonical_root = fs::weakly_canonical(fs::absolute(root), ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("data root ", root, " is not usable: ", ec.message()));
  }
  fs::path candidate = fs::path(path);
  if (candidate.is_relative()) candidate = canonical_root / candidate;
  // weakly_canonical resolves symlinks of the existing prefix and "..".
  const fs::path resolved = fs::weakly_canonical(candidate, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": cannot resolve ", path, ": ", ec.message()));
  }
  const fs::path relative = resolved.lexically_relative(canonical_root);
  if (relative.empty() || *relative.begin() == "..") {
    return absl::PermissionDeniedError(
        absl::StrCat(field, ": ", path, " is outside the data root ",
                     canonical_root.string()));
  }
  return resolved.string();
}

absl::Status ConfineOptionPaths(const std::string& root,
                                engine::TrainOptions* options) {
  struct Entry {
    const char* field;
    std::string* path;
  };
  for (Entry entry : {Entry{"data.path", &options->data.path},
                      Entry{"data.tokenizer", &options->data.tokenizer},
                      Entry{"model.torchscript", &options->model.torchscript},
                      Entry{"model.pretrained", &options->model.pretrained},
                      Entry{"model.init_from", &options->model.init_from}}) {
    absl::StatusOr<std::string> confined =
        ConfinePath(entry.field, *entry.path, root);
    if (!confined.ok()) return confined.status();
    *entry.path = *confined;
  }
  return absl::OkStatus();
}

}  // namespace halftime
