#include "common/memory_estimate.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/enum_names.h"
#include "engine/hf/model_config.h"
#include "engine/hf/peft_config.h"
#include "rules/models.h"
#include "rules/precision.h"

namespace halftime {
namespace {

// One linear layer kind of a decoder layer.
struct Projection {
  const char* name;  // as the module's name ends ("self_attn.q_proj")
  int64_t in = 0, out = 0;
};

struct Model {
  v1::ModelShape shape;
  bool gpt2 = false;
  std::vector<Projection> projections;  // per layer
  int64_t total = 0;                    // all parameters
  int64_t per_layer_other = 0;          // norms and biases per layer
  int64_t largest = 0;                  // largest tensor
};

Model Describe(const v1::ModelShape& s) {
  Model m;
  m.shape = s;
  m.gpt2 = s.family() == "gpt2";
  const int64_t C = s.hidden_size(), I = s.intermediate_size();
  const int64_t V = s.vocab_size(), L = s.num_layers();
  const int64_t HD = int64_t{s.num_heads()} * s.head_dim();
  const int64_t KVD = int64_t{s.num_kv_heads()} * s.head_dim();
  int64_t embeddings = V * C;
  if (m.gpt2) {
    m.projections = {{"attn.c_attn", C, 3 * C},
                     {"attn.c_proj", C, C},
                     {"mlp.c_fc", C, I},
                     {"mlp.c_proj", I, C}};
    m.per_layer_other = 4 * C + 3 * C + C + I + C;  // 2 LayerNorms, biases
    embeddings += s.max_positions() * C + 2 * C;    // positions, ln_f
  } else {
    m.projections = {{"self_attn.q_proj", C, HD},  {"self_attn.k_proj", C, KVD},
                     {"self_attn.v_proj", C, KVD}, {"self_attn.o_proj", HD, C},
                     {"mlp.gate_proj", C, I},      {"mlp.up_proj", C, I},
                     {"mlp.down_proj", I, C}};
    m.per_layer_other = 2 * C;
    if (s.qkv_bias()) m.per_layer_other += HD + 2 * KVD;
    if (s.qk_norm()) m.per_layer_other += 2 * s.head_dim();
    embeddings += C;  // final norm
    if (!s.tied_embeddings()) embeddings += V * C;
  }
  int64_t per_layer = m.per_layer_other;
  m.largest = V * C;
  for (const Projection& p : m.projections) {
    per_layer += p.in * p.out;
    m.largest = std::max(m.largest, p.in * p.out);
  }
  m.total = embeddings + L * per_layer;
  return m;
}

// PEFT's rule, applied to a projection kind: the target is its name's last
// part(s) after a dot, or a full module name ending in it (counted for
// every layer: an estimate errs high).
bool Targets(const std::string& target, const std::string& relative) {
  return relative == target || absl::EndsWith(relative, "." + target) ||
         absl::EndsWith(target, "." + relative);
}

struct AdapterPlan {
  std::vector<bool> adapted;  // per projection kind
  std::vector<bool> saved;    // trained in full (modules_to_save)
  int64_t lora = 0;           // adapter parameters
  int64_t saved_params = 0;   // modules_to_save parameters
};

AdapterPlan PlanAdapter(const v1::AdapterSpec& a, const Model& m) {
  AdapterPlan plan;
  const size_t n = m.projections.size();
  plan.adapted.assign(n, false);
  plan.saved.assign(n, false);
  std::vector<std::string> targets(a.target_modules().begin(),
                                   a.target_modules().end());
  if (targets.empty()) {
    targets = m.gpt2 ? std::vector<std::string>{"c_attn"}
                     : std::vector<std::string>{"q_proj", "v_proj"};
  }
  const bool all = engine::hf::IsAllLinear(
      {a.target_modules().begin(), a.target_modules().end()});
  const int64_t L = m.shape.num_layers();
  const int64_t VC = m.shape.vocab_size() * m.shape.hidden_size();
  for (const std::string& save : a.modules_to_save()) {
    if (save == "lm_head" && !m.gpt2 && !m.shape.tied_embeddings()) {
      plan.saved_params += VC;
    } else if (save == "embed_tokens" || save == "wte") {
      plan.saved_params += VC;
    }
    for (size_t i = 0; i < n; ++i) {
      if (Targets(save, m.projections[i].name)) plan.saved[i] = true;
    }
  }
  for (size_t i = 0; i < n; ++i) {
    const Projection& p = m.projections[i];
    if (plan.saved[i]) {
      plan.saved_params += L * p.in * p.out;
      continue;
    }
    for (const std::string& t : targets) {
      if (all || Targets(t, p.name)) plan.adapted[i] = true;
    }
    if (plan.adapted[i]) plan.lora += L * a.rank() * (p.in + p.out);
  }
  return plan;
}

// Bytes per weight of a frozen projection stored as `base`.
double BaseBytesPerWeight(v1::BaseDtype base, bool double_quant, double c,
                          int64_t in) {
  switch (base) {
    case v1::BASE_DTYPE_FP32:
      return 4;
    case v1::BASE_DTYPE_BF16:
    case v1::BASE_DTYPE_FP16:
      return 2;
    case v1::BASE_DTYPE_NF4:
      return double_quant ? 0.5 + 1.0 / 64 + 4.0 / (64 * 256) : 0.5 + 4.0 / 64;
    case v1::BASE_DTYPE_INT8:
      return 1 + 4.0 / static_cast<double>(in);
    default:
      return c;
  }
}

// Bytes as an int64, saturating: a figure past 2^62 is no device's.
int64_t Saturate(double bytes) {
  constexpr double kMax = 4.6e18;
  if (!(bytes > 0)) return 0;
  return bytes >= kMax ? static_cast<int64_t>(kMax)
                       : static_cast<int64_t>(bytes);
}

}  // namespace

absl::StatusOr<v1::ModelShape> ModelShapeOf(const v1::JobSpec& spec,
                                            bool read_folder) {
  const v1::ModelSpec& model = spec.model();
  if (model.has_shape() && model.shape().num_layers() > 0) {
    return model.shape();
  }
  if (!model.builtin().empty()) {
    const models::Builtin* b = models::FindBuiltin(model.builtin());
    if (b == nullptr || b->gpt.n_layer == 0) {
      return absl::NotFoundError(
          absl::StrCat("model.builtin ", model.builtin(),
                       " has no decoder shape to estimate from"));
    }
    v1::ModelShape s;
    s.set_family("gpt2");
    s.set_vocab_size(b->gpt.vocab_size > 0 ? b->gpt.vocab_size
                                           : spec.data().vocab_size());
    s.set_hidden_size(b->gpt.n_embd);
    s.set_intermediate_size(4 * int64_t{b->gpt.n_embd});
    s.set_num_layers(b->gpt.n_layer);
    s.set_num_heads(b->gpt.n_head);
    s.set_num_kv_heads(b->gpt.n_head);
    s.set_head_dim(b->gpt.n_embd / b->gpt.n_head);
    s.set_tied_embeddings(true);
    s.set_max_positions(b->gpt.block_size);
    return s;
  }
  if (model.pretrained().empty() || !read_folder) {
    return absl::NotFoundError(
        "the model's dimensions are unknown (a TorchScript module, or a "
        "folder this process does not read)");
  }
  const std::string path =
      (std::filesystem::path(model.pretrained()) / "config.json").string();
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot be read"));
  std::stringstream text;
  text << in.rdbuf();
  engine::hf::ModelConfig c;
  std::string error;
  if (!engine::hf::ParseModelConfig(text.str(), path, &c, &error)) {
    return absl::InvalidArgumentError(error);
  }
  v1::ModelShape s;
  s.set_family(c.family == engine::hf::Family::kGpt2 ? "gpt2" : "llama");
  s.set_vocab_size(c.vocab_size);
  s.set_hidden_size(c.hidden_size);
  s.set_intermediate_size(c.intermediate_size);
  s.set_num_layers(static_cast<int32_t>(c.num_layers));
  s.set_num_heads(static_cast<int32_t>(c.num_heads));
  s.set_num_kv_heads(static_cast<int32_t>(c.num_kv_heads));
  s.set_head_dim(static_cast<int32_t>(c.head_dim));
  s.set_tied_embeddings(c.tie_word_embeddings ||
                        c.family == engine::hf::Family::kGpt2);
  s.set_qkv_bias(c.qkv_bias);
  s.set_qk_norm(c.qk_norm);
  s.set_max_positions(c.max_positions);
  return s;
}

absl::Status FillModelShape(v1::JobSpec* spec) {
  if (spec->model().pretrained().empty() ||
      spec->model().shape().num_layers() > 0) {
    return absl::OkStatus();
  }
  absl::StatusOr<v1::ModelShape> shape = ModelShapeOf(*spec, true);
  if (!shape.ok()) return shape.status();
  *spec->mutable_model()->mutable_shape() = *shape;
  return absl::OkStatus();
}

ParameterCount CountParameters(const v1::JobSpec& spec,
                               const v1::ModelShape& shape) {
  const Model m = Describe(shape);
  ParameterCount count;
  count.total = m.total;
  count.trainable = m.total;
  if (spec.adapter().kind() == v1::ADAPTER_KIND_LORA) {
    const AdapterPlan plan = PlanAdapter(spec.adapter(), m);
    count.total = m.total + plan.lora;
    count.trainable = plan.lora + plan.saved_params;
  }
  return count;
}

v1::MemoryEstimate EstimateMemory(const v1::JobSpec& spec,
                                  const v1::ModelShape& shape,
                                  v1::Precision precision, v1::BaseDtype base,
                                  const EstimateDevice& device) {
  const Model m = Describe(shape);
  const precision::Rules& rules = *precision::RulesOf(ToMode(precision));
  const bool half_compute = rules.compute == precision::Compute::kBf16 ||
                            rules.compute == precision::Compute::kFp16;
  const double c = half_compute ? 2 : 4;  // compute dtype
  const bool fp32_weights = rules.weights == precision::Weights::kFp32;
  const bool master = rules.weights == precision::Weights::kHalfFp32Master;
  const bool pure = rules.weights == precision::Weights::kHalfOnly;
  const double w = fp32_weights ? 4 : 2;  // trainable weights' dtype
  const bool autocast = fp32_weights && half_compute;
  const bool lora = spec.adapter().kind() == v1::ADAPTER_KIND_LORA;
  const AdapterPlan plan =
      lora ? PlanAdapter(spec.adapter(), m) : AdapterPlan();
  const size_t kinds = m.projections.size();

  const v1::ModelShape& s = shape;
  const double C = s.hidden_size(), I = s.intermediate_size();
  const double V = s.vocab_size(), L = s.num_layers();
  const double H = s.num_heads(), D = s.head_dim();
  const double HD = H * D, KVD = static_cast<double>(s.num_kv_heads()) * D;
  const double S = spec.data().seq_len(), B = spec.batch_size();
  const double T = B * S;

  // Trainable parameters, and the frozen base's bytes.
  double trainable = static_cast<double>(m.total);
  double base_bytes = 0, largest_materialized = 0, materialize_factor = 0;
  if (lora) {
    trainable = static_cast<double>(plan.lora + plan.saved_params);
    const bool dq = spec.adapter().double_quant();
    const bool stored_as_computed = base == v1::BASE_DTYPE_UNSPECIFIED ||
                                    (base == v1::BASE_DTYPE_FP32 && c == 4) ||
                                    (base == v1::BASE_DTYPE_BF16 && c == 2);
    double projection_weights = 0;
    for (size_t i = 0; i < kinds; ++i) {
      const Projection& p = m.projections[i];
      if (plan.saved[i]) continue;
      const double n = static_cast<double>(p.in) * p.out;
      projection_weights += L * n;
      base_bytes += L * n * BaseBytesPerWeight(base, dq, c, p.in);
      largest_materialized = std::max(largest_materialized, n);
    }
    // Everything else frozen (embeddings, norms, biases) in the compute
    // dtype.
    base_bytes += (static_cast<double>(m.total) - projection_weights -
                   plan.saved_params) *
                  c;
    if (!stored_as_computed) {
      // Materialize's temporaries: the codes widened to int64 and the fp32
      // values (nf4), the fp32 values and the product (int8), or the
      // converted copy.
      materialize_factor =
          base == v1::BASE_DTYPE_NF4 || base == v1::BASE_DTYPE_INT8 ? 8 + c : c;
    }
  }

  v1::MemoryEstimate e;
  e.set_precision(precision);
  e.set_base_dtype(lora ? base : v1::BASE_DTYPE_UNSPECIFIED);
  const double weights =
      trainable * w + (master ? trainable * 4 : 0) + base_bytes;
  const double grads = trainable * w;
  const bool adamw = spec.optimizer().name() != v1::OPTIMIZER_NAME_SGD;
  double optimizer = 0;
  if (pure) {
    optimizer = trainable * 2 * (adamw ? 2 : 1);
    if (spec.optimizer().pure_update() != v1::PURE_UPDATE_STOCHASTIC_ROUNDING) {
      optimizer += trainable * 2;  // Kahan compensation
    }
  } else {
    optimizer = trainable * 4 * (adamw ? 2 : 1);
  }

  // Activations autograd keeps, per micro-batch. The residual stream is in
  // the weights' dtype (a frozen base's: the compute dtype); a linear layer
  // saves its input in the compute dtype (autocast saves its cast copy).
  const double r = lora ? c : w;
  const double c_in = autocast && !lora ? c : r;
  auto trains = [&](size_t i) {
    return !lora || plan.adapted[i] || plan.saved[i];
  };
  double per_layer = 2 * T * C * r;  // the two norms' inputs
  double attention = device.cuda ? 0 : B * H * S * S * c;
  if (m.gpt2) {
    // c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj.
    if (trains(0)) per_layer += T * C * c_in;
    per_layer += 3 * T * C * c + attention;  // q, k, v (one qkv tensor)
    if (trains(1)) per_layer += T * C * c;
    if (trains(2)) per_layer += T * C * c_in;
    per_layer += T * I * c;  // GELU's input
    if (trains(3)) per_layer += T * I * c;
  } else {
    if (trains(0) || trains(1) || trains(2)) per_layer += T * C * c_in;
    if (s.qk_norm()) per_layer += T * (HD + KVD) * c;
    per_layer += 3 * T * HD * c + attention;  // q, k and v per query head
    if (trains(3)) per_layer += T * HD * c;
    if (trains(4) || trains(5)) per_layer += T * C * c_in;
    per_layer += 3 * T * I * c;  // gate, silu(gate), up
    if (trains(6)) per_layer += T * I * c;
  }
  if (lora) {
    const double dropout = spec.adapter().dropout();
    for (size_t i = 0; i < kinds; ++i) {
      if (!plan.adapted[i]) continue;
      per_layer += T * spec.adapter().rank() * c;
      if (dropout > 0) per_layer += T * m.projections[i].in * (c + 1);
    }
  }
  double activations = L * per_layer + T * C * r;  // final norm's input
  if (!lora) activations += T * C * c_in;          // the head's input
  activations += T * V * c;                        // logits, for the loss
  // The logits' gradient at the start of backward; autocast's 16-bit
  // weight copies (saved for backward); one materialized frozen layer.
  double workspace = T * V * c;
  if (autocast) workspace += trainable * c;
  workspace += largest_materialized * materialize_factor;
  if (device.bf16_emulated && !device.cuda &&
      rules.compute == precision::Compute::kBf16) {
    // The widest layer (the head, or the MLP) computed through fp32: its
    // output gradient widened and its weight widened for the input
    // gradient; a trained one also widens its input and accumulates the
    // weight gradient in fp32.
    double widest = V;
    for (const Projection& p : m.projections) {
      widest = std::max(widest, static_cast<double>(std::max(p.in, p.out)));
    }
    const double copies = lora ? 1 : 2;
    workspace += (T * widest + static_cast<double>(m.largest)) * 4 * copies;
  }

  e.set_weight_bytes(Saturate(weights));
  e.set_gradient_bytes(Saturate(grads));
  e.set_optimizer_state_bytes(Saturate(optimizer));
  e.set_activation_bytes(Saturate(activations));
  e.set_workspace_bytes(Saturate(workspace));
  // The optimizer's fp32 temporaries for the largest tensor ride with the
  // gradients.
  const double grad_phase = grads + 3.0 * 4 * m.largest;
  e.set_total_bytes(Saturate(weights + optimizer +
                             std::max(activations + workspace, grad_phase)));
  return e;
}

std::vector<v1::MemoryEstimate> EstimateTable(const v1::JobSpec& spec,
                                              const v1::ModelShape& shape,
                                              const EstimateDevice& device) {
  std::vector<v1::Precision> precisions;
  if (spec.precision() == v1::PRECISION_AUTO ||
      spec.precision() == v1::PRECISION_UNSPECIFIED) {
    for (const precision::Rules& rules : precision::AllModes()) {
      // fp16 modes and tf32 compute only on CUDA.
      if (!device.cuda && precision::NeedsCuda(rules.mode)) continue;
      precisions.push_back(ToProto(rules.mode));
    }
  } else {
    precisions.push_back(spec.precision());
  }
  std::vector<v1::BaseDtype> bases = {v1::BASE_DTYPE_UNSPECIFIED};
  if (spec.adapter().kind() == v1::ADAPTER_KIND_LORA) {
    bases = spec.adapter().base_dtype() != v1::BASE_DTYPE_UNSPECIFIED
                ? std::vector<v1::BaseDtype>{spec.adapter().base_dtype()}
                : std::vector<v1::BaseDtype>{
                      v1::BASE_DTYPE_FP32, v1::BASE_DTYPE_BF16,
                      v1::BASE_DTYPE_INT8, v1::BASE_DTYPE_NF4};
  }
  std::vector<v1::MemoryEstimate> rows;
  for (v1::Precision p : precisions) {
    for (v1::BaseDtype b : bases) {
      rows.push_back(EstimateMemory(spec, shape, p, b, device));
    }
  }
  return rows;
}

}  // namespace halftime
