#include "engine/bf16_emulation.h"

#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/autograd.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "engine/autograd_util.h"
#include "engine/device.h"

namespace halftime::engine {
namespace {

// -1: decide from the CPU; 0/1: forced by a test.
std::atomic<int> g_forced{-1};

bool Emulating() {
  const int forced = g_forced.load(std::memory_order_relaxed);
  if (forced >= 0) return forced == 1;
  static const bool emulate = !CpuBf16Native();
  return emulate;
}

bool CpuBf16Autocast() {
  return at::autocast::is_cpu_enabled() &&
         at::autocast::get_autocast_cpu_dtype() == at::kBFloat16;
}

// The fp32 copies of a slice's operands and result are what an emulated op
// adds to memory: about 1M elements per operand (4 MiB), below one
// activation of any model worth training. Smaller slices cost speed: each
// slice of the weight gradient is a GEMM whose inner dimension is the
// slice's rows. Measured on gpt-micro's four Linear shapes, forward and
// backward, against fp32 (bench_engine --gemm-only, Zen 3, 2 threads,
// alternating rounds): 256K-element slices 1.17x, 1M 1.08x, 4M 1.05x.
constexpr int64_t kSliceElements = int64_t{1} << 20;
constexpr int64_t kMinSliceRows = 256;

// Rows per slice of a [rows, width] operand.
int64_t SliceRows(int64_t width) {
  return std::max(kMinSliceRows, kSliceElements / std::max<int64_t>(width, 1));
}

// Inside the emulated ops the fp32 kernels must run as fp32: CPU autocast
// would cast their operands back to bf16.
using NoAutocast = c10::impl::ExcludeDispatchKeyGuard;
constexpr c10::DispatchKey kAutocastCpu = c10::DispatchKey::AutocastCPU;

at::Tensor Fp32(const at::Tensor& t) { return t.to(at::kFloat); }

// A weight operand as CPU autocast would cast it (cached per step for
// leaves), or as it is outside autocast. Differentiable.
at::Tensor AsBf16Weight(const at::Tensor& w) {
  if (w.scalar_type() == at::kFloat && CpuBf16Autocast()) {
    return at::autocast::cached_cast(at::kBFloat16, w, c10::DeviceType::CPU);
  }
  return w;
}

// An activation operand cast to bf16 when it is fp32 under autocast.
at::Tensor AsBf16Activation(const at::Tensor& t) {
  if (t.scalar_type() == at::kFloat && CpuBf16Autocast()) {
    NoAutocast no_autocast(kAutocastCpu);
    return t.to(at::kBFloat16);
  }
  return t;
}

// out[n, m] = a[n, k] · b[k, m] (+ bias[m]), a and b in any float dtype,
// computed in fp32 row slices of `a`, written in `out_dtype`. `b32` is
// already fp32.
at::Tensor RowSlicedMm(const at::Tensor& a, const at::Tensor& b32,
                       const at::Tensor& bias32, at::ScalarType out_dtype) {
  const int64_t n = a.size(0);
  at::Tensor out = at::empty({n, b32.size(1)}, a.options().dtype(out_dtype));
  const int64_t slice = SliceRows(std::max(a.size(1), b32.size(1)));
  for (int64_t first = 0; first < n; first += slice) {
    const int64_t len = std::min(slice, n - first);
    const at::Tensor a32 = Fp32(a.narrow(0, first, len));
    out.narrow(0, first, len)
        .copy_(bias32.defined() ? at::addmm(bias32, a32, b32)
                                : at::mm(a32, b32));
  }
  return out;
}

struct LinearFn : torch::autograd::Function<LinearFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx,
                            const at::Tensor& x, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias) {
    NoAutocast no_autocast(kAutocastCpu);
    const bool has_bias = bias.has_value() && bias->defined();
    if (weight.requires_grad()) {
      SaveInputOnce(ctx, x);  // backward may write the input gradient over it
    } else {
      // A frozen weight (an adapter job's base) needs no weight gradient,
      // so nothing needs the input: only its shape is kept.
      ctx->saved_data["input_sizes"] = x.sizes().vec();
      ctx->saved_data["input_dtype"] = static_cast<int64_t>(x.scalar_type());
    }
    ctx->saved_data["has_bias"] = has_bias;
    ctx->saved_data["bias_dtype"] =
        static_cast<int64_t>(has_bias ? bias->scalar_type() : at::kFloat);
    ctx->save_for_backward({weight});
    const at::Tensor rows = x.reshape({-1, x.size(-1)});
    std::vector<int64_t> sizes = x.sizes().vec();
    sizes.back() = weight.size(0);
    return RowSlicedMm(rows, Fp32(weight).t(),
                       has_bias ? Fp32(*bias) : at::Tensor(), x.scalar_type())
        .view(sizes);
  }
  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grad_out) {
    NoAutocast no_autocast(kAutocastCpu);
    at::Tensor x;
    std::vector<int64_t> x_sizes;
    at::ScalarType x_dtype = at::kFloat;
    if (auto sizes = ctx->saved_data.find("input_sizes");
        sizes != ctx->saved_data.end()) {
      x_sizes = sizes->second.toIntVector();
      x_dtype =
          static_cast<at::ScalarType>(ctx->saved_data["input_dtype"].toInt());
    } else {
      x = TakeSavedInput(ctx);
      x_sizes = x.sizes().vec();
      x_dtype = x.scalar_type();
    }
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const at::Tensor weight = ctx->get_saved_variables()[0];
    const int64_t in = weight.size(1), out = weight.size(0);
    const at::Tensor g = grad_out[0].reshape({-1, out});
    at::Tensor grad_x, grad_weight, grad_bias;
    const bool want_x = ctx->needs_input_grad(0);
    const bool want_weight = ctx->needs_input_grad(1);
    const bool want_bias = has_bias && ctx->needs_input_grad(2);
    const auto fp32 = g.options().dtype(at::kFloat);
    at::Tensor dw32 = want_weight ? at::zeros({out, in}, fp32) : at::Tensor();
    at::Tensor db32 = want_bias ? at::zeros({out}, fp32) : at::Tensor();
    const at::Tensor w32 = want_x ? Fp32(weight) : at::Tensor();
    // The input gradient has the input's shape and dtype. When nothing
    // else holds the input, each slice's gradient overwrites the slice of
    // input it no longer needs: no second buffer of that size at all (the
    // native Linear frees the input before allocating one). Otherwise the
    // input stays alive anyway, and the gradient gets its own.
    const bool reuse_input =
        want_x && x.defined() && x.is_contiguous() &&
        x.scalar_type() == g.scalar_type() && x.use_count() == 1 &&
        x.storage().use_count() == 1 && x.storage().nbytes() == x.nbytes();
    at::Tensor rows = x.defined() ? x.reshape({-1, in}) : at::Tensor();
    x.reset();
    at::Tensor gx_rows;
    if (want_x) {
      gx_rows = reuse_input
                    ? rows
                    : at::empty({g.size(0), in}, g.options().dtype(x_dtype));
    }
    // One pass over row slices: each slice of g is widened once and serves
    // dW = g^T · x and db = sum(g) (accumulated in fp32) and dx = g · W.
    const int64_t n = g.size(0);
    const int64_t slice = SliceRows(std::max(in, out));
    for (int64_t first = 0; first < n; first += slice) {
      const int64_t len = std::min(slice, n - first);
      const at::Tensor g32 = Fp32(g.narrow(0, first, len));
      if (want_weight) dw32.addmm_(g32.t(), Fp32(rows.narrow(0, first, len)));
      if (want_bias) db32.add_(g32.sum(0));
      if (want_x) gx_rows.narrow(0, first, len).copy_(at::mm(g32, w32));
    }
    if (want_weight) grad_weight = dw32.to(weight.scalar_type());
    if (want_bias) {
      grad_bias = db32.to(
          static_cast<at::ScalarType>(ctx->saved_data["bias_dtype"].toInt()));
    }
    if (want_x) grad_x = gx_rows.view(x_sizes);
    return {grad_x, grad_weight, grad_bias};
  }
};

// c[i] = a[i] · b[i] over the flattened batch, in fp32 slices of batches.
at::Tensor BatchSlicedBmm(const at::Tensor& a, const at::Tensor& b,
                          at::ScalarType out_dtype) {
  const int64_t batches = a.size(0);
  at::Tensor out =
      at::empty({batches, a.size(1), b.size(2)}, a.options().dtype(out_dtype));
  const int64_t per_batch =
      std::max({a.size(1) * a.size(2), b.size(1) * b.size(2),
                a.size(1) * b.size(2), int64_t{1}});
  const int64_t slice = std::max<int64_t>(1, kSliceElements / per_batch);
  for (int64_t first = 0; first < batches; first += slice) {
    const int64_t len = std::min(slice, batches - first);
    out.narrow(0, first, len)
        .copy_(at::bmm(Fp32(a.narrow(0, first, len)),
                       Fp32(b.narrow(0, first, len))));
  }
  return out;
}

struct MatmulFn : torch::autograd::Function<MatmulFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx,
                            const at::Tensor& a, const at::Tensor& b) {
    NoAutocast no_autocast(kAutocastCpu);
    ctx->save_for_backward({a, b});
    if (a.dim() == 2 && b.dim() == 2) {  // a plain GEMM: no batch to walk
      return RowSlicedMm(a, Fp32(b), at::Tensor(), a.scalar_type());
    }
    const int64_t n = a.size(-2), k = a.size(-1), m = b.size(-1);
    std::vector<int64_t> sizes = a.sizes().vec();
    sizes.back() = m;
    return BatchSlicedBmm(a.reshape({-1, n, k}), b.reshape({-1, k, m}),
                          a.scalar_type())
        .view(sizes);
  }
  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grad_out) {
    NoAutocast no_autocast(kAutocastCpu);
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &a = saved[0], &b = saved[1];
    const int64_t n = a.size(-2), k = a.size(-1), m = b.size(-1);
    const at::Tensor g = grad_out[0].reshape({-1, n, m});
    at::Tensor grad_a, grad_b;
    if (ctx->needs_input_grad(0)) {  // g · b^T
      grad_a = BatchSlicedBmm(g, b.reshape({-1, k, m}).transpose(1, 2),
                              a.scalar_type())
                   .view(a.sizes());
    }
    if (ctx->needs_input_grad(1)) {  // a^T · g
      grad_b = BatchSlicedBmm(a.reshape({-1, n, k}).transpose(1, 2), g,
                              b.scalar_type())
                   .view(b.sizes());
    }
    return {grad_a, grad_b};
  }
};

struct GeluFn : torch::autograd::Function<GeluFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx,
                            const at::Tensor& x,
                            const std::string& approximate) {
    ctx->save_for_backward({x});
    ctx->saved_data["approximate"] = approximate;
    const at::Tensor rows = x.reshape({-1, x.size(-1)});
    at::Tensor y = at::empty_like(rows);
    const int64_t n = rows.size(0);
    const int64_t slice = SliceRows(rows.size(1));
    for (int64_t first = 0; first < n; first += slice) {
      const int64_t len = std::min(slice, n - first);
      y.narrow(0, first, len).copy_(at::gelu(Fp32(rows.narrow(0, first, len))));
    }
    return y.view(x.sizes());
  }
  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grad_out) {
    const at::Tensor x = ctx->get_saved_variables()[0];
    const std::string approximate =
        ctx->saved_data["approximate"].toStringRef();
    const at::Tensor rows = x.reshape({-1, x.size(-1)});
    const at::Tensor g = grad_out[0].reshape(rows.sizes());
    at::Tensor dx = at::empty_like(rows);
    const int64_t n = rows.size(0);
    const int64_t slice = SliceRows(rows.size(1));
    for (int64_t first = 0; first < n; first += slice) {
      const int64_t len = std::min(slice, n - first);
      dx.narrow(0, first, len)
          .copy_(at::gelu_backward(Fp32(g.narrow(0, first, len)),
                                   Fp32(rows.narrow(0, first, len)),
                                   approximate));
    }
    return {dx.view(x.sizes()), at::Tensor()};
  }
};

}  // namespace

bool EmulatesBf16Gemm(const at::Tensor& operand) {
  if (!operand.is_cpu() || !Emulating()) return false;
  const at::ScalarType t = operand.scalar_type();
  return t == at::kBFloat16 || (t == at::kFloat && CpuBf16Autocast());
}

bool EmulatesBf16Op(const at::Tensor& x) {
  return x.is_cpu() && x.scalar_type() == at::kBFloat16 && Emulating();
}

void SetBf16EmulationForTesting(bool forced) { g_forced.store(forced ? 1 : 0); }

void ClearBf16EmulationForTesting() { g_forced.store(-1); }

at::Tensor EmulatedLinear(const at::Tensor& x, const at::Tensor& weight,
                          const c10::optional<at::Tensor>& bias) {
  c10::optional<at::Tensor> b = bias;
  if (b.has_value() && b->defined()) b = AsBf16Weight(*b);
  return LinearFn::apply(AsBf16Activation(x), AsBf16Weight(weight), b);
}

at::Tensor EmulatedMatmul(const at::Tensor& a, const at::Tensor& b) {
  return MatmulFn::apply(AsBf16Activation(a), AsBf16Activation(b));
}

at::Tensor EmulatedGelu(const at::Tensor& x, const std::string& approximate) {
  return GeluFn::apply(x, approximate);
}

}  // namespace halftime::engine
