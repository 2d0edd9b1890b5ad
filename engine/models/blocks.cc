#include "engine/models/blocks.h"

#include <cmath>

#include "engine/models/kernels.h"

namespace halftime::engine {

at::Tensor RopeInverseFrequencies(const hf::RopeConfig& rope,
                                  int64_t head_dim) {
  // In fp32 op for op as Hugging Face computes it, so that the angles at
  // long positions agree bit for bit.
  const at::Tensor exponents =
      at::arange(0, head_dim, 2, at::TensorOptions().dtype(at::kLong))
          .to(at::kFloat) /
      static_cast<double>(head_dim);
  at::Tensor inv_freq = 1.0 / at::pow(rope.theta, exponents);
  if (rope.type == "linear") {
    inv_freq = inv_freq / rope.factor;
  } else if (rope.type == "llama3") {
    const double old_context =
        static_cast<double>(rope.original_max_position_embeddings);
    const double low_wavelen = old_context / rope.low_freq_factor;
    const double high_wavelen = old_context / rope.high_freq_factor;
    const at::Tensor wavelen = 2.0 * M_PI / inv_freq;
    // Long wavelengths are slowed by the factor, short ones kept, and the
    // band between blends the two.
    at::Tensor scaled =
        at::where(wavelen > low_wavelen, inv_freq / rope.factor, inv_freq);
    const at::Tensor smooth = (old_context / wavelen - rope.low_freq_factor) /
                              (rope.high_freq_factor - rope.low_freq_factor);
    const at::Tensor smoothed =
        (1 - smooth) * scaled / rope.factor + smooth * scaled;
    const at::Tensor medium =
        (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    inv_freq = at::where(medium, smoothed, scaled);
  }
  return inv_freq;
}

void RopeTables(const at::Tensor& inv_freq, const at::Tensor& positions,
                at::Tensor* cos, at::Tensor* sin) {
  // One fp32 product per angle, as Hugging Face's rotary embedding takes
  // it, so the tables agree bit for bit.
  const at::Tensor freqs =
      positions.to(inv_freq.options()).unsqueeze(-1) * inv_freq;
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  if (positions.dim() == 2) emb = emb.unsqueeze(1);  // broadcast over heads
  *cos = emb.cos();
  *sin = emb.sin();
}

at::Tensor ApplyRope(const at::Tensor& x, const at::Tensor& cos,
                     const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const at::Tensor rotated =
      at::cat({x.narrow(-1, half, half).neg(), x.narrow(-1, 0, half)}, -1);
  return x * cos.to(x.scalar_type()) + rotated * sin.to(x.scalar_type());
}

at::Tensor GroupedQueryAttention(const at::Tensor& x, const AttentionWeights& w,
                                 int64_t num_heads, int64_t num_kv_heads,
                                 int64_t head_dim, double norm_eps,
                                 const at::Tensor& cos, const at::Tensor& sin,
                                 const at::Tensor& segments,
                                 LayerCache* cache) {
  const int64_t B = x.size(0), T = x.size(1);
  at::Tensor q = Project(x, w.q).view({B, T, num_heads, head_dim});
  at::Tensor k = Project(x, w.k).view({B, T, num_kv_heads, head_dim});
  at::Tensor v = Project(x, w.v).view({B, T, num_kv_heads, head_dim});
  if (w.q_norm.defined()) {
    q = RmsNormFp32(q, w.q_norm, norm_eps);
    k = RmsNormFp32(k, w.k_norm, norm_eps);
  }
  q = ApplyRope(q.transpose(1, 2), cos, sin);
  k = ApplyRope(k.transpose(1, 2), cos, sin);
  v = v.transpose(1, 2);
  if (cache != nullptr) {
    if (cache->keys.defined()) {
      k = at::cat({cache->keys, k}, 2);
      v = at::cat({cache->values, v}, 2);
    }
    cache->keys = k;
    cache->values = v;
  }
  const int64_t Tk = k.size(2);
  if (num_kv_heads != num_heads) {
    // Query head h reads key/value head h / (num_heads / num_kv_heads), as
    // Hugging Face's repeat_kv lays them out.
    const int64_t groups = num_heads / num_kv_heads;
    k = k.unsqueeze(2)
            .expand({B, num_kv_heads, groups, Tk, head_dim})
            .reshape({B, num_heads, Tk, head_dim});
    v = v.unsqueeze(2)
            .expand({B, num_kv_heads, groups, Tk, head_dim})
            .reshape({B, num_heads, Tk, head_dim});
  }
  const at::Tensor y = CausalAttention(q, k, v, segments)
                           .transpose(1, 2)
                           .reshape({B, T, num_heads * head_dim});
  return Project(y, w.o);
}

at::Tensor GatedMlp(const at::Tensor& x, const GatedMlpWeights& w) {
  return Project(at::silu(Project(x, w.gate)) * Project(x, w.up), w.down);
}

}  // namespace halftime::engine
