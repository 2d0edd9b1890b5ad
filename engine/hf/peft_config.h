// A PEFT adapter folder's adapter_config.json, read into the fields a LoRA
// adapter needs, and written back as PEFT writes it. Parsed without
// libtorch so that the fuzz target can link it.
//
// Thread safety: pure functions and plain values; safe from any thread.

#ifndef HALFTIME_ENGINE_HF_PEFT_CONFIG_H_
#define HALFTIME_ENGINE_HF_PEFT_CONFIG_H_

#include <string>
#include <string_view>
#include <vector>

namespace halftime::engine::hf {

// PEFT's file names inside an adapter folder.
inline constexpr const char* kPeftConfigFile = "adapter_config.json";
inline constexpr const char* kPeftWeightsFile = "adapter_model.safetensors";

// PEFT's target_modules value for every linear layer but the output head.
inline constexpr const char* kAllLinear = "all-linear";

// Whether `targets` is all-linear alone (in any case, as PEFT reads it).
bool IsAllLinear(const std::vector<std::string>& targets);

struct PeftConfig {
  // PEFT's defaults for a config that omits them.
  int rank = 8;
  double alpha = 8;
  double dropout = 0;
  // Module names or suffixes; {"all-linear"}; empty = the family default.
  std::vector<std::string> target_modules;
  std::vector<std::string> modules_to_save;
  bool rslora = false;
  // GPT-2's Conv1D layout (written; the loader infers it from the model).
  bool fan_in_fan_out = false;
  std::string base_model_name_or_path;
};

// Parses `text` (the contents of `path`). Errors name the file and the
// field: "adapter_config.json: peft_type must be \"LORA\" ...". Refused: a
// peft_type other than LORA, DoRA, a regular-expression target_modules
// (other than "all-linear"), a rank outside [1, 2^20], a non-finite or
// non-positive alpha, a dropout outside [0, 1).
bool ParsePeftConfig(std::string_view text, const std::string& path,
                     PeftConfig* out, std::string* error);

// adapter_config.json for `config`, as PEFT's save_pretrained writes it
// (sorted keys, two-space indent, a final newline).
std::string FormatPeftConfig(const PeftConfig& config);

}  // namespace halftime::engine::hf

#endif  // HALFTIME_ENGINE_HF_PEFT_CONFIG_H_
