#include "engine/options.h"

#include <algorithm>
#include <sstream>

#include "engine/events.h"
#include "engine/report.h"
#include "engine/status.h"

namespace halftime::engine {

const char* LossScalingModeName(LossScalingMode m) {
  switch (m) {
    case LossScalingMode::kDefault:
      return "default";
    case LossScalingMode::kDynamic:
      return "dynamic";
    case LossScalingMode::kStatic:
      return "static";
    case LossScalingMode::kNone:
      return "none";
  }
  return "unknown";
}

const char* OptimizerNameName(OptimizerName o) {
  return o == OptimizerName::kAdamW ? "adamw" : "sgd";
}

const char* LrDecayName(LrDecay d) {
  switch (d) {
    case LrDecay::kConstant:
      return "constant";
    case LrDecay::kCosine:
      return "cosine";
    case LrDecay::kLinear:
      return "linear";
  }
  return "unknown";
}

const char* DataKindName(DataKind k) {
  switch (k) {
    case DataKind::kText:
      return "text";
    case DataKind::kTokens:
      return "tokens";
    case DataKind::kTensors:
      return "tensors";
    case DataKind::kSynthetic:
      return "synthetic";
    case DataKind::kJsonl:
      return "jsonl";
  }
  return "unknown";
}

const char* LossKindName(LossKind k) {
  return k == LossKind::kCrossEntropy ? "cross_entropy" : "mse";
}

const char* BaseDtypeName(BaseDtype d) {
  switch (d) {
    case BaseDtype::kDefault:
      return "default";
    case BaseDtype::kFp32:
      return "fp32";
    case BaseDtype::kBf16:
      return "bf16";
    case BaseDtype::kFp16:
      return "fp16";
    case BaseDtype::kNf4:
      return "nf4";
    case BaseDtype::kInt8:
      return "int8";
  }
  return "unknown";
}

const char* StatusCodeName(TrainStatus::Code code) {
  switch (code) {
    case TrainStatus::kOk:
      return events::kOkStatus;
    case TrainStatus::kInvalidInput:
      return "INVALID_INPUT";
    case TrainStatus::kUnsupported:
      return "UNSUPPORTED";
    case TrainStatus::kTrainingFailed:
      return "TRAINING_FAILED";
    case TrainStatus::kCancelled:
      return "CANCELLED";
    case TrainStatus::kFallbackRequested:
      return "FALLBACK_REQUESTED";
  }
  return "UNKNOWN";
}

bool DeviceCapabilities::Supports(Precision p) const {
  if (p == Precision::kAuto) return true;
  return std::find(native_precisions.begin(), native_precisions.end(), p) !=
         native_precisions.end();
}

bool DeviceCapabilities::Emulates(Precision p) const {
  return std::find(emulated_precisions.begin(), emulated_precisions.end(), p) !=
         emulated_precisions.end();
}

uint64_t OptionsFingerprint(const TrainOptions& o) {
  std::ostringstream s;
  s.precision(17);
  const ModelOptions& m = o.model;
  s << "model:" << m.builtin << '|' << m.torchscript << '|' << m.init_from
    << '|' << LossKindName(m.loss) << '|' << m.gpt.n_layer << ','
    << m.gpt.n_embd << ',' << m.gpt.n_head << ',' << m.gpt.block_size << ','
    << m.gpt.vocab_size << '|' << m.mlp_hidden;
  // Only when set, so that the fingerprints of earlier checkpoints hold.
  if (!m.pretrained.empty()) s << "|pretrained:" << m.pretrained;
  const DataOptions& d = o.data;
  s << ";data:" << DataKindName(d.kind) << '|' << d.path << '|' << d.seq_len
    << '|' << d.eval_fraction << '|' << d.vocab_size << '|' << d.shuffle << '|'
    << d.synthetic_tokens;
  if (d.token_dtype != TokenDtype::kUint16) s << "|uint32";
  if (!d.tokenizer.empty()) s << "|tokenizer:" << d.tokenizer;
  if (!d.chat_template.empty()) s << "|template:" << d.chat_template;
  if (d.packing) s << "|packing";
  const AdapterOptions& a = o.adapter;
  if (a.kind != AdapterKind::kNone) {
    s << ";lora:" << a.rank << '|' << a.alpha << '|' << a.dropout << '|'
      << a.rslora << '|' << BaseDtypeName(a.base_dtype) << '|'
      << a.double_quant;
    for (const std::string& t : a.target_modules) s << "|t:" << t;
    for (const std::string& m : a.modules_to_save) s << "|m:" << m;
  }
  const OptimizerOptions& p = o.optimizer;
  s << ";opt:" << OptimizerNameName(p.name) << '|' << p.lr << '|'
    << p.weight_decay << '|' << p.beta1 << '|' << p.beta2 << '|' << p.eps << '|'
    << p.momentum << '|' << static_cast<int>(p.pure_update);
  s << ";lr:" << o.lr_schedule.warmup_steps << '|'
    << LrDecayName(o.lr_schedule.decay) << '|' << o.lr_schedule.min_lr_ratio;
  s << ";batch:" << o.batch_size << '|' << o.grad_accumulation << '|'
    << o.max_grad_norm << '|' << o.seed;
  // FNV-1a, 64 bit.
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s.str()) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

}  // namespace halftime::engine
