#include "engine/hf/safetensors_index.h"

#include <nlohmann/json.hpp>

namespace halftime::engine::hf {

bool ParseSafetensorsIndex(
    std::string_view text, const std::string& path,
    std::map<std::string, std::vector<std::string>>* shards,
    std::string* error) {
  // Insertion-ordered, so each shard lists its tensors in the index's order.
  using Json = nlohmann::ordered_json;
  shards->clear();
  Json index;
  try {
    index = Json::parse(text.begin(), text.end());
  } catch (const Json::exception& e) {
    *error = path + ": not valid JSON: " + e.what();
    return false;
  }
  const auto map = index.is_object() ? index.find("weight_map") : index.end();
  if (map == index.end() || !map->is_object() || map->empty()) {
    *error = path + ": weight_map: expected an object of tensor: file";
    return false;
  }
  for (const auto& [tensor, file] : map->items()) {
    const std::string name = file.is_string() ? file.get<std::string>() : "";
    if (name.empty() || name.find('/') != std::string::npos || name == "." ||
        name == "..") {
      *error =
          path + ": weight_map." + tensor +
          ": expected a file name in the folder, not " +
          (file.is_string() ? "'" + name + "'" : std::string(file.type_name()));
      return false;
    }
    (*shards)[name].push_back(tensor);
  }
  return true;
}

std::string SafetensorsIndexJson(
    const std::vector<std::pair<std::string, std::string>>& weight_map,
    int64_t total_size) {
  using Json = nlohmann::ordered_json;
  Json map = Json::object();
  for (const auto& [tensor, file] : weight_map) map[tensor] = file;
  const Json index = {{"metadata", {{"total_size", total_size}}},
                      {"weight_map", std::move(map)}};
  return index.dump(2, ' ', false, Json::error_handler_t::replace);
}

}  // namespace halftime::engine::hf
