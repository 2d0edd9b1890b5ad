// Helpers for the engine's custom autograd functions.
//
// Thread safety: the functions touch only the context they are given.

#ifndef HALFTIME_ENGINE_AUTOGRAD_UTIL_H_
#define HALFTIME_ENGINE_AUTOGRAD_UTIL_H_

#include <torch/autograd.h>

namespace halftime::engine {

// Keeps a layer's input for its backward outside save_for_backward, so that
// backward can drop it as soon as it has used it (a saved variable lives
// until the whole node has run). In-place changes to it after forward go
// unnoticed: no caller makes one.
inline void SaveInputOnce(torch::autograd::AutogradContext* ctx,
                          const at::Tensor& input) {
  ctx->saved_data["input"] = input;
}

// Takes back what SaveInputOnce kept; the context no longer holds it. A
// second backward through the same graph throws c10::Error.
inline at::Tensor TakeSavedInput(torch::autograd::AutogradContext* ctx) {
  auto input = ctx->saved_data.find("input");
  TORCH_CHECK(input != ctx->saved_data.end(),
              "Linear: backward a second time (its input is freed after the "
              "first; pass retain_graph=false)");
  at::Tensor x = input->second.toTensor();
  ctx->saved_data.erase(input);
  return x;
}

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_AUTOGRAD_UTIL_H_
