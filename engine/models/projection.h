// Internal: a model's linear layer as the model families call it: a weight
// and optional bias, and, for adapter jobs (engine/adapter.h), a frozen
// weight held in another dtype or quantized (quantize.h) and a LoRA
// adapter beside it.
//
// Thread safety: Project is a pure function of its tensors; a Projection
// is changed only while its model is being built or adapted.

#ifndef HALFTIME_ENGINE_MODELS_PROJECTION_H_
#define HALFTIME_ENGINE_MODELS_PROJECTION_H_

#include <ATen/ATen.h>

#include <memory>

#include "engine/quantize.h"

namespace halftime::engine {

// A LoRA adapter (Hu et al., 2021): y += scale · B(A(dropout(x))).
struct LoraWeights {
  at::Tensor a;  // [rank, in]
  at::Tensor b;  // [out, rank]
  double scale = 1.0;
  // Applied to the adapter's input while training (grad mode on) only.
  double dropout = 0.0;
};

// One linear layer, y = x W^T + b. `weight` is [out, in] (GPT-2's Conv1D
// layout is transposed on load and export, not here).
struct Projection {
  at::Tensor weight;
  at::Tensor bias;  // may be undefined
  // Set when the weight is frozen in a dtype it does not compute in; then
  // `weight` is emptied and this is the layer's weight.
  std::shared_ptr<FrozenWeight> frozen;
  std::shared_ptr<LoraWeights> lora;
};

// The layer's output for x [..., in]. A frozen weight is materialized in
// its compute dtype for forward and again for backward (only the input
// gradient: the weight is frozen), and never kept in between.
at::Tensor Project(const at::Tensor& x, const Projection& p);

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_MODELS_PROJECTION_H_
