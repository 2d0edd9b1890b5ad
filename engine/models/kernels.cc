#include "engine/models/kernels.h"

#include <torch/autograd.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "engine/bf16_emulation.h"

namespace halftime::engine {
namespace {

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
                            const at::Tensor& b, double eps) {
    ctx->saved_data["eps"] = eps;
    const int64_t width = x.size(-1);
    const at::Tensor rows = x.reshape({-1, width});
    const int64_t n = rows.size(0);
    const at::Tensor w32 = w.to(at::kFloat), b32 = b.to(at::kFloat);
    ctx->save_for_backward({x, w, b});
    if (x.scalar_type() == at::kFloat) {
      return std::get<0>(at::native_layer_norm(rows, {width}, w32, b32, eps))
          .view(x.sizes());
    }
    at::Tensor y = at::empty_like(rows);
    const int64_t slice = LayerNormSliceRows(x, n);
    for (int64_t first = 0; first < n; first += slice) {
      const int64_t len = std::min(slice, n - first);
      y.narrow(0, first, len)
          .copy_(std::get<0>(
              at::native_layer_norm(rows.narrow(0, first, len).to(at::kFloat),
                                    {width}, w32, b32, eps)));
    }
    return y.view(x.sizes());
  }
  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &b = saved[2];
    const double eps = ctx->saved_data["eps"].toDouble();
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
          at::native_layer_norm(x32, {width}, w32, b32, eps);
      auto [dx32, dw_part, db_part] = at::native_layer_norm_backward(
          grad_rows.narrow(0, first, len).to(at::kFloat), x32, {width}, mean,
          rstd, w32, b32, {true, true, true});
      dx.narrow(0, first, len).copy_(dx32);
      dw.add_(dw_part);
      db.add_(db_part);
    }
    return {dx.view(x.sizes()), dw.to(w.scalar_type()), db.to(b.scalar_type()),
            at::Tensor()};
  }
};

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
constexpr const char* kLinearInput = "input";

// Saves `x` outside save_for_backward so that backward can drop it once the
// weight gradient is done (a saved variable lives until the whole node has
// run).
void SaveLinearInput(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                     const at::Tensor& weight) {
  ctx->saved_data[kLinearInput] = x;
  ctx->save_for_backward({weight});
}

torch::autograd::variable_list WeightGradFirstBackward(
    torch::autograd::AutogradContext* ctx,
    const torch::autograd::variable_list& grad_out, bool has_bias) {
  auto input = ctx->saved_data.find(kLinearInput);
  TORCH_CHECK(input != ctx->saved_data.end(),
              "Linear: backward a second time (its input is freed after the "
              "first; pass retain_graph=false)");
  at::Tensor x = input->second.toTensor();
  ctx->saved_data.erase(input);
  const at::Tensor weight = ctx->get_saved_variables()[0];
  const std::vector<int64_t> x_sizes = x.sizes().vec();
  const at::Tensor g = grad_out[0].reshape({-1, weight.size(0)});
  at::Tensor grad_x, grad_weight, grad_bias;
  if (ctx->needs_input_grad(1)) {
    grad_weight = g.t().mm(x.reshape({-1, weight.size(1)}));
  }
  // Nothing else holds a layer's input (activations save their own), so
  // this frees it before the input gradient, of the same size, is allocated.
  x.reset();
  if (has_bias && ctx->needs_input_grad(2)) grad_bias = g.sum(0);
  if (ctx->needs_input_grad(0)) grad_x = g.mm(weight).view(x_sizes);
  if (!has_bias) return {grad_x, grad_weight};
  return {grad_x, grad_weight, grad_bias};
}

struct WeightGradFirstLinearFn
    : torch::autograd::Function<WeightGradFirstLinearFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx,
                            const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& bias) {
    SaveLinearInput(ctx, x, weight);
    return at::linear(x, weight, bias);
  }
  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grad_out) {
    return WeightGradFirstBackward(ctx, grad_out, /*has_bias=*/true);
  }
};

// The same without a bias (libtorch 1.13's custom functions refuse
// undefined tensor arguments).
struct WeightGradFirstLinearNoBiasFn
    : torch::autograd::Function<WeightGradFirstLinearNoBiasFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx,
                            const at::Tensor& x, const at::Tensor& weight) {
    SaveLinearInput(ctx, x, weight);
    return at::linear(x, weight);
  }
  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grad_out) {
    return WeightGradFirstBackward(ctx, grad_out, /*has_bias=*/false);
  }
};

// RMSNorm in fp32 with LayerNormFp32Fn's memory rule: only `x` (in its own
// dtype) and the weight are saved; backward recomputes 1/rms per row, a
// slice of rows at a time so that no full-size fp32 copy exists.
struct RmsNormFp32Fn : torch::autograd::Function<RmsNormFp32Fn> {
  static at::Tensor Normalize(const at::Tensor& x32, double eps,
                              at::Tensor* rstd) {
    *rstd = x32.pow(2).mean({-1}, /*keepdim=*/true).add_(eps).rsqrt_();
    return x32 * *rstd;
  }
  static at::Tensor forward(torch::autograd::AutogradContext* ctx,
                            const at::Tensor& x, const at::Tensor& w,
                            double eps) {
    ctx->saved_data["eps"] = eps;
    ctx->save_for_backward({x, w});
    const int64_t width = x.size(-1);
    const at::Tensor rows = x.reshape({-1, width});
    const int64_t n = rows.size(0);
    const at::Tensor w32 = w.to(at::kFloat);
    at::Tensor y = at::empty_like(rows);
    const int64_t slice = LayerNormSliceRows(x, n);
    for (int64_t first = 0; first < n; first += slice) {
      const int64_t len = std::min(slice, n - first);
      at::Tensor rstd;
      y.narrow(0, first, len)
          .copy_(
              Normalize(rows.narrow(0, first, len).to(at::kFloat), eps, &rstd)
                  .mul_(w32));
    }
    return y.view(x.sizes());
  }
  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1];
    const double eps = ctx->saved_data["eps"].toDouble();
    const int64_t width = x.size(-1);
    const at::Tensor rows = x.reshape({-1, width});
    const at::Tensor grad_rows = grad_out[0].reshape({-1, width});
    const int64_t n = rows.size(0);
    const at::Tensor w32 = w.to(at::kFloat);
    at::Tensor dx = at::empty_like(rows);
    at::Tensor dw = at::zeros({width}, w32.options());
    const int64_t slice = LayerNormSliceRows(x, n);
    for (int64_t first = 0; first < n; first += slice) {
      const int64_t len = std::min(slice, n - first);
      at::Tensor rstd;
      const at::Tensor xhat =
          Normalize(rows.narrow(0, first, len).to(at::kFloat), eps, &rstd);
      const at::Tensor g = grad_rows.narrow(0, first, len).to(at::kFloat);
      dw.add_((g * xhat).sum(0));
      // d/dx of x * rstd with rstd = (mean(x^2) + eps)^-1/2, through g * w.
      const at::Tensor gw = g.mul(w32);
      const at::Tensor dot = (gw * xhat).mean({-1}, /*keepdim=*/true);
      dx.narrow(0, first, len).copy_(gw.sub_(xhat.mul(dot)).mul_(rstd));
    }
    return {dx.view(x.sizes()), dw.to(w.scalar_type()), at::Tensor()};
  }
};

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

}  // namespace

at::Tensor CausalAttention(const at::Tensor& q, const at::Tensor& k,
                           const at::Tensor& v, const at::Tensor& segments) {
  const int64_t Tq = q.size(2), Tk = k.size(2), D = q.size(3);
  TORCH_CHECK(Tk >= Tq, "attention: fewer keys than queries");
  TORCH_CHECK(!segments.defined() || Tq == Tk,
              "attention: segments need as many keys as queries");
  // [B, T, T]: true where query and key lie in different segments.
  const at::Tensor crossing =
      segments.defined() ? segments.unsqueeze(2).ne(segments.unsqueeze(1))
                         : at::Tensor();
#if TORCH_VERSION_MAJOR >= 2
  if (q.is_cuda()) {
    // libtorch 2's fused attention (flash for 16-bit, memory-efficient for
    // fp32): the same causal softmax(q k^T / sqrt(D)) v with fp32
    // accumulation, without the [T, T] scores in memory. What PyTorch's own
    // models use on a GPU, so the step times compare like for like.
    if (!crossing.defined() && Tq == Tk) {
      return at::scaled_dot_product_attention(q, k, v, {}, 0.0,
                                              /*is_causal=*/true);
    }
    // is_causal aligns the mask top-left; a cache or segments need it
    // explicit (true = may attend).
    at::Tensor allowed =
        at::ones({Tq, Tk}, q.options().dtype(at::kBool)).tril(Tk - Tq);
    if (crossing.defined()) {
      allowed = allowed.logical_and(crossing.logical_not()).unsqueeze(1);
    }
    return at::scaled_dot_product_attention(q, k, v, allowed, 0.0, false);
  }
#endif
  at::Tensor att = Matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(D));
  // The causal mask as an additive -inf bias: unlike masked_fill_, an
  // in-place add saves nothing for backward (the softmax's zero outputs
  // already zero the gradient there), so no mask per layer is held until
  // backward. -inf + x is -inf and 0 + x is x: the scores are the same.
  const float inf = std::numeric_limits<float>::infinity();
  const at::Tensor causal_bias =
      at::full({Tq, Tk}, -inf, att.options()).triu(1 + Tk - Tq);
  // In place: the scaled scores are not saved for backward. The softmax
  // keeps the scores' dtype (bf16 under autocast, so the saved output is
  // half the size) but computes in fp32: libtorch's CPU and CUDA softmax
  // kernels accumulate reduced-precision inputs in fp32 (bit-identical to
  // softmax(x.float()).to(bf16)).
  att.add_(causal_bias);
  if (crossing.defined()) {
    // Every token attends at least to itself, so no row is all -inf.
    att.add_(at::zeros(crossing.sizes(), att.options())
                 .masked_fill_(crossing, -inf)
                 .unsqueeze(1));
  }
  // The explicit dtype also keeps CUDA autocast (which would return fp32
  // softmax) from saving an fp32 copy of the probabilities.
  att = at::softmax(att, -1, att.scalar_type());
  return Matmul(att, v);
}

at::Tensor CrossEntropy(const at::Tensor& logits, const at::Tensor& targets) {
  return CrossEntropyFn::apply(logits, targets);
}

at::Tensor Matmul(const at::Tensor& a, const at::Tensor& b) {
  if (EmulatesBf16Gemm(a)) return EmulatedMatmul(a, b);
  return at::matmul(a, b);
}

at::Tensor Gelu(const at::Tensor& x, const std::string& approximate) {
  if (EmulatesBf16Op(x)) return EmulatedGelu(x, approximate);
  return at::gelu(x, approximate);
}

at::Tensor Linear(const at::Tensor& x, const at::Tensor& weight,
                  const at::Tensor& bias) {
  if (EmulatesBf16Gemm(weight)) {
    return EmulatedLinear(
        x, weight,
        bias.defined() ? c10::optional<at::Tensor>(bias) : c10::nullopt);
  }
  if (weight.scalar_type() == at::kFloat || !weight.requires_grad() ||
      !at::GradMode::is_enabled()) {
    return at::linear(x, weight, bias);
  }
  if (!bias.defined()) return WeightGradFirstLinearNoBiasFn::apply(x, weight);
  return WeightGradFirstLinearFn::apply(x, weight, bias);
}

at::Tensor LayerNormFp32(const at::Tensor& x, const at::Tensor& weight,
                         const at::Tensor& bias, double eps) {
  return LayerNormFp32Fn::apply(x, weight, bias, eps);
}

at::Tensor RmsNormFp32(const at::Tensor& x, const at::Tensor& weight,
                       double eps) {
  return RmsNormFp32Fn::apply(x, weight, eps);
}

}  // namespace halftime::engine
