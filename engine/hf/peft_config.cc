#include "engine/hf/peft_config.h"

#include <cctype>
#include <cmath>
#include <nlohmann/json.hpp>

namespace halftime::engine::hf {
bool IsAllLinear(const std::vector<std::string>& targets) {
  if (targets.size() != 1) return false;
  std::string lower;
  for (char c : targets[0]) {
    lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return lower == kAllLinear;
}

bool ParsePeftConfig(std::string_view text, const std::string& path,
                     PeftConfig* out, std::string* error) {
  const nlohmann::json j =
      nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    *error = path + ": not a JSON object";
    return false;
  }
  auto bad = [&](const std::string& field, const std::string& why) {
    *error = path + ": " + field + " " + why;
    return false;
  };
  PeftConfig c;
  const auto peft_type = j.find("peft_type");
  if (peft_type == j.end() || !peft_type->is_string() ||
      peft_type->get<std::string>() != "LORA") {
    return bad("peft_type", "must be \"LORA\" (only LoRA adapters load)");
  }
  if (auto it = j.find("r"); it != j.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 1 ||
        it->get<int64_t>() > (int64_t{1} << 20)) {
      return bad("r", "must be an integer from 1 to 1048576");
    }
    c.rank = it->get<int>();
  }
  if (auto it = j.find("lora_alpha"); it != j.end() && !it->is_null()) {
    if (!it->is_number() || !std::isfinite(it->get<double>()) ||
        !(it->get<double>() > 0)) {
      return bad("lora_alpha", "must be a positive number");
    }
    c.alpha = it->get<double>();
  }
  if (auto it = j.find("lora_dropout"); it != j.end() && !it->is_null()) {
    if (!it->is_number() || !(it->get<double>() >= 0) ||
        !(it->get<double>() < 1)) {
      return bad("lora_dropout", "must be a number in [0, 1)");
    }
    c.dropout = it->get<double>();
  }
  for (const char* flag : {"use_rslora", "fan_in_fan_out", "use_dora"}) {
    auto it = j.find(flag);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_boolean()) return bad(flag, "must be true or false");
    if (std::string(flag) == "use_rslora") c.rslora = it->get<bool>();
    if (std::string(flag) == "fan_in_fan_out") {
      c.fan_in_fan_out = it->get<bool>();
    }
    if (std::string(flag) == "use_dora" && it->get<bool>()) {
      return bad(flag, "is true: DoRA adapters are not supported");
    }
  }
  auto strings = [&](const char* field, std::vector<std::string>* list) {
    auto it = j.find(field);
    if (it == j.end() || it->is_null()) return true;
    if (it->is_string()) {
      if (!IsAllLinear({it->get<std::string>()})) {
        return bad(field,
                   "is a regular expression; only a list of module names or "
                   "\"all-linear\" is supported");
      }
      list->push_back(kAllLinear);
      return true;
    }
    if (!it->is_array()) return bad(field, "must be a list of module names");
    for (const auto& e : *it) {
      if (!e.is_string() || e.get<std::string>().empty()) {
        return bad(field, "must be a list of module names");
      }
      list->push_back(e.get<std::string>());
    }
    return true;
  };
  if (!strings("target_modules", &c.target_modules)) return false;
  if (!strings("modules_to_save", &c.modules_to_save)) return false;
  if (auto it = j.find("base_model_name_or_path");
      it != j.end() && it->is_string()) {
    c.base_model_name_or_path = it->get<std::string>();
  }
  *out = std::move(c);
  return true;
}

std::string FormatPeftConfig(const PeftConfig& c) {
  // nlohmann::json sorts keys, as PEFT's json.dumps(sort_keys=True) does.
  nlohmann::json j = {{"alpha_pattern", nlohmann::json::object()},
                      {"auto_mapping", nullptr},
                      {"base_model_name_or_path", c.base_model_name_or_path},
                      {"bias", "none"},
                      {"fan_in_fan_out", c.fan_in_fan_out},
                      {"inference_mode", true},
                      {"init_lora_weights", true},
                      {"layers_pattern", nullptr},
                      {"layers_to_transform", nullptr},
                      {"lora_dropout", c.dropout},
                      {"peft_type", "LORA"},
                      {"r", c.rank},
                      {"rank_pattern", nlohmann::json::object()},
                      {"revision", nullptr},
                      {"target_modules", c.target_modules},
                      {"task_type", "CAUSAL_LM"},
                      {"use_dora", false},
                      {"use_rslora", c.rslora}};
  if (c.alpha == std::floor(c.alpha) && std::fabs(c.alpha) < 1e15) {
    j["lora_alpha"] = static_cast<int64_t>(c.alpha);
  } else {
    j["lora_alpha"] = c.alpha;
  }
  j["modules_to_save"] = c.modules_to_save.empty()
                             ? nlohmann::json(nullptr)
                             : nlohmann::json(c.modules_to_save);
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace halftime::engine::hf
