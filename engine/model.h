// Internal: the models the engine trains.
//
//  * GPT (gpt-nano ~1M, gpt-micro ~10M, gpt-small = GPT-2 124M shape):
//    pre-LayerNorm decoder, causal self-attention, GELU MLP, tied input and
//    output embeddings, learned positions. LayerNorm, softmax and the loss
//    always run in fp32, whatever the weights' or autocast's dtype.
//  * MLP: three Linear layers with GELU, for tensor data.
//  * TorchScript: a torch.jit.save'd module; its parameters are trained and
//    its output is fed to the configured loss.
// Parameter names follow nanoGPT/GPT-2 ("wte.weight", "h.0.attn.c_attn.
// weight", ...); the Python parity script uses the same names.
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
#include "engine/options.h"
#include "engine/status.h"

namespace halftime::engine {

struct GptConfig {
  int64_t n_layer = 4;
  int64_t n_embd = 128;
  int64_t n_head = 4;
  int64_t block_size = 256;
  int64_t vocab_size = 256;
};

// Looks up a preset ("gpt-nano", "gpt-micro", "gpt-small") and applies the
// overrides in `shape`; `data_vocab` fills the vocabulary of presets that
// take it from the data (nano, micro). Returns false for unknown names.
bool GptPreset(const std::string& name, const GptShape& shape,
               int64_t data_vocab, GptConfig* out);

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
};

// Builds the model `options` names for `data`, initialized from the current
// torch seed. Errors name the field (model.builtin, model.torchscript, ...).
TrainStatus BuildModel(const ModelOptions& options, const Dataset& data,
                       std::unique_ptr<TrainModel>* out);

// Mean cross-entropy of `logits` [N, K] against class indices `targets`
// [N], computed in fp32 whatever the logits' dtype, with
// at::cross_entropy_loss's semantics (targets of -100 are ignored; a target
// outside [0, K) throws c10::Error). Keeps 16-bit logits in 16 bits for
// backward, so it costs half of at::cross_entropy_loss on fp32 logits.
at::Tensor CrossEntropy(const at::Tensor& logits, const at::Tensor& targets);

// LayerNorm over the last dimension computed in fp32 and returned in `x`'s
// dtype, with fp32 gradients rounded to the inputs' dtypes. Saves only `x`
// for backward, in its own dtype; backward recomputes the row statistics
// (bit-identical to forward's), so no precision holds fp32 statistics per
// row until backward. Forward equals at::layer_norm on fp32 `x`.
at::Tensor LayerNormFp32(const at::Tensor& x, const at::Tensor& weight,
                         const at::Tensor& bias);

// x W^T + b, as at::linear (`bias` may be undefined). For 16-bit weights that
// need gradients (master and pure modes) and a defined `bias`, backward
// computes the weight gradient first and frees `x` before it allocates the
// input gradient, so neither `x` nor the weight-gradient GEMM's scratch
// coincides with it. Such a graph can run backward once only (a second run
// throws c10::Error). Gradients equal at::linear's up to the GEMMs' summation
// order.
at::Tensor Linear(const at::Tensor& x, const at::Tensor& weight,
                  const at::Tensor& bias);

// The matmuls and GELU every model calls. Where bf16 compute runs on a CPU
// without native bf16 (bf16_emulation.h), Linear, Matmul and Gelu compute
// it in fp32 and round to bf16, instead of libtorch's naive bf16 kernels;
// elsewhere they are at::linear (above), at::matmul and at::gelu.
at::Tensor Matmul(const at::Tensor& a, const at::Tensor& b);
at::Tensor Gelu(const at::Tensor& x);

// The built-in GPT on its own (the benchmark's bare loop uses it).
std::unique_ptr<TrainModel> MakeGpt(const GptConfig& config);

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_MODEL_H_
