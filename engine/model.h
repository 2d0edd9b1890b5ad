// Internal: the models the engine trains, behind one interface. Each
// family has its own file in models/ (families.h lists them):
//
//  * GPT (models/gpt.cc): the built-ins gpt-nano ~1M, gpt-micro ~10M,
//    gpt-small = GPT-2 124M shape, and Hugging Face GPT2LMHeadModel.
//  * Llama (models/llama.cc): Hugging Face Llama, Mistral, Qwen2, Qwen3.
//  * MLP (models/mlp.cc): three Linear layers with GELU, for tensor data.
//  * TorchScript (models/torchscript.cc): a torch.jit.save'd module.
// Norms, softmax and the loss always run in fp32, whatever the weights' or
// autocast's dtype (models/kernels.h).
//
// Thread safety: not thread-safe; owned by one training loop.

#ifndef HALFTIME_ENGINE_MODEL_H_
#define HALFTIME_ENGINE_MODEL_H_

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/data.h"
#include "engine/models/blocks.h"
#include "engine/models/kernels.h"
#include "engine/options.h"
#include "engine/status.h"

namespace halftime::engine {

struct GptConfig {
  int64_t n_layer = 4;
  int64_t n_embd = 128;
  int64_t n_head = 4;
  int64_t block_size = 256;
  int64_t vocab_size = 256;
  // MLP width; 0 = 4 * n_embd.
  int64_t n_inner = 0;
  double layer_norm_eps = 1e-5;
  // GELU's tanh approximation (GPT-2's gelu_new) instead of the exact erf.
  bool gelu_tanh = false;
};

// Looks up a preset ("gpt-nano", "gpt-micro", "gpt-small") and applies the
// overrides in `shape`; `data_vocab` fills the vocabulary of presets that
// take it from the data (nano, micro). Returns false for unknown names.
bool GptPreset(const std::string& name, const GptShape& shape,
               int64_t data_vocab, GptConfig* out);

// Where a trainable parameter goes in a Hugging Face folder: its tensor
// name there, and whether it is stored transposed (GPT-2's Conv1D).
struct HfTensor {
  std::string param_name;
  std::string hf_name;
  bool transposed = false;
};

// What a generation has computed so far: each layer's keys and values, so
// a new token costs one position's work. Owned by the caller; one cache per
// sequence batch, used with one model.
struct KvCache {
  std::vector<LayerCache> layers;
  // Positions the cache holds.
  int64_t length = 0;
};

// A linear layer adapters may wrap (adapter.h): its module name as
// Hugging Face and PEFT spell it ("model.layers.0.self_attn.q_proj"), its
// parameters' names in NamedParameters(), and the projection the forward
// pass calls.
struct LinearLayer {
  std::string module;
  std::string weight_param;
  std::string bias_param;  // empty when the layer has no bias
  Projection* projection = nullptr;
};

class TrainModel {
 public:
  virtual ~TrainModel() = default;
  // The model's output on `batch` (already on the device): logits for
  // cross_entropy, predictions for mse.
  virtual at::Tensor Output(const Batch& batch) = 0;
  // The loss applied to Output().
  virtual LossKind loss_kind() const = 0;
  // Scalar fp32 loss of the model on `batch`.
  at::Tensor Loss(const Batch& batch);
  // One forward pass for evaluation: adds the batch's mean loss to
  // `*loss_sum` and, for cross_entropy, the positions whose arg-max
  // prediction equals the target to `*correct` out of `*total`.
  void Evaluate(const Batch& batch, double* loss_sum, int64_t* correct,
                int64_t* total);
  // Trainable parameters, in a stable order, with unique names.
  virtual std::vector<std::pair<std::string, at::Tensor>> NamedParameters() = 0;
  // Casts all floating parameters and buffers to `dtype` and moves them to
  // `device`.
  virtual void To(at::Device device, at::ScalarType dtype) = 0;
  // Training FLOPs per token (6N plus attention over `seq_len` positions);
  // per sample for non-token models.
  virtual double TrainFlopsPerToken(int64_t seq_len) const = 0;
  // Saves a TorchScript module (TorchScript models only); returns "" or an
  // error message.
  virtual std::string SaveTorchScript(const std::string& path) {
    (void)path;
    return "not a TorchScript model";
  }
  virtual bool is_torchscript() const { return false; }
  // For a model built from a Hugging Face folder, every parameter's place
  // in that folder's layout (for export); empty otherwise.
  virtual std::vector<HfTensor> HfLayout() const { return {}; }
  // Language models: logits [B, T, vocab] of `inputs` [B, T] continuing the
  // sequence in `cache` (at positions cache->length onward), whose keys and
  // values are appended. Call without grad. Undefined for models that
  // cannot generate (MLP, TorchScript).
  // Language models: the number of token ids the model reads and predicts;
  // 0 for others.
  virtual int64_t vocab_size() const { return 0; }
  // Language models: the positions the model was built for (its context);
  // generation stops there.
  virtual int64_t max_positions() const { return 0; }
  virtual at::Tensor Decode(const at::Tensor& inputs, KvCache* cache) {
    (void)inputs;
    (void)cache;
    return {};
  }
  // The decoder's linear layers, in forward order (the output head is not
  // one); empty for models adapters cannot wrap (MLP, TorchScript). The
  // pointers live as long as the model.
  virtual std::vector<LinearLayer> LinearLayers() { return {}; }
  // PEFT's default target_modules for the family ({"q_proj", "v_proj"}
  // for Llama, {"c_attn"} for GPT-2).
  virtual std::vector<std::string> DefaultAdapterTargets() const { return {}; }
};

// Builds the model `options` names for `data`. Built-ins are initialized
// from the current torch seed in fp32; a pretrained folder's weights are
// loaded straight into `param_dtype` (the precision's weight dtype), never
// widened on the way. Errors name the field (model.builtin, ...) or the
// file and tensor.
TrainStatus BuildModel(const ModelOptions& options, const Dataset& data,
                       at::ScalarType param_dtype,
                       std::unique_ptr<TrainModel>* out);

// The built-in GPT on its own (the benchmark's bare loop uses it).
std::unique_ptr<TrainModel> MakeGpt(const GptConfig& config);

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_MODEL_H_
