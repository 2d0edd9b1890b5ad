// Internal: the decoder blocks model families share, as functions of their
// weights: rotary position embeddings, grouped-query attention with
// optional biases and per-head q/k norms, and the gated (SwiGLU) MLP. Each
// is built on models/kernels.h, so the 16-bit memory rules hold in every
// family that uses them.
//
// Thread safety: pure functions of their tensors; safe from any thread.

#ifndef HALFTIME_ENGINE_MODELS_BLOCKS_H_
#define HALFTIME_ENGINE_MODELS_BLOCKS_H_

#include <ATen/ATen.h>

#include "engine/hf/model_config.h"
#include "engine/models/projection.h"

namespace halftime::engine {

// RoPE's inverse frequencies [head_dim / 2] in fp32 for `rope`, with the
// llama3 and linear scalings applied as Hugging Face's
// _compute_llama3_parameters and _compute_linear_scaling_parameters do.
at::Tensor RopeInverseFrequencies(const hf::RopeConfig& rope, int64_t head_dim);

// cos and sin (fp32, on `inv_freq`'s device) for int64 `positions`, in the
// rotate-half layout (the frequencies repeated twice): [T, head_dim] for
// positions [T], [B, 1, T, head_dim] for positions [B, T] (one row each).
void RopeTables(const at::Tensor& inv_freq, const at::Tensor& positions,
                at::Tensor* cos, at::Tensor* sin);

// x * cos + rotate_half(x) * sin for x [B, H, T, D]; cos and sin (as
// RopeTables makes them) are cast to x's dtype, as Hugging Face's
// apply_rotary_pos_emb does.
at::Tensor ApplyRope(const at::Tensor& x, const at::Tensor& cos,
                     const at::Tensor& sin);

// The weights of one attention layer; biases and norms may be undefined.
struct AttentionWeights {
  Projection q, k, v, o;
  // RMSNorm weights [head_dim] applied per head to q and k before RoPE.
  at::Tensor q_norm, k_norm;
};

// A layer's keys and values [B, kv_heads, T, head_dim] from earlier
// forward passes (generation); both undefined before the first.
struct LayerCache {
  at::Tensor keys, values;
};

// Causal grouped-query attention of x [B, T, C]: num_heads query heads,
// num_kv_heads key/value heads each shared by num_heads / num_kv_heads
// query heads, head_dim wide. `segments` (see CausalAttention) may be
// undefined. With `cache`, x continues the cached sequence (cos and sin
// are at its positions) and its keys and values are appended.
at::Tensor GroupedQueryAttention(const at::Tensor& x, const AttentionWeights& w,
                                 int64_t num_heads, int64_t num_kv_heads,
                                 int64_t head_dim, double norm_eps,
                                 const at::Tensor& cos, const at::Tensor& sin,
                                 const at::Tensor& segments = {},
                                 LayerCache* cache = nullptr);

struct GatedMlpWeights {
  Projection gate, up, down;
};

// down(silu(gate(x)) * up(x)).
at::Tensor GatedMlp(const at::Tensor& x, const GatedMlpWeights& w);

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_MODELS_BLOCKS_H_
