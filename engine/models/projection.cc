#include "engine/models/projection.h"

#include <ATen/core/ivalue.h>
#include <torch/autograd.h>

#include "engine/models/kernels.h"

namespace halftime::engine {
namespace {

// Keeps a FrozenWeight alive in an autograd node's saved data.
struct FrozenHolder : torch::CustomClassHolder {
  explicit FrozenHolder(std::shared_ptr<const FrozenWeight> w)
      : weight(std::move(w)) {}
  std::shared_ptr<const FrozenWeight> weight;
};

constexpr const char* kFrozen = "frozen";
constexpr const char* kInputDtype = "input_dtype";

// y = x W^T + b for a frozen W that is materialized in its compute dtype
// for forward and again for backward, which computes only the input
// gradient: nothing of W is saved, and the input is not needed.
struct FrozenLinearFn : torch::autograd::Function<FrozenLinearFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx,
                            const at::Tensor& x,
                            const c10::optional<at::Tensor>& bias,
                            std::shared_ptr<const FrozenWeight> frozen) {
    const at::ScalarType dtype = frozen->compute_dtype();
    ctx->saved_data[kInputDtype] = static_cast<int64_t>(x.scalar_type());
    const at::Tensor weight = frozen->Materialize();
    ctx->saved_data[kFrozen] = c10::IValue::make_capsule(
        c10::make_intrusive<FrozenHolder>(std::move(frozen)));
    return Linear(x.to(dtype), weight,
                  bias.has_value() ? bias->to(dtype) : at::Tensor());
  }
  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grad_out) {
    if (!ctx->needs_input_grad(0)) return {at::Tensor(), at::Tensor(), {}};
    const auto holder = c10::static_intrusive_pointer_cast<FrozenHolder>(
        ctx->saved_data[kFrozen].toCapsule());
    const FrozenWeight& frozen = *holder->weight;
    const auto input_dtype =
        static_cast<at::ScalarType>(ctx->saved_data[kInputDtype].toInt());
    const at::Tensor& g = grad_out[0];
    std::vector<int64_t> sizes = g.sizes().vec();
    sizes.back() = frozen.cols();
    const at::Tensor grad_x =
        Matmul(g.reshape({-1, g.size(-1)}).to(frozen.compute_dtype()),
               frozen.Materialize())
            .view(sizes);
    return {grad_x.to(input_dtype), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor Project(const at::Tensor& x, const Projection& p) {
  at::Tensor y = p.frozen != nullptr
                     ? FrozenLinearFn::apply(
                           x,
                           p.bias.defined() ? c10::optional<at::Tensor>(p.bias)
                                            : c10::nullopt,
                           p.frozen)
                     : Linear(x, p.weight, p.bias);
  if (p.lora == nullptr) return y;
  const LoraWeights& lora = *p.lora;
  const at::Tensor h = lora.dropout > 0 && at::GradMode::is_enabled()
                           ? at::dropout(x, lora.dropout, /*train=*/true)
                           : x;
  // The scale goes on the rank-wide middle, not on the layer-wide output:
  // one elementwise pass over [tokens, rank] instead of [tokens, out].
  return y + Linear(Linear(h, lora.a) * lora.scale, lora.b);
}

}  // namespace halftime::engine
