#include "engine/hf/model_config.h"

#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>

namespace halftime::engine::hf {
namespace {

using Json = nlohmann::json;

// What an architecture adds to its family's config reading.
struct Architecture {
  const char* name;
  Family family;
  // q/k/v carry biases whatever attention_bias says (Qwen2).
  bool qkv_bias;
  // Per-head q/k RMSNorm (Qwen3).
  bool qk_norm;
};
constexpr Architecture kArchitectures[] = {
    {"LlamaForCausalLM", Family::kLlama, false, false},
    {"MistralForCausalLM", Family::kLlama, false, false},
    {"Qwen2ForCausalLM", Family::kLlama, true, false},
    {"Qwen3ForCausalLM", Family::kLlama, false, true},
    {"GPT2LMHeadModel", Family::kGpt2, false, false},
};

// Typed field reads that remember the first error, named by field.
class Reader {
 public:
  Reader(const Json& object, std::string prefix)
      : o_(object), prefix_(std::move(prefix)) {}

  // The member `key`; nullptr when absent or null.
  const Json* Get(const char* key) const {
    const auto it = o_.find(key);
    return it == o_.end() || it->is_null() ? nullptr : &*it;
  }
  int64_t PositiveInt(const char* key, int64_t fallback) {
    const Json* v = Get(key);
    if (v == nullptr) {
      if (fallback <= 0) Error(key, "required: a positive integer");
      return fallback;
    }
    // nlohmann reads non-negative integers as unsigned.
    if (!v->is_number_unsigned() || v->get<uint64_t>() == 0 ||
        v->get<uint64_t>() > (uint64_t{1} << 40)) {
      Error(key, "expected a positive integer");
      return fallback > 0 ? fallback : 1;
    }
    return static_cast<int64_t>(v->get<uint64_t>());
  }
  double PositiveNumber(const char* key, double fallback) {
    const Json* v = Get(key);
    if (v == nullptr) return fallback;
    const double n = v->is_number() ? v->get<double>() : 0;
    if (!(n > 0) || !std::isfinite(n)) {
      Error(key, "expected a positive number");
      return fallback;
    }
    return n;
  }
  bool Bool(const char* key, bool fallback) {
    const Json* v = Get(key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) {
      Error(key, "expected true or false");
      return fallback;
    }
    return v->get<bool>();
  }
  std::string String(const char* key, const std::string& fallback) {
    const Json* v = Get(key);
    if (v == nullptr) return fallback;
    if (!v->is_string()) {
      Error(key, "expected a string");
      return fallback;
    }
    return v->get<std::string>();
  }
  void Error(const std::string& key, const std::string& what) {
    if (error_.empty()) error_ = prefix_ + key + ": " + what;
  }
  // Keeps `full` (an error already prefixed) unless an error came first.
  void Adopt(const std::string& full) {
    if (error_.empty()) error_ = full;
  }
  const std::string& error() const { return error_; }

 private:
  const Json& o_;
  std::string prefix_;
  std::string error_;
};

void ReadRope(Reader& top, const std::string& prefix, RopeConfig* rope) {
  // transformers 5 writes rope_parameters (theta inside); earlier versions
  // rope_theta at the top and rope_scaling (null for plain RoPE).
  const Json* params = top.Get("rope_parameters");
  const bool new_form = params != nullptr;
  const Json* scaling = new_form ? params : top.Get("rope_scaling");
  const char* key = new_form ? "rope_parameters" : "rope_scaling";
  rope->theta = top.PositiveNumber("rope_theta", 10000.0);
  if (scaling == nullptr) return;
  if (!scaling->is_object()) {
    top.Error(key, "expected an object");
    return;
  }
  Reader r(*scaling, prefix + key + ".");
  if (new_form) rope->theta = r.PositiveNumber("rope_theta", rope->theta);
  // rope_type since transformers 4.38, type before.
  rope->type = r.String("rope_type", r.String("type", "default"));
  if (rope->type == "default") {
  } else if (rope->type == "linear") {
    rope->factor = r.PositiveNumber("factor", 0);
    if (rope->factor == 0) r.Error("factor", "required for linear");
  } else if (rope->type == "llama3") {
    rope->factor = r.PositiveNumber("factor", 0);
    if (rope->factor == 0) r.Error("factor", "required for llama3");
    rope->low_freq_factor = r.PositiveNumber("low_freq_factor", 1.0);
    rope->high_freq_factor = r.PositiveNumber("high_freq_factor", 4.0);
    rope->original_max_position_embeddings =
        r.PositiveInt("original_max_position_embeddings", 0);
    if (r.error().empty() && rope->high_freq_factor <= rope->low_freq_factor) {
      r.Error("high_freq_factor", "must exceed low_freq_factor");
    }
  } else {
    r.Error("rope_type", "'" + rope->type +
                             "' is not supported (supported: default, "
                             "linear, llama3)");
  }
  if (!r.error().empty()) top.Adopt(r.error());
}

void ReadLlama(Reader& r, const std::string& prefix, const Architecture& arch,
               ModelConfig* c) {
  c->vocab_size = r.PositiveInt("vocab_size", 0);
  c->hidden_size = r.PositiveInt("hidden_size", 0);
  c->intermediate_size = r.PositiveInt("intermediate_size", 0);
  c->num_layers = r.PositiveInt("num_hidden_layers", 0);
  c->num_heads = r.PositiveInt("num_attention_heads", 0);
  c->num_kv_heads = r.PositiveInt("num_key_value_heads", c->num_heads);
  if (r.error().empty() && r.Get("head_dim") == nullptr &&
      c->hidden_size % c->num_heads != 0) {
    r.Error("hidden_size",
            "must be a multiple of num_attention_heads when "
            "head_dim is not given");
  }
  c->head_dim = r.PositiveInt(
      "head_dim", c->num_heads > 0 ? c->hidden_size / c->num_heads : 0);
  if (r.error().empty() && c->num_heads % c->num_kv_heads != 0) {
    r.Error("num_key_value_heads", "must divide num_attention_heads (" +
                                       std::to_string(c->num_heads) + ")");
  }
  c->max_positions = r.PositiveInt("max_position_embeddings", 2048);
  c->norm_eps = r.PositiveNumber("rms_norm_eps", 1e-6);
  c->tie_word_embeddings = r.Bool("tie_word_embeddings", false);
  const bool attention_bias = r.Bool("attention_bias", false);
  c->qkv_bias = arch.qkv_bias || attention_bias;
  c->o_bias = attention_bias;
  c->mlp_bias = r.Bool("mlp_bias", false);
  c->qk_norm = arch.qk_norm;
  c->activation = r.String("hidden_act", "silu");
  if (c->activation != "silu") {
    r.Error("hidden_act", "'" + c->activation + "' is not supported for " +
                              arch.name + " (supported: silu)");
  }
  const Json* partial = r.Get("partial_rotary_factor");
  if (partial != nullptr &&
      (!partial->is_number() || partial->get<double>() != 1.0)) {
    r.Error("partial_rotary_factor", "only 1.0 is supported");
  }
  // Qwen2/3 write a sliding_window that only applies with
  // use_sliding_window; Mistral's applies whenever it is set.
  const bool window_applies =
      r.Get("use_sliding_window") != nullptr
          ? r.Bool("use_sliding_window", false)
          : std::string(arch.name) == "MistralForCausalLM";
  if (window_applies && r.Get("sliding_window") != nullptr) {
    c->sliding_window = r.PositiveInt("sliding_window", 1);
  }
  ReadRope(r, prefix, &c->rope);
}

void ReadGpt2(Reader& r, ModelConfig* c) {
  c->vocab_size = r.PositiveInt("vocab_size", 50257);
  c->max_positions = r.PositiveInt("n_positions", 1024);
  c->hidden_size = r.PositiveInt("n_embd", 768);
  c->num_layers = r.PositiveInt("n_layer", 12);
  c->num_heads = r.PositiveInt("n_head", 12);
  c->num_kv_heads = c->num_heads;
  if (r.error().empty() && c->hidden_size % c->num_heads != 0) {
    r.Error("n_embd", "must be a multiple of n_head");
  }
  c->head_dim = c->num_heads > 0 ? c->hidden_size / c->num_heads : 0;
  c->intermediate_size = r.PositiveInt("n_inner", 4 * c->hidden_size);
  c->norm_eps = r.PositiveNumber("layer_norm_epsilon", 1e-5);
  c->tie_word_embeddings = r.Bool("tie_word_embeddings", true);
  if (!c->tie_word_embeddings) {
    r.Error("tie_word_embeddings",
            "GPT2LMHeadModel with an untied head is "
            "not supported");
  }
  c->qkv_bias = c->o_bias = c->mlp_bias = true;
  const std::string act = r.String("activation_function", "gelu_new");
  if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast") {
    c->activation = "gelu_tanh";
  } else if (act == "gelu") {
    c->activation = "gelu";
  } else {
    r.Error("activation_function",
            "'" + act + "' is not supported (supported: gelu_new, gelu)");
  }
  if (!r.Bool("scale_attn_weights", true)) {
    r.Error("scale_attn_weights", "only true is supported");
  }
  if (r.Bool("scale_attn_by_inverse_layer_idx", false)) {
    r.Error("scale_attn_by_inverse_layer_idx", "only false is supported");
  }
}

}  // namespace

std::string SupportedArchitectures() {
  std::string names;
  for (const Architecture& a : kArchitectures) {
    if (!names.empty()) names += ", ";
    names += a.name;
  }
  return names;
}

bool ParseModelConfig(std::string_view text, const std::string& path,
                      ModelConfig* out, std::string* error) {
  *out = ModelConfig();
  Json root;
  try {
    root = Json::parse(text.begin(), text.end());
  } catch (const Json::exception& e) {
    *error = path + ": not valid JSON: " + e.what();
    return false;
  }
  if (!root.is_object()) {
    *error = path + ": not a JSON object";
    return false;
  }
  const auto archs = root.find("architectures");
  if (archs == root.end() || !archs->is_array() || archs->size() != 1 ||
      !(*archs)[0].is_string()) {
    *error = path + ": architectures: expected a list of one name (one of " +
             SupportedArchitectures() + ")";
    return false;
  }
  const Architecture* arch = nullptr;
  const std::string name = (*archs)[0].get<std::string>();
  for (const Architecture& a : kArchitectures) {
    if (name == a.name) arch = &a;
  }
  if (arch == nullptr) {
    *error = path + ": architecture " + name +
             " is not supported (supported: " + SupportedArchitectures() + ")";
    return false;
  }
  out->architecture = arch->name;
  out->family = arch->family;
  const std::string prefix = path + ": ";
  Reader r(root, prefix);
  out->torch_dtype = r.String("torch_dtype", r.String("dtype", ""));
  switch (arch->family) {
    case Family::kLlama:
      ReadLlama(r, prefix, *arch, out);
      break;
    case Family::kGpt2:
      ReadGpt2(r, out);
      break;
  }
  if (!r.error().empty()) {
    *error = r.error();
    return false;
  }
  return true;
}

}  // namespace halftime::engine::hf
