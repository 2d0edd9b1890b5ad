// Plain configuration structs for the training engine.
//
// These mirror the job spec (proto/halftime/v1/job_spec.proto) field by field
// so the worker can map a JobSpec onto them without the engine depending on
// protobuf. Every field has the spec's documented default; a default-built
// TrainOptions is a valid (if tiny) synthetic-data job.
//
// Thread safety: plain values; safe to copy and read from any thread.

#ifndef HALFTIME_ENGINE_OPTIONS_H_
#define HALFTIME_ENGINE_OPTIONS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "rules/precision.h"

namespace halftime::engine {

// How forward/backward and the weights are held: the modes and their rules
// live in rules/precision.h (docs/design.md, precision modes).
using Precision = precision::Mode;

enum class LossScalingMode { kDefault, kDynamic, kStatic, kNone };
enum class OnMinScale { kFail, kFallback };
enum class OptimizerName { kAdamW, kSgd };
enum class LrDecay { kConstant, kCosine, kLinear };
enum class DataKind { kText, kTokens, kTensors, kSynthetic, kJsonl };
// Width of the ids in a token file.
enum class TokenDtype { kUint16, kUint32 };
// Storage dtype of an exported Hugging Face folder; kSource keeps the
// pretrained files' dtype.
enum class ExportDtype { kSource, kFp32, kBf16, kFp16 };
enum class LossKind { kCrossEntropy, kMse };
// Parameter-efficient fine-tuning: none trains every weight.
enum class AdapterKind { kNone, kLora };
// Storage of a frozen base's linear weights under an adapter; kDefault is
// the dtype the job computes in.
enum class BaseDtype { kDefault, kFp32, kBf16, kFp16, kNf4, kInt8 };
enum class DeviceRequest { kAny, kCpu, kCuda };
// How bf16-pure keeps small updates from being rounded away.
enum class PureUpdate { kKahan, kStochasticRounding };

// Spec names ("bf16-mixed", "adamw", ...) of the enums above.
inline const char* PrecisionName(Precision p) { return precision::ModeName(p); }
const char* LossScalingModeName(LossScalingMode m);
const char* OptimizerNameName(OptimizerName o);
const char* LrDecayName(LrDecay d);
const char* DataKindName(DataKind k);
const char* LossKindName(LossKind k);
const char* BaseDtypeName(BaseDtype d);
// Parses a spec name; returns false (and leaves *out alone) if unknown.
inline bool ParsePrecision(const std::string& name, Precision* out) {
  return precision::ParseMode(name, out);
}

// Shape overrides for the built-in GPT; 0 keeps the preset's value.
struct GptShape {
  int n_layer = 0;
  int n_embd = 0;
  int n_head = 0;
  int block_size = 0;
  int vocab_size = 0;
};

struct ModelOptions {
  // One of rules/models.h's built-ins. Ignored if torchscript or
  // pretrained is set.
  std::string builtin = "gpt-nano";
  // Path to a TorchScript module (torch.jit.save) to fine-tune.
  std::string torchscript;
  // A Hugging Face model folder (config.json and safetensors) to fine-tune.
  std::string pretrained;
  // Optional checkpoint (ours) or .safetensors whose weights start training.
  std::string init_from;
  // Loss applied to the model output.
  LossKind loss = LossKind::kCrossEntropy;
  // Test/bench hook: shrink or grow the GPT presets.
  GptShape gpt;
  // Hidden width of the built-in MLP.
  int mlp_hidden = 256;
};

// Text already turned into token ids, by a tokenizer the engine does not
// link (halftime-train's tokenizer library). For text data only `ids` is
// set; for instruction data (jsonl) each example is a span of `ids`, and
// `trained` marks the ids the loss predicts.
struct TokenizedData {
  std::vector<int32_t> ids;
  // Per id: 1 when the loss counts it as a target. Empty = every id.
  std::vector<uint8_t> trained;
  // Example i spans [starts[i], starts[i + 1]) (the last to ids.size()).
  // Empty = one running text.
  std::vector<int64_t> starts;
  // One past the largest id the tokenizer can produce.
  int64_t vocab_size = 0;
};

struct DataOptions {
  DataKind kind = DataKind::kSynthetic;
  // Data file; empty for synthetic.
  std::string path;
  int seq_len = 128;
  // Fraction of the data (tail) held out for eval loss.
  double eval_fraction = 0.1;
  // Vocabulary for tokens/synthetic data; 0 = 256 for synthetic, max token+1
  // for token files.
  int vocab_size = 0;
  // Draw batches at seeded random positions (true) or walk the training split
  // in order (false; used by the parity tests).
  bool shuffle = true;
  // Number of tokens generated for synthetic data.
  int64_t synthetic_tokens = 1 << 16;
  // Id width of a tokens file.
  TokenDtype token_dtype = TokenDtype::kUint16;
  // Text or jsonl data as ids (required for jsonl, and for text read by a
  // tokenizer; null for byte-level text). `path` still names the source.
  std::shared_ptr<const TokenizedData> tokenized;
  // What produced `tokenized` (tokenizer path, chat template name), for the
  // fingerprint: a resume with another tokenization is refused.
  std::string tokenizer;
  std::string chat_template;
  // jsonl: pack examples into seq_len windows (attention and positions
  // restart at each example) instead of one padded example per row.
  bool packing = false;
};

struct LossScalingOptions {
  // kDefault: the mode's default (rules/precision.h: dynamic for fp16).
  LossScalingMode mode = LossScalingMode::kDefault;
  double init_scale = precision::loss_scaling::kInitScale;
  double growth_factor = precision::loss_scaling::kGrowthFactor;
  double backoff_factor = precision::loss_scaling::kBackoffFactor;
  int growth_interval = precision::loss_scaling::kGrowthInterval;
  // 1 = PyTorch GradScaler, >1 = Megatron DynamicGradScaler hysteresis.
  int hysteresis = precision::loss_scaling::kHysteresis;
  double min_scale = precision::loss_scaling::kMinScale;
  double max_scale = precision::loss_scaling::kMaxScale;
  OnMinScale on_min_scale = OnMinScale::kFail;
  // Consecutive overflows at min_scale before on_min_scale acts. For static
  // and none modes, consecutive non-finite steps before the job fails.
  int min_scale_patience = precision::loss_scaling::kMinScalePatience;
  Precision fallback_precision = precision::loss_scaling::kFallbackPrecision;
};

struct OptimizerOptions {
  OptimizerName name = OptimizerName::kAdamW;
  double lr = 3e-4;
  // Negative = the optimizer's default (0.01 adamw, 0 sgd). Applied to
  // parameters with two or more dimensions only.
  double weight_decay = -1.0;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double momentum = 0.9;
  PureUpdate pure_update = PureUpdate::kKahan;
};

struct LrScheduleOptions {
  int warmup_steps = 0;
  LrDecay decay = LrDecay::kConstant;
  double min_lr_ratio = 0.1;
};

struct EvalOptions {
  // Evaluate every this many steps; 0 = only at the end.
  int every_steps = 50;
  int batches = 8;
  // Prompts (as ids) completed greedily at each evaluation; the completions
  // go to TrainCallbacks::on_eval_sample.
  std::vector<std::vector<int32_t>> prompt_ids;
  int max_new_tokens = 32;
  // Ids that end a completion early (the tokenizer's end-of-text tokens).
  std::vector<int32_t> stop_ids;
};

struct OutputOptions {
  // Dtype of the exported hf/ folder (pretrained models).
  ExportDtype dtype = ExportDtype::kSource;
  // Export hf/ beside every checkpoint too, not only at the end.
  bool export_with_checkpoints = false;
  // Adapter jobs: also write hf/ with the adapters merged into the base.
  bool merge = false;
};

// LoRA adapters on a frozen base (adapter.h); field names as PEFT's
// LoraConfig spells them.
struct AdapterOptions {
  AdapterKind kind = AdapterKind::kNone;
  int rank = 8;
  double alpha = 16.0;
  // Dropout on each adapter's input while training.
  double dropout = 0.0;
  // Module names or suffixes ("q_proj"), or {"all-linear"}; empty = the
  // family's PEFT default.
  std::vector<std::string> target_modules;
  // Scale alpha / sqrt(rank) instead of alpha / rank.
  bool rslora = false;
  BaseDtype base_dtype = BaseDtype::kDefault;
  // nf4: store the block maxima in 8 bits too.
  bool double_quant = true;
  // Modules trained in full beside the adapters ("lm_head").
  std::vector<std::string> modules_to_save;
};

struct CheckpointOptions {
  // Write a checkpoint every this many steps; 0 = only at the end.
  int every_steps = 100;
  // Checkpoints older than the newest `keep` are deleted (0 = keep all).
  int keep = 2;
};

struct TrainOptions {
  ModelOptions model;
  AdapterOptions adapter;
  DataOptions data;
  Precision precision = Precision::kAuto;
  LossScalingOptions loss_scaling;
  OptimizerOptions optimizer;
  LrScheduleOptions lr_schedule;
  int batch_size = 16;
  int grad_accumulation = 1;
  // Clip the unscaled gradient norm to this; 0 = no clipping.
  double max_grad_norm = 1.0;
  int steps = 100;
  int64_t seed = 1;
  EvalOptions eval;
  CheckpointOptions checkpoint;
  OutputOptions output;
  DeviceRequest device = DeviceRequest::kAny;
  // Run a precision the device only emulates (spec resources.emulation:
  // allow, or halftime-train --allow-emulation); false refuses it.
  bool allow_emulation = false;
  // Intra-op threads; 0 = all hardware threads.
  int threads = 0;
  // Output directory for checkpoints, final weights and summary.json. Empty =
  // write nothing (no checkpoints, no outputs).
  std::string out_dir;
  // Checkpoint to resume from (written by this engine); empty = fresh start.
  std::string resume_from;
};

// A stable 64-bit hash of the options that change what training computes
// (model, data, optimizer, schedule, batch, clipping, seed). Steps, eval,
// checkpoint cadence, threads, paths, the precision and the loss scaling are
// excluded: a job may resume in another precision with other scaling (the
// on_min_scale fallback does), since checkpoints hold fp32 weights. Stored
// in checkpoints so that a resume with different settings is refused.
uint64_t OptionsFingerprint(const TrainOptions& options);

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_OPTIONS_H_
