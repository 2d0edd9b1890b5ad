#include "engine/model.h"

#include <torch/autograd.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/script.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/autograd_util.h"
#include "engine/bf16_emulation.h"
#include "rules/models.h"

namespace halftime::engine {
namespace {

TrainStatus Invalid(const std::string& msg) {
  return TrainStatus::Error(TrainStatus::kInvalidInput, msg);
}

// Rows per fp32 slice in LayerNormFp32Fn. The fp32 copies of input, output
// and gradient exist for one slice at a time: done whole, they would be
// three fp32 activations at the start of backward, which is the step's
// memory peak (measured on gpt-micro: ~6 MB of bf16-pure's peak).
constexpr int64_t kLayerNormSliceRows = 512;

// On a GPU a slice is one kernel launch per op, and launches, not bytes,
// bound a small slice: a gpt-small LayerNorm ([16384, 768]) in 512-row
// slices is 32 launches per op. CUDA LayerNorms run whole, and the loss in
// slices of 4096 rows (an fp32 [4096, 50257] slice is 0.8 GiB).
int64_t LayerNormSliceRows(const at::Tensor& x, int64_t rows) {
  return x.is_cuda() ? std::max<int64_t>(rows, 1) : kLayerNormSliceRows;
}

// LayerNorm computed in fp32 that saves only its input (in its own dtype:
// not an fp32 copy of a 16-bit input) for backward, which recomputes the row
// statistics. Saving them (as at::layer_norm does) keeps two fp32 values per
// row per layer until backward: the same bytes in every precision, so at
// the step's peak they are the part a 16-bit mode cannot halve (0.38 MiB of
// gpt-micro's). Recomputing them costs a LayerNorm forward in backward:
// measured 1.1 ms per gpt-micro LayerNorm ([4096, 384], 2 threads), 14 ms
// a step, ~1.5% of a bf16-mixed step, in every precision alike. Rows are
// independent, so backward, and forward for a 16-bit input, walk the rows in
// slices; the weight and bias gradients are summed over the slices in fp32.
struct LayerNormFp32Fn : torch::autograd::Function<LayerNormFp32Fn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx,
                            const at::Tensor& x, const at::Tensor& w,
                            const at::Tensor& b) {
    const int64_t width = x.size(-1);
    const at::Tensor rows = x.reshape({-1, width});
    const int64_t n = rows.size(0);
    const at::Tensor w32 = w.to(at::kFloat), b32 = b.to(at::kFloat);
    ctx->save_for_backward({x, w, b});
    if (x.scalar_type() == at::kFloat) {
      return std::get<0>(at::native_layer_norm(rows, {width}, w32, b32, kEps))
          .view(x.sizes());
    }
    at::Tensor y = at::empty_like(rows);
    const int64_t slice = LayerNormSliceRows(x, n);
    for (int64_t first = 0; first < n; first += slice) {
      const int64_t len = std::min(slice, n - first);
      y.narrow(0, first, len)
          .copy_(std::get<0>(
              at::native_layer_norm(rows.narrow(0, first, len).to(at::kFloat),
                                    {width}, w32, b32, kEps)));
    }
    return y.view(x.sizes());
  }
  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &b = saved[2];
    const int64_t width = x.size(-1);
    const at::Tensor rows = x.reshape({-1, width});
    const at::Tensor grad_rows = grad_out[0].reshape({-1, width});
    const int64_t n = rows.size(0);
    const at::Tensor w32 = w.to(at::kFloat), b32 = b.to(at::kFloat);
    at::Tensor dx = at::empty_like(rows);
    at::Tensor dw = at::zeros({width}, w32.options());
    at::Tensor db = at::zeros({width}, b32.options());
    const int64_t slice = LayerNormSliceRows(x, n);
    for (int64_t first = 0; first < n; first += slice) {
      const int64_t len = std::min(slice, n - first);
      const at::Tensor x32 = rows.narrow(0, first, len).to(at::kFloat);
      // The same kernel on the same rows: bit-identical to forward's.
      auto [unused_y, mean, rstd] =
          at::native_layer_norm(x32, {width}, w32, b32, kEps);
      auto [dx32, dw_part, db_part] = at::native_layer_norm_backward(
          grad_rows.narrow(0, first, len).to(at::kFloat), x32, {width}, mean,
          rstd, w32, b32, {true, true, true});
      dx.narrow(0, first, len).copy_(dx32);
      dw.add_(dw_part);
      db.add_(db_part);
    }
    return {dx.view(x.sizes()), dw.to(w.scalar_type()), db.to(b.scalar_type())};
  }
  static constexpr double kEps = 1e-5;
};

at::Tensor LayerNormOf(const at::Tensor& x, const torch::nn::LayerNorm& ln) {
  return LayerNormFp32(x, ln->weight, ln->bias);
}

// y = x W^T + b for 16-bit weights (master and pure modes), whose backward
// computes the weight gradient first and then drops the layer's input before
// allocating the input gradient. At the step's memory peak (the last MLP
// projection's backward) that keeps two things off the largest tensor of
// the layer's backward: oneDNN's scratch buffer for the bf16 weight-gradient
// GEMM (1.5 MiB on gpt-micro) and the input itself, so the peak moves to
// GELU's backward, which holds the same bytes and no scratch. fp32 (no
// scratch; measured: the same fp32 peak either way) and autocast (which
// casts inside at::linear) keep at::linear. The input is kept outside
// save_for_backward, so an in-place change to it after forward would go
// unnoticed: no caller makes one.
struct WeightGradFirstLinearFn
    : torch::autograd::Function<WeightGradFirstLinearFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx,
                            const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& bias) {
    SaveInputOnce(ctx, x);  // dropped once the weight gradient is done
    ctx->save_for_backward({weight});
    return at::linear(x, weight, bias);
  }
  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grad_out) {
    at::Tensor x = TakeSavedInput(ctx);
    const at::Tensor weight = ctx->get_saved_variables()[0];
    const std::vector<int64_t> x_sizes = x.sizes().vec();
    const at::Tensor g = grad_out[0].reshape({-1, weight.size(0)});
    at::Tensor grad_x, grad_weight, grad_bias;
    if (ctx->needs_input_grad(1)) {
      grad_weight = g.t().mm(x.reshape({-1, weight.size(1)}));
    }
    // Nothing else holds a layer's input (GELU saves its own input), so this
    // frees it before the input gradient, of the same size, is allocated.
    x.reset();
    if (ctx->needs_input_grad(2)) grad_bias = g.sum(0);
    if (ctx->needs_input_grad(0)) grad_x = g.mm(weight).view(x_sizes);
    return {grad_x, grad_weight, grad_bias};
  }
};

struct AttentionImpl : torch::nn::Module {
  AttentionImpl(int64_t n_embd, int64_t n_head)
      : n_head(n_head),
        c_attn(
            register_module("c_attn", torch::nn::Linear(n_embd, 3 * n_embd))),
        c_proj(register_module("c_proj", torch::nn::Linear(n_embd, n_embd))) {}

  at::Tensor forward(const at::Tensor& x) {
    const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
    const int64_t D = C / n_head;
    auto qkv = Linear(x, c_attn->weight, c_attn->bias).split(C, 2);
    at::Tensor q = qkv[0].view({B, T, n_head, D}).transpose(1, 2);
    at::Tensor k = qkv[1].view({B, T, n_head, D}).transpose(1, 2);
    at::Tensor v = qkv[2].view({B, T, n_head, D}).transpose(1, 2);
#if TORCH_VERSION_MAJOR >= 2
    if (x.is_cuda()) {
      // libtorch 2's fused attention (flash for 16-bit, memory-efficient
      // for fp32): the same causal softmax(q k^T / sqrt(D)) v with fp32
      // accumulation, without the [T, T] scores in memory. What PyTorch's
      // own GPT uses on a GPU, so the step times compare like for like.
      at::Tensor y = at::scaled_dot_product_attention(q, k, v, {}, 0.0,
                                                      /*is_causal=*/true);
      return Linear(y.transpose(1, 2).contiguous().view({B, T, C}),
                    c_proj->weight, c_proj->bias);
    }
#endif
    at::Tensor att = Matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(D));
    // The causal mask as an additive -inf bias: unlike masked_fill_, an
    // in-place add saves nothing for backward (the softmax's zero outputs
    // already zero the gradient there), so no mask per layer is held until
    // backward. -inf + x is -inf and 0 + x is x: the scores are the same.
    const at::Tensor causal_bias =
        at::full({T, T}, -std::numeric_limits<float>::infinity(), att.options())
            .triu(1);
    // In place: the scaled scores are not saved for backward. The softmax
    // keeps the scores' dtype (bf16 under autocast, so the saved output is
    // half the size) but computes in fp32: libtorch's CPU and CUDA softmax
    // kernels accumulate reduced-precision inputs in fp32 (bit-identical to
    // softmax(x.float()).to(bf16)).
    att.add_(causal_bias);
    // The explicit dtype also keeps CUDA autocast (which would return fp32
    // softmax) from saving an fp32 copy of the probabilities.
    att = at::softmax(att, -1, att.scalar_type());
    at::Tensor y = Matmul(att, v).transpose(1, 2).contiguous().view({B, T, C});
    return Linear(y, c_proj->weight, c_proj->bias);
  }

  int64_t n_head;
  torch::nn::Linear c_attn;
  torch::nn::Linear c_proj;
};
TORCH_MODULE(Attention);

struct MlpBlockImpl : torch::nn::Module {
  explicit MlpBlockImpl(int64_t n_embd)
      : c_fc(register_module("c_fc", torch::nn::Linear(n_embd, 4 * n_embd))),
        c_proj(
            register_module("c_proj", torch::nn::Linear(4 * n_embd, n_embd))) {}
  at::Tensor forward(const at::Tensor& x) {
    return Linear(Gelu(Linear(x, c_fc->weight, c_fc->bias)), c_proj->weight,
                  c_proj->bias);
  }
  torch::nn::Linear c_fc;
  torch::nn::Linear c_proj;
};
TORCH_MODULE(MlpBlock);

struct BlockImpl : torch::nn::Module {
  BlockImpl(int64_t n_embd, int64_t n_head)
      : ln_1(register_module(
            "ln_1",
            torch::nn::LayerNorm(torch::nn::LayerNormOptions({n_embd})))),
        attn(register_module("attn", Attention(n_embd, n_head))),
        ln_2(register_module(
            "ln_2",
            torch::nn::LayerNorm(torch::nn::LayerNormOptions({n_embd})))),
        mlp(register_module("mlp", MlpBlock(n_embd))) {}
  at::Tensor forward(at::Tensor x) {
    x = x + attn->forward(LayerNormOf(x, ln_1));
    x = x + mlp->forward(LayerNormOf(x, ln_2));
    return x;
  }
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
      blocks.push_back(Block(c.n_embd, c.n_head));
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

  at::Tensor Logits(const at::Tensor& idx) {
    // Positions 0..T-1 are the first T rows of wpe: a slice, unlike an
    // embedding lookup of arange(T), saves no index tensor for backward.
    const int64_t T = idx.size(1);
    at::Tensor x =
        at::embedding(wte->weight, idx) + wpe->weight.narrow(0, 0, T);
    for (auto& b : blocks) x = b->forward(x);
    x = LayerNormOf(x, ln_f);
    return Linear(x, wte->weight, at::Tensor());  // tied output embedding
  }

  GptConfig config;
  torch::nn::Embedding wte;
  torch::nn::Embedding wpe;
  torch::nn::ModuleList h;
  std::vector<Block> blocks;
  torch::nn::LayerNorm ln_f;
};

std::vector<std::pair<std::string, at::Tensor>> ModuleParams(
    torch::nn::Module& m) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (auto& p : m.named_parameters()) out.emplace_back(p.key(), p.value());
  return out;
}

// Rows per fp32 slice in CrossEntropyFn.
constexpr int64_t kCrossEntropySliceRows = 1024;
constexpr int64_t kCudaCrossEntropySliceRows = 4096;

int64_t CrossEntropySliceRows(const at::Tensor& logits) {
  return logits.is_cuda() ? kCudaCrossEntropySliceRows : kCrossEntropySliceRows;
}
// at::cross_entropy_loss's default: targets equal to it count for nothing.
constexpr int64_t kIgnoreIndex = -100;

// Mean cross-entropy of `logits` [N, K] (any float dtype) against class
// indices `targets` [N], as at::cross_entropy_loss (ignore_index -100
// included) but computed in fp32 a slice of rows at a time. It saves the
// logits in their own dtype and one fp32 log-sum-exp per row instead of an
// fp32 log-softmax, and never holds a full-size fp32 copy: for 16-bit
// logits that halves what the loss keeps for backward and what its backward
// allocates at the start of backward, where the step's memory peaks.
struct CrossEntropyFn : torch::autograd::Function<CrossEntropyFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx,
                            const at::Tensor& logits,
                            const at::Tensor& targets) {
    const int64_t n = logits.size(0);
    const at::Tensor valid = targets.ne(kIgnoreIndex);
    // Ignored rows pick class 0 and are masked out of loss and gradient.
    const at::Tensor picks = targets.masked_fill(valid.logical_not(), 0);
    if (logits.is_cuda()) {
      // On CUDA an out-of-range index is a device-side assert that breaks
      // the context; check first (gather checks on the CPU).
      TORCH_CHECK(
          !picks.lt(0).logical_or(picks.ge(logits.size(1))).any().item<bool>(),
          "cross_entropy: a target is outside [0, ", logits.size(1),
          ") and not -100");
    }
    const auto fp32 = logits.options().dtype(at::kFloat);
    at::Tensor lse = at::empty({n}, fp32);
    at::Tensor picked = at::empty({n}, fp32);
    const int64_t slice = CrossEntropySliceRows(logits);
    for (int64_t first = 0; first < n; first += slice) {
      const int64_t len = std::min(slice, n - first);
      const at::Tensor slice = logits.narrow(0, first, len).to(at::kFloat);
      lse.narrow(0, first, len).copy_(at::logsumexp(slice, {1}));
      // gather checks every target against the class count.
      picked.narrow(0, first, len)
          .copy_(slice.gather(1, picks.narrow(0, first, len).unsqueeze(1))
                     .squeeze(1));
    }
    const at::Tensor count = valid.sum().to(at::kFloat);
    ctx->save_for_backward({logits, picks, valid, lse, count});
    return (lse - picked).mul_(valid).sum().div_(count);
  }
  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &logits = saved[0], &picks = saved[1], &valid = saved[2];
    const at::Tensor &lse = saved[3], &count = saved[4];
    const int64_t n = logits.size(0);
    // d loss / d logit = (softmax - onehot(target)) * grad / count, per row.
    const at::Tensor row_scale =
        valid.to(at::kFloat).mul_(grad_out[0].to(at::kFloat).div(count));
    at::Tensor dlogits = at::empty_like(logits);
    const int64_t slice = CrossEntropySliceRows(logits);
    for (int64_t first = 0; first < n; first += slice) {
      const int64_t len = std::min(slice, n - first);
      at::Tensor d = logits.narrow(0, first, len)
                         .to(at::kFloat)
                         .sub_(lse.narrow(0, first, len).unsqueeze(1))
                         .exp_();
      const at::Tensor index = picks.narrow(0, first, len).unsqueeze(1);
      d.scatter_add_(1, index, at::full_like(index, -1.0, d.options()));
      d.mul_(row_scale.narrow(0, first, len).unsqueeze(1));
      dlogits.narrow(0, first, len).copy_(d);
    }
    return {dlogits, at::Tensor()};
  }
};

at::Tensor ApplyLoss(LossKind kind, const at::Tensor& out,
                     const at::Tensor& targets) {
  if (kind == LossKind::kMse) {
    return at::mse_loss(out.to(at::kFloat),
                        targets.to(at::kFloat).reshape(out.sizes()));
  }
  return CrossEntropy(out.reshape({-1, out.size(-1)}), targets.reshape({-1}));
}

}  // namespace

at::Tensor TrainModel::Loss(const Batch& batch) {
  return ApplyLoss(loss_kind(), Output(batch), batch.targets);
}

void TrainModel::Evaluate(const Batch& batch, double* loss_sum,
                          int64_t* correct, int64_t* total) {
  const at::Tensor out = Output(batch);
  *loss_sum += ApplyLoss(loss_kind(), out, batch.targets).item<double>();
  if (loss_kind() != LossKind::kCrossEntropy) return;
  const at::Tensor predicted = out.argmax(-1).reshape({-1});
  const at::Tensor targets =
      batch.targets.reshape({-1}).to(predicted.scalar_type());
  *correct += predicted.eq(targets).sum().item<int64_t>();
  *total += targets.numel();
}

namespace {

int64_t CountParams(const std::vector<std::pair<std::string, at::Tensor>>& ps) {
  int64_t n = 0;
  for (const auto& [name, p] : ps) n += p.numel();
  return n;
}

class GptModel : public TrainModel {
 public:
  explicit GptModel(const GptConfig& c) : net_(std::make_shared<GptNet>(c)) {}
  at::Tensor Output(const Batch& batch) override {
    return net_->Logits(batch.inputs);
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

 private:
  std::shared_ptr<GptNet> net_;
};

struct MlpNet : torch::nn::Module {
  MlpNet(int64_t in, int64_t hidden, int64_t out)
      : fc1(register_module("fc1", torch::nn::Linear(in, hidden))),
        fc2(register_module("fc2", torch::nn::Linear(hidden, hidden))),
        fc3(register_module("fc3", torch::nn::Linear(hidden, out))) {}
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor h =
        Gelu(Linear(x.reshape({x.size(0), -1}), fc1->weight, fc1->bias));
    h = Gelu(Linear(h, fc2->weight, fc2->bias));
    return Linear(h, fc3->weight, fc3->bias);
  }
  torch::nn::Linear fc1, fc2, fc3;
};

class MlpModel : public TrainModel {
 public:
  MlpModel(int64_t in, int64_t hidden, int64_t out, LossKind loss)
      : net_(std::make_shared<MlpNet>(in, hidden, out)), loss_(loss) {}
  at::Tensor Output(const Batch& batch) override {
    at::Tensor x = batch.inputs.to(net_->fc1->weight.scalar_type());
    return net_->forward(x);
  }
  LossKind loss_kind() const override { return loss_; }
  std::vector<std::pair<std::string, at::Tensor>> NamedParameters() override {
    return ModuleParams(*net_);
  }
  void To(at::Device device, at::ScalarType dtype) override {
    net_->to(device, dtype);
  }
  double TrainFlopsPerToken(int64_t) const override {
    return 6.0 * static_cast<double>(CountParams(ModuleParams(*net_)));
  }

 private:
  std::shared_ptr<MlpNet> net_;
  LossKind loss_;
};

class TorchScriptModel : public TrainModel {
 public:
  TorchScriptModel(torch::jit::Module module, LossKind loss)
      : module_(std::move(module)), loss_(loss) {
    module_.train();
    for (const auto& p : module_.named_parameters(/*recurse=*/true)) {
      p.value.requires_grad_(true);
    }
  }
  LossKind loss_kind() const override { return loss_; }
  at::Tensor Output(const Batch& batch) override {
    at::Tensor x = batch.inputs;
    if (x.is_floating_point()) {
      for (const auto& p : module_.parameters()) {
        x = x.to(p.scalar_type());
        break;
      }
    }
    c10::IValue out = module_.forward({x});
    if (!out.isTensor()) {
      throw std::runtime_error(
          "TorchScript model must return one tensor from forward(), got " +
          std::string(out.tagKind()));
    }
    return out.toTensor();
  }
  std::vector<std::pair<std::string, at::Tensor>> NamedParameters() override {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (const auto& p : module_.named_parameters(/*recurse=*/true)) {
      out.emplace_back(p.name, p.value);
    }
    return out;
  }
  void To(at::Device device, at::ScalarType dtype) override {
    module_.to(device, dtype);
  }
  double TrainFlopsPerToken(int64_t) const override {
    int64_t n = 0;
    for (const auto& p : module_.parameters()) n += p.numel();
    return 6.0 * static_cast<double>(n);
  }
  std::string SaveTorchScript(const std::string& path) override {
    module_.save(path);
    return "";
  }
  bool is_torchscript() const override { return true; }

 private:
  mutable torch::jit::Module module_;
  LossKind loss_;
};

}  // namespace

bool GptPreset(const std::string& name, const GptShape& shape,
               int64_t data_vocab, GptConfig* out) {
  GptConfig c;
  if (name == "gpt-nano") {
    c = {4, 128, 4, 256, data_vocab};
  } else if (name == "gpt-micro") {
    c = {6, 384, 6, 256, data_vocab};
  } else if (name == "gpt-small") {
    c = {12, 768, 12, 1024, 50257};
  } else {
    return false;
  }
  if (shape.n_layer > 0) c.n_layer = shape.n_layer;
  if (shape.n_embd > 0) c.n_embd = shape.n_embd;
  if (shape.n_head > 0) c.n_head = shape.n_head;
  if (shape.block_size > 0) c.block_size = shape.block_size;
  if (shape.vocab_size > 0) c.vocab_size = shape.vocab_size;
  *out = c;
  return true;
}

at::Tensor CrossEntropy(const at::Tensor& logits, const at::Tensor& targets) {
  return CrossEntropyFn::apply(logits, targets);
}

at::Tensor Linear(const at::Tensor& x, const at::Tensor& weight,
                  const at::Tensor& bias) {
  if (EmulatesBf16Gemm(weight)) {
    return EmulatedLinear(
        x, weight,
        bias.defined() ? c10::optional<at::Tensor>(bias) : c10::nullopt);
  }
  // (libtorch 1.13's custom functions refuse undefined inputs: a layer
  // without bias keeps at::linear.)
  if (weight.scalar_type() == at::kFloat || !bias.defined() ||
      !weight.requires_grad() || !at::GradMode::is_enabled()) {
    return at::linear(x, weight, bias);
  }
  return WeightGradFirstLinearFn::apply(x, weight, bias);
}

at::Tensor Matmul(const at::Tensor& a, const at::Tensor& b) {
  if (EmulatesBf16Gemm(a)) return EmulatedMatmul(a, b);
  return at::matmul(a, b);
}

at::Tensor Gelu(const at::Tensor& x) {
  if (EmulatesBf16Op(x)) return EmulatedGelu(x);
  return at::gelu(x);
}

at::Tensor LayerNormFp32(const at::Tensor& x, const at::Tensor& weight,
                         const at::Tensor& bias) {
  return LayerNormFp32Fn::apply(x, weight, bias);
}

std::unique_ptr<TrainModel> MakeGpt(const GptConfig& config) {
  return std::make_unique<GptModel>(config);
}

TrainStatus BuildModel(const ModelOptions& options, const Dataset& data,
                       std::unique_ptr<TrainModel>* out) {
  if (!options.torchscript.empty()) {
    torch::jit::Module m;
    try {
      m = torch::jit::load(options.torchscript, at::kCPU);
    } catch (const std::exception& e) {
      std::string what = e.what();
      what = what.substr(0, what.find('\n'));
      return Invalid("model.torchscript " + options.torchscript +
                     " cannot be loaded as a TorchScript module: " + what);
    }
    if (m.parameters().size() == 0) {
      return Invalid("model.torchscript " + options.torchscript +
                     " has no parameters to train");
    }
    *out = std::make_unique<TorchScriptModel>(std::move(m), options.loss);
    return TrainStatus::Ok();
  }
  const models::Builtin* builtin = models::FindBuiltin(options.builtin);
  if (builtin == nullptr) {
    return Invalid("model.builtin '" + options.builtin + "' is not one of " +
                   models::BuiltinNames());
  }
  if (!builtin->language_model) {  // the MLP
    if (data.is_token_stream()) {
      return Invalid("model.builtin mlp needs data.kind tensors");
    }
    const at::Tensor& x = data.inputs();
    if (!x.is_floating_point()) {
      return Invalid(
          "model.builtin mlp needs floating-point inputs; the data "
          "holds token ids (use a gpt model)");
    }
    const int64_t in = x.numel() / x.size(0);
    int64_t outputs;
    if (options.loss == LossKind::kCrossEntropy) {
      if (data.targets().is_floating_point()) {
        return Invalid(
            "model.loss cross_entropy needs int64 class targets; "
            "use model.loss mse for floating-point targets");
      }
      outputs = data.num_classes();
    } else {
      outputs = data.targets().numel() / data.targets().size(0);
    }
    *out = std::make_unique<MlpModel>(in, options.mlp_hidden, outputs,
                                      options.loss);
    return TrainStatus::Ok();
  }
  GptConfig config;
  if (!GptPreset(options.builtin, options.gpt, data.vocab_size(), &config)) {
    return Invalid("model.builtin '" + options.builtin +
                   "' is a language model without a GPT preset");
  }
  if (!data.is_token_stream() && data.inputs().is_floating_point()) {
    return Invalid("model.builtin " + options.builtin +
                   " needs token data (text, tokens, synthetic, or tensors "
                   "of int64 token ids)");
  }
  if (options.loss != LossKind::kCrossEntropy) {
    return Invalid("model.loss must be cross_entropy for " + options.builtin);
  }
  if (data.vocab_size() > config.vocab_size) {
    return Invalid("data vocabulary " + std::to_string(data.vocab_size()) +
                   " exceeds model " + options.builtin + "'s vocabulary " +
                   std::to_string(config.vocab_size));
  }
  if (data.seq_len() > config.block_size) {
    return Invalid("data.seq_len " + std::to_string(data.seq_len()) +
                   " exceeds model " + options.builtin + "'s context " +
                   std::to_string(config.block_size));
  }
  if (config.n_embd % config.n_head != 0) {
    return Invalid("model gpt n_embd must be a multiple of n_head");
  }
  *out = MakeGpt(config);
  return TrainStatus::Ok();
}

}  // namespace halftime::engine
