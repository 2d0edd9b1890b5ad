// A Hugging Face model folder's config.json, read into the fields the
// engine's model families need. The architectures the engine trains are
// listed here once (kArchitectures in model_config.cc); each names its
// family, whose builder lives in engine/models/. Parsed without
// libtorch so that the fuzz target can link it.
//
// Thread safety: pure functions and plain values; safe from any thread.

#ifndef HALFTIME_ENGINE_HF_MODEL_CONFIG_H_
#define HALFTIME_ENGINE_HF_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace halftime::engine::hf {

// The model code an architecture runs on.
enum class Family {
  // Llama, Mistral, Qwen2, Qwen3: RMSNorm, RoPE, GQA, SwiGLU.
  kLlama,
  // GPT-2: LayerNorm, learned positions, GELU MLP, Conv1D weights.
  kGpt2,
};

// Rotary position embedding (Llama family).
struct RopeConfig {
  // "default", "linear" or "llama3".
  std::string type = "default";
  double theta = 10000.0;
  double factor = 1.0;
  // llama3 only.
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;
};

struct ModelConfig {
  // config.json's architectures[0], e.g. "LlamaForCausalLM".
  std::string architecture;
  Family family = Family::kLlama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t intermediate_size = 0;
  int64_t max_positions = 0;
  double norm_eps = 1e-6;
  RopeConfig rope;
  bool tie_word_embeddings = false;
  // Biases on q, k, v (Qwen2, attention_bias), on o (attention_bias), and
  // on the MLP's projections (mlp_bias).
  bool qkv_bias = false;
  bool o_bias = false;
  bool mlp_bias = false;
  // Per-head RMSNorm of q and k before RoPE (Qwen3).
  bool qk_norm = false;
  // The MLP's activation: "silu" (Llama family), "gelu_tanh" or "gelu"
  // (GPT-2).
  std::string activation;
  // Attention window in tokens (Mistral); 0 = full causal attention.
  int64_t sliding_window = 0;
  // config.json's torch_dtype ("bfloat16", ...), "" when absent.
  std::string torch_dtype;
};

// Parses `text` (the contents of `path`) into *out. Errors name the file
// and the field: "config.json: num_attention_heads: expected a positive
// integer", "config.json: architecture FooForCausalLM is not supported
// (supported: LlamaForCausalLM, ...)".
bool ParseModelConfig(std::string_view text, const std::string& path,
                      ModelConfig* out, std::string* error);

// "LlamaForCausalLM, MistralForCausalLM, ...": for error messages.
std::string SupportedArchitectures();

}  // namespace halftime::engine::hf

#endif  // HALFTIME_ENGINE_HF_MODEL_CONFIG_H_
