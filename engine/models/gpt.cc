// The GPT family: the built-in GPTs (gpt-nano, gpt-micro, gpt-small) and
// Hugging Face's GPT2LMHeadModel, one network: pre-LayerNorm decoder,
// causal self-attention, GELU MLP, tied input and output embeddings,
// learned positions. LayerNorm, softmax and the loss always run in fp32,
// whatever the weights' or autocast's dtype. Parameter names follow
// nanoGPT/GPT-2 ("wte.weight", "h.0.attn.c_attn.weight", ...); the Python
// parity script uses the same names.

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cmath>
#include <string>
#include <vector>

#include "engine/hf/pretrained.h"
#include "engine/model.h"
#include "engine/models/common.h"
#include "engine/models/families.h"
#include "engine/models/kernels.h"
#include "rules/models.h"

namespace halftime::engine {
namespace {

at::Tensor LayerNormOf(const at::Tensor& x, const torch::nn::LayerNorm& ln,
                       double eps) {
  return LayerNormFp32(x, ln->weight, ln->bias, eps);
}

struct AttentionImpl : torch::nn::Module {
  AttentionImpl(int64_t n_embd, int64_t n_head)
      : n_head(n_head),
        c_attn(
            register_module("c_attn", torch::nn::Linear(n_embd, 3 * n_embd))),
        c_proj(register_module("c_proj", torch::nn::Linear(n_embd, n_embd))),
        qkv{c_attn->weight, c_attn->bias, nullptr, nullptr},
        out{c_proj->weight, c_proj->bias, nullptr, nullptr} {}

  // `segments` and `cache` as GroupedQueryAttention takes them.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& segments,
                     LayerCache* cache) {
    const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
    const int64_t D = C / n_head;
    auto qkv_heads = Project(x, qkv).split(C, 2);
    at::Tensor q = qkv_heads[0].view({B, T, n_head, D}).transpose(1, 2);
    at::Tensor k = qkv_heads[1].view({B, T, n_head, D}).transpose(1, 2);
    at::Tensor v = qkv_heads[2].view({B, T, n_head, D}).transpose(1, 2);
    if (cache != nullptr) {
      if (cache->keys.defined()) {
        k = at::cat({cache->keys, k}, 2);
        v = at::cat({cache->values, v}, 2);
      }
      cache->keys = k;
      cache->values = v;
    }
    at::Tensor y =
        CausalAttention(q, k, v, segments).transpose(1, 2).contiguous();
    return Project(y.view({B, T, C}), out);
  }

  int64_t n_head;
  torch::nn::Linear c_attn;
  torch::nn::Linear c_proj;
  // The two layers as the forward pass calls them (sharing their tensors).
  Projection qkv, out;
};
TORCH_MODULE(Attention);

struct MlpBlockImpl : torch::nn::Module {
  MlpBlockImpl(int64_t n_embd, int64_t n_inner, bool gelu_tanh)
      : gelu_approximate(gelu_tanh ? "tanh" : "none"),
        c_fc(register_module("c_fc", torch::nn::Linear(n_embd, n_inner))),
        c_proj(register_module("c_proj", torch::nn::Linear(n_inner, n_embd))),
        fc{c_fc->weight, c_fc->bias, nullptr, nullptr},
        proj{c_proj->weight, c_proj->bias, nullptr, nullptr} {}
  at::Tensor forward(const at::Tensor& x) {
    return Project(Gelu(Project(x, fc), gelu_approximate), proj);
  }
  std::string gelu_approximate;
  torch::nn::Linear c_fc;
  torch::nn::Linear c_proj;
  Projection fc, proj;
};
TORCH_MODULE(MlpBlock);

struct BlockImpl : torch::nn::Module {
  explicit BlockImpl(const GptConfig& c)
      : eps(c.layer_norm_eps),
        ln_1(register_module(
            "ln_1",
            torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.n_embd})))),
        attn(register_module("attn", Attention(c.n_embd, c.n_head))),
        ln_2(register_module(
            "ln_2",
            torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.n_embd})))),
        mlp(register_module(
            "mlp", MlpBlock(c.n_embd, c.n_inner > 0 ? c.n_inner : 4 * c.n_embd,
                            c.gelu_tanh))) {}
  at::Tensor forward(at::Tensor x, const at::Tensor& segments,
                     LayerCache* cache) {
    x = x + attn->forward(LayerNormOf(x, ln_1, eps), segments, cache);
    x = x + mlp->forward(LayerNormOf(x, ln_2, eps));
    return x;
  }
  double eps;
  torch::nn::LayerNorm ln_1;
  Attention attn;
  torch::nn::LayerNorm ln_2;
  MlpBlock mlp;
};
TORCH_MODULE(Block);

struct GptNet : torch::nn::Module {
  explicit GptNet(const GptConfig& c)
      : config(c),
        wte(register_module("wte",
                            torch::nn::Embedding(c.vocab_size, c.n_embd))),
        wpe(register_module("wpe",
                            torch::nn::Embedding(c.block_size, c.n_embd))),
        h(register_module("h", torch::nn::ModuleList())),
        ln_f(register_module(
            "ln_f",
            torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.n_embd})))) {
    for (int64_t i = 0; i < c.n_layer; ++i) {
      blocks.push_back(Block(c));
      h->push_back(blocks.back());
    }
    // nanoGPT/GPT-2 initialization, in named_parameters order.
    torch::NoGradGuard no_grad;
    const double proj_std = 0.02 / std::sqrt(2.0 * c.n_layer);
    for (auto& p : named_parameters()) {
      const std::string& name = p.key();
      at::Tensor t = p.value();
      if (name.find("ln_") != std::string::npos) {
        if (name.size() >= 6 &&
            name.compare(name.size() - 6, 6, "weight") == 0) {
          t.fill_(1.0);
        } else {
          t.zero_();
        }
      } else if (name.size() >= 4 &&
                 name.compare(name.size() - 4, 4, "bias") == 0) {
        t.zero_();
      } else if (name.find("c_proj.weight") != std::string::npos) {
        t.normal_(0.0, proj_std);
      } else {
        t.normal_(0.0, 0.02);
      }
    }
  }

  // Logits of `idx` [B, T]. `positions` [B, T] (packed examples) may be
  // undefined for 0..T-1; with `cache`, idx continues the cached sequence.
  at::Tensor Logits(const at::Tensor& idx, const at::Tensor& positions,
                    const at::Tensor& segments, KvCache* cache) {
    const int64_t T = idx.size(1);
    const int64_t past = cache != nullptr ? cache->length : 0;
    TORCH_CHECK(past + T <= config.block_size, "sequence of ", past + T,
                " tokens exceeds the model's ", config.block_size,
                " positions");
    // Positions past..past+T-1 are rows of wpe: a slice, unlike an
    // embedding lookup of arange(T), saves no index tensor for backward.
    at::Tensor x = at::embedding(wte->weight, idx) +
                   (positions.defined() ? at::embedding(wpe->weight, positions)
                                        : wpe->weight.narrow(0, past, T));
    if (cache != nullptr && cache->layers.empty()) {
      cache->layers.resize(blocks.size());
    }
    for (size_t i = 0; i < blocks.size(); ++i) {
      x = blocks[i]->forward(x, segments,
                             cache != nullptr ? &cache->layers[i] : nullptr);
    }
    if (cache != nullptr) cache->length += T;
    x = LayerNormOf(x, ln_f, config.layer_norm_eps);
    return Linear(x, wte->weight);  // tied output embedding
  }

  GptConfig config;
  torch::nn::Embedding wte;
  torch::nn::Embedding wpe;
  torch::nn::ModuleList h;
  std::vector<Block> blocks;
  torch::nn::LayerNorm ln_f;
};

class GptModel : public TrainModel {
 public:
  explicit GptModel(const GptConfig& c) : net_(std::make_shared<GptNet>(c)) {}
  at::Tensor Output(const Batch& batch) override {
    return net_->Logits(batch.inputs, batch.positions, batch.segments, nullptr);
  }
  int64_t vocab_size() const override { return net_->config.vocab_size; }
  int64_t max_positions() const override { return net_->config.block_size; }
  at::Tensor Decode(const at::Tensor& inputs, KvCache* cache) override {
    return net_->Logits(inputs, {}, {}, cache);
  }
  LossKind loss_kind() const override { return LossKind::kCrossEntropy; }
  std::vector<std::pair<std::string, at::Tensor>> NamedParameters() override {
    return ModuleParams(*net_);
  }
  void To(at::Device device, at::ScalarType dtype) override {
    net_->to(device, dtype);
  }
  double TrainFlopsPerToken(int64_t seq_len) const override {
    const GptConfig& c = net_->config;
    const double n = static_cast<double>(CountParams(ModuleParams(*net_)));
    return 6.0 * n + 12.0 * c.n_layer * c.n_embd * seq_len;
  }
  std::vector<HfTensor> HfLayout() const override { return hf_layout_; }
  // GPT2LMHeadModel's modules sit under "transformer."; the built-ins'
  // under no prefix.
  std::vector<LinearLayer> LinearLayers() override {
    const std::string root = hf_layout_.empty() ? "" : "transformer.";
    std::vector<LinearLayer> out;
    for (size_t i = 0; i < net_->blocks.size(); ++i) {
      const std::string prefix = "h." + std::to_string(i) + ".";
      Block& b = net_->blocks[i];
      for (auto [name, p] :
           {std::pair<const char*, Projection*>{"attn.c_attn", &b->attn->qkv},
            {"attn.c_proj", &b->attn->out},
            {"mlp.c_fc", &b->mlp->fc},
            {"mlp.c_proj", &b->mlp->proj}}) {
        const std::string param = prefix + name;
        out.push_back({root + param, param + ".weight", param + ".bias", p});
      }
    }
    return out;
  }
  std::vector<std::string> DefaultAdapterTargets() const override {
    return {"c_attn"};
  }
  void set_hf_layout(std::vector<HfTensor> layout) {
    hf_layout_ = std::move(layout);
  }

 private:
  std::shared_ptr<GptNet> net_;
  std::vector<HfTensor> hf_layout_;
};

// Our parameter name for a GPT-2 checkpoint's tensor name is the same after
// the optional "transformer." prefix; these four are Conv1D weights, stored
// [in, out] where a Linear holds [out, in].
bool IsConv1DWeight(const std::string& name) {
  for (const char* suffix : {"attn.c_attn.weight", "attn.c_proj.weight",
                             "mlp.c_fc.weight", "mlp.c_proj.weight"}) {
    const std::string s(suffix);
    if (name.size() >= s.size() &&
        name.compare(name.size() - s.size(), s.size(), s) == 0) {
      return true;
    }
  }
  return false;
}

}  // namespace

TrainStatus BuildGpt2(hf::PretrainedFolder& folder, at::ScalarType dtype,
                      std::unique_ptr<TrainModel>* out) {
  const hf::ModelConfig& hc = folder.config();
  GptConfig c;
  c.n_layer = hc.num_layers;
  c.n_embd = hc.hidden_size;
  c.n_head = hc.num_heads;
  c.block_size = hc.max_positions;
  c.vocab_size = hc.vocab_size;
  c.n_inner = hc.intermediate_size;
  c.layer_norm_eps = hc.norm_eps;
  c.gelu_tanh = hc.activation == "gelu_tanh";
  auto model = std::make_unique<GptModel>(c);
  model->To(at::kCPU, dtype);
  const std::string prefix =
      folder.Has("transformer.wte.weight") ? "transformer." : "";
  at::NoGradGuard no_grad;
  std::vector<HfTensor> layout;
  for (auto& [name, p] : model->NamedParameters()) {
    const bool conv = IsConv1DWeight(name);
    layout.push_back({name, prefix + name, conv});
    std::vector<int64_t> shape = p.sizes().vec();
    if (conv) std::swap(shape[0], shape[1]);
    at::Tensor t;
    TrainStatus st = folder.Take(prefix + name, shape, dtype, &t);
    if (!st.ok()) return st;
    p.copy_(conv ? t.t() : t);
  }
  // The causal-mask buffers older GPT-2 checkpoints carry, and a head that
  // repeats the tied embedding.
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string layer = prefix + "h." + std::to_string(i) + ".attn.";
    folder.Skip(layer + "bias");
    folder.Skip(layer + "masked_bias");
  }
  folder.Skip("lm_head.weight");
  TrainStatus st = folder.CheckAllTaken();
  if (!st.ok()) return st;
  model->set_hf_layout(std::move(layout));
  *out = std::move(model);
  return TrainStatus::Ok();
}

bool GptPreset(const std::string& name, const GptShape& shape,
               int64_t data_vocab, GptConfig* out) {
  const models::Builtin* builtin = models::FindBuiltin(name);
  if (builtin == nullptr || builtin->gpt.n_layer == 0) return false;
  const models::GptShapeDefaults& d = builtin->gpt;
  GptConfig c;
  c.n_layer = d.n_layer;
  c.n_embd = d.n_embd;
  c.n_head = d.n_head;
  c.block_size = d.block_size;
  c.vocab_size = d.vocab_size > 0 ? d.vocab_size : data_vocab;
  if (shape.n_layer > 0) c.n_layer = shape.n_layer;
  if (shape.n_embd > 0) c.n_embd = shape.n_embd;
  if (shape.n_head > 0) c.n_head = shape.n_head;
  if (shape.block_size > 0) c.block_size = shape.block_size;
  if (shape.vocab_size > 0) c.vocab_size = shape.vocab_size;
  *out = c;
  return true;
}

std::unique_ptr<TrainModel> MakeGpt(const GptConfig& config) {
  return std::make_unique<GptModel>(config);
}

}  // namespace halftime::engine
