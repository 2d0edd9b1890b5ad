// Internal: the numerical kernels every model family is built from, each
// written for the 16-bit memory budget: norms computed in fp32 that keep
// only their input for backward, a linear that frees its input before the
// input gradient, a loss that never holds a full fp32 copy of the logits,
// and causal attention. Shared by models/gpt.cc, models/llama.cc and the
// benchmark's bare loop.
//
// Thread safety: pure functions of their tensors; safe from any thread.

#ifndef HALFTIME_ENGINE_MODELS_KERNELS_H_
#define HALFTIME_ENGINE_MODELS_KERNELS_H_

#include <ATen/ATen.h>

#include <string>

namespace halftime::engine {

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
                         const at::Tensor& bias, double eps = 1e-5);

// RMSNorm over the last dimension, x / sqrt(mean(x^2) + eps) * weight,
// computed in fp32 and returned in `x`'s dtype, with the same memory rule as
// LayerNormFp32: only `x` is saved, backward recomputes 1/rms per row.
at::Tensor RmsNormFp32(const at::Tensor& x, const at::Tensor& weight,
                       double eps);

// x W^T + b, as at::linear; `bias` may be undefined. For 16-bit weights
// that need gradients (master and pure modes), backward computes the weight
// gradient first and frees `x` before it allocates the input gradient, so
// neither `x` nor the weight-gradient GEMM's scratch coincides with it.
// Such a graph can run backward once only (a second run throws c10::Error).
// Gradients equal at::linear's up to the GEMMs' summation order.
at::Tensor Linear(const at::Tensor& x, const at::Tensor& weight,
                  const at::Tensor& bias = {});

// The matmuls and GELU every model calls. Where bf16 compute runs on a CPU
// without native bf16 (bf16_emulation.h), Linear (above), Matmul and Gelu
// compute it in fp32 and round to bf16, instead of libtorch's naive bf16
// kernels; elsewhere they are at::linear, at::matmul and at::gelu.
at::Tensor Matmul(const at::Tensor& a, const at::Tensor& b);
at::Tensor Gelu(const at::Tensor& x, const std::string& approximate = "none");

// softmax(q k^T / sqrt(D) + causal mask) v for q [B, H, Tq, D] and k, v
// [B, H, Tk, D] with Tk >= Tq: the queries are the last Tq of the Tk
// positions (Tk > Tq when earlier keys come from a KV cache). fp32
// accumulation in the softmax whatever the dtype, and no [T, T] mask saved
// for backward. `segments` [B, T] (Tq == Tk), when defined, also keeps
// each token's attention inside its own segment (packed examples). Fused
// attention on CUDA (libtorch 2).
at::Tensor CausalAttention(const at::Tensor& q, const at::Tensor& k,
                           const at::Tensor& v,
                           const at::Tensor& segments = {});

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_MODELS_KERNELS_H_
