#include "engine/hf/export.h"

#include <filesystem>
#include <map>
#include <system_error>

#include "engine/hf/safetensors_index.h"

namespace halftime::engine::hf {
namespace {

namespace fs = std::filesystem;

TrainStatus Failed(const std::string& msg) {
  return TrainStatus::Error(TrainStatus::kTrainingFailed, msg);
}

std::string ShardName(size_t i, size_t n) {
  char name[64];
  std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", i + 1,
                n);
  return name;
}

}  // namespace

const std::vector<std::string>& CompanionFiles() {
  static const std::vector<std::string> files = {
      "config.json",
      "generation_config.json",
      "tokenizer.json",
      "tokenizer_config.json",
      "special_tokens_map.json",
      "tokenizer.model",
      "vocab.json",
      "merges.txt",
      "added_tokens.json",
      "chat_template.jinja",
  };
  return files;
}

TrainStatus ExportFolder(const std::string& source_dir,
                         const std::vector<HfTensor>& layout,
                         const NamedTensors& weights, at::ScalarType dtype,
                         const std::string& dir, int64_t max_shard_bytes) {
  std::map<std::string, at::Tensor> by_name(weights.begin(), weights.end());
  // Tensors in layout order, cut into shards of at most max_shard_bytes
  // (a tensor larger than that gets a shard of its own).
  std::vector<NamedTensors> shards(1);
  int64_t shard_bytes = 0, total_bytes = 0;
  for (const HfTensor& t : layout) {
    auto it = by_name.find(t.param_name);
    if (it == by_name.end()) {
      return TrainStatus::Error(
          TrainStatus::kInvalidInput,
          "export: no weights for parameter " + t.param_name);
    }
    at::Tensor value = it->second.detach().to(at::kCPU).to(dtype);
    if (t.transposed) value = value.t();
    const int64_t bytes = static_cast<int64_t>(value.nbytes());
    if (shard_bytes > 0 && shard_bytes + bytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().emplace_back(t.hf_name, value.contiguous());
    shard_bytes += bytes;
    total_bytes += bytes;
  }

  return WriteFolderAtomically(dir, [&](const fs::path& staging) {
    std::error_code ec;
    for (const std::string& name : CompanionFiles()) {
      const fs::path from = fs::path(source_dir) / name;
      if (!fs::exists(from, ec)) continue;
      fs::copy_file(from, staging / name, ec);
      if (ec) {
        return Failed("cannot copy " + from.string() + " to " +
                      staging.string() + ": " + ec.message());
      }
    }
    const std::map<std::string, std::string> metadata = {{"format", "pt"}};
    if (shards.size() == 1) {
      return WriteSafetensors((staging / "model.safetensors").string(),
                              shards[0], metadata);
    }
    std::vector<std::pair<std::string, std::string>> weight_map;
    for (size_t i = 0; i < shards.size(); ++i) {
      const std::string file = ShardName(i, shards.size());
      TrainStatus st =
          WriteSafetensors((staging / file).string(), shards[i], metadata);
      if (!st.ok()) return st;
      for (const auto& [name, value] : shards[i]) {
        weight_map.emplace_back(name, file);
      }
    }
    return WriteFileAtomically(
        (staging / "model.safetensors.index.json").string(),
        SafetensorsIndexJson(weight_map, total_bytes) + "\n");
  });
}

}  // namespace halftime::engine::hf
