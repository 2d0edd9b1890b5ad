// The Llama family: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM
// and Qwen3ForCausalLM from Hugging Face folders. Pre-RMSNorm decoder,
// rotary positions, grouped-query attention (q/k/v biases for Qwen2,
// per-head q/k RMSNorm for Qwen3), SwiGLU MLP, tied or untied head.
// Parameters carry Hugging Face's names ("model.layers.0.self_attn.
// q_proj.weight"), so checkpoints load and export without a name map.

#include <string>
#include <vector>

#include "engine/hf/pretrained.h"
#include "engine/models/blocks.h"
#include "engine/models/common.h"
#include "engine/models/families.h"
#include "engine/models/kernels.h"

namespace halftime::engine {
namespace {

struct LlamaLayer {
  at::Tensor input_norm, post_attention_norm;
  AttentionWeights attention;
  GatedMlpWeights mlp;
};

class LlamaModel : public TrainModel {
 public:
  LlamaModel(const hf::ModelConfig& config)
      : config_(config),
        tree_(std::make_shared<ParamTree>()),
        inv_freq_(RopeInverseFrequencies(config.rope, config.head_dim)) {}

  // Takes every tensor of `folder` this config implies, in `dtype`.
  TrainStatus Load(hf::PretrainedFolder& folder, at::ScalarType dtype) {
    const hf::ModelConfig& c = config_;
    TrainStatus st;
    auto take = [&](const std::string& name,
                    std::vector<int64_t> shape) -> at::Tensor {
      if (!st.ok()) return {};
      at::Tensor t;
      st = folder.Take(name, shape, dtype, &t);
      return st.ok() ? tree_->Add(name, t) : at::Tensor();
    };
    const int64_t C = c.hidden_size, D = c.head_dim;
    const int64_t q_width = c.num_heads * D, kv_width = c.num_kv_heads * D;
    embed_ = take("model.embed_tokens.weight", {c.vocab_size, C});
    for (int64_t i = 0; i < c.num_layers; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      LlamaLayer l;
      l.input_norm = take(p + "input_layernorm.weight", {C});
      AttentionWeights& a = l.attention;
      a.q.weight = take(p + "self_attn.q_proj.weight", {q_width, C});
      a.k.weight = take(p + "self_attn.k_proj.weight", {kv_width, C});
      a.v.weight = take(p + "self_attn.v_proj.weight", {kv_width, C});
      a.o.weight = take(p + "self_attn.o_proj.weight", {C, q_width});
      if (c.qkv_bias) {
        a.q.bias = take(p + "self_attn.q_proj.bias", {q_width});
        a.k.bias = take(p + "self_attn.k_proj.bias", {kv_width});
        a.v.bias = take(p + "self_attn.v_proj.bias", {kv_width});
      }
      if (c.o_bias) a.o.bias = take(p + "self_attn.o_proj.bias", {C});
      if (c.qk_norm) {
        a.q_norm = take(p + "self_attn.q_norm.weight", {D});
        a.k_norm = take(p + "self_attn.k_norm.weight", {D});
      }
      l.post_attention_norm = take(p + "post_attention_layernorm.weight", {C});
      const int64_t I = c.intermediate_size;
      l.mlp.gate.weight = take(p + "mlp.gate_proj.weight", {I, C});
      l.mlp.up.weight = take(p + "mlp.up_proj.weight", {I, C});
      l.mlp.down.weight = take(p + "mlp.down_proj.weight", {C, I});
      if (c.mlp_bias) {
        l.mlp.gate.bias = take(p + "mlp.gate_proj.bias", {I});
        l.mlp.up.bias = take(p + "mlp.up_proj.bias", {I});
        l.mlp.down.bias = take(p + "mlp.down_proj.bias", {C});
      }
      layers_.push_back(std::move(l));
    }
    norm_ = take("model.norm.weight", {C});
    if (c.tie_word_embeddings) {
      // Some tied checkpoints still carry the head; it is the embedding.
      folder.Skip("lm_head.weight");
      lm_head_ = embed_;
    } else {
      lm_head_ = take("lm_head.weight", {c.vocab_size, C});
    }
    if (!st.ok()) return st;
    return folder.CheckAllTaken();
  }

  at::Tensor Output(const Batch& batch) override {
    const int64_t T = batch.inputs.size(1);
    const at::Tensor positions =
        batch.positions.defined()
            ? batch.positions
            : at::arange(T, batch.inputs.options().dtype(at::kLong));
    return Forward(batch.inputs, positions, batch.segments, nullptr);
  }
  int64_t vocab_size() const override { return config_.vocab_size; }
  int64_t max_positions() const override { return config_.max_positions; }
  at::Tensor Decode(const at::Tensor& inputs, KvCache* cache) override {
    const int64_t T = inputs.size(1);
    if (cache->layers.empty()) cache->layers.resize(layers_.size());
    const at::Tensor positions = at::arange(cache->length, cache->length + T,
                                            inputs.options().dtype(at::kLong));
    at::Tensor logits = Forward(inputs, positions, {}, cache);
    cache->length += T;
    return logits;
  }
  LossKind loss_kind() const override { return LossKind::kCrossEntropy; }
  std::vector<std::pair<std::string, at::Tensor>> NamedParameters() override {
    return ModuleParams(*tree_);
  }
  void To(at::Device device, at::ScalarType dtype) override {
    tree_->to(device, dtype);
  }
  // Parameters carry their Hugging Face names and layouts.
  std::vector<HfTensor> HfLayout() const override {
    std::vector<HfTensor> layout;
    for (const auto& [name, p] : ModuleParams(*tree_)) {
      layout.push_back({name, name, false});
    }
    return layout;
  }
  std::vector<LinearLayer> LinearLayers() override {
    std::vector<LinearLayer> out;
    for (size_t i = 0; i < layers_.size(); ++i) {
      const std::string prefix = "model.layers." + std::to_string(i) + ".";
      LlamaLayer& l = layers_[i];
      for (auto [name, p] : {std::pair<const char*, Projection*>{
                                 "self_attn.q_proj", &l.attention.q},
                             {"self_attn.k_proj", &l.attention.k},
                             {"self_attn.v_proj", &l.attention.v},
                             {"self_attn.o_proj", &l.attention.o},
                             {"mlp.gate_proj", &l.mlp.gate},
                             {"mlp.up_proj", &l.mlp.up},
                             {"mlp.down_proj", &l.mlp.down}}) {
        const std::string module = prefix + name;
        out.push_back({module, module + ".weight",
                       p->bias.defined() ? module + ".bias" : "", p});
      }
    }
    return out;
  }
  std::vector<std::string> DefaultAdapterTargets() const override {
    return {"q_proj", "v_proj"};
  }
  double TrainFlopsPerToken(int64_t seq_len) const override {
    const double n = static_cast<double>(CountParams(ModuleParams(*tree_)));
    return 6.0 * n + 12.0 * config_.num_layers * config_.num_heads *
                         config_.head_dim * seq_len;
  }

 private:
  at::Tensor Forward(const at::Tensor& inputs, const at::Tensor& positions,
                     const at::Tensor& segments, KvCache* cache) {
    const hf::ModelConfig& c = config_;
    at::Tensor cos, sin;
    RopeTables(inv_freq_.to(inputs.device()), positions, &cos, &sin);
    at::Tensor x = at::embedding(embed_, inputs);
    for (size_t i = 0; i < layers_.size(); ++i) {
      const LlamaLayer& l = layers_[i];
      x = x + GroupedQueryAttention(
                  RmsNormFp32(x, l.input_norm, c.norm_eps), l.attention,
                  c.num_heads, c.num_kv_heads, c.head_dim, c.norm_eps, cos, sin,
                  segments, cache != nullptr ? &cache->layers[i] : nullptr);
      x = x +
          GatedMlp(RmsNormFp32(x, l.post_attention_norm, c.norm_eps), l.mlp);
    }
    return Linear(RmsNormFp32(x, norm_, c.norm_eps), lm_head_);
  }

  hf::ModelConfig config_;
  std::shared_ptr<ParamTree> tree_;
  at::Tensor inv_freq_;
  at::Tensor embed_, norm_, lm_head_;
  std::vector<LlamaLayer> layers_;
};

}  // namespace

TrainStatus BuildLlama(hf::PretrainedFolder& folder, at::ScalarType dtype,
                       std::unique_ptr<TrainModel>* out) {
  auto model = std::make_unique<LlamaModel>(folder.config());
  TrainStatus st = model->Load(folder, dtype);
  if (!st.ok()) return st;
  *out = std::move(model);
  return TrainStatus::Ok();
}

}  // namespace halftime::engine
