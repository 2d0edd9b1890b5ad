// model.safetensors.index.json: which shard file of a Hugging Face folder
// holds each tensor ({"weight_map": {"model.embed_tokens.weight":
// "model-00001-of-00002.safetensors", ...}}). Parsed without libtorch so
// that the fuzz target links it.
//
// Thread safety: a pure function; safe from any thread.

#ifndef HALFTIME_ENGINE_HF_SAFETENSORS_INDEX_H_
#define HALFTIME_ENGINE_HF_SAFETENSORS_INDEX_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace halftime::engine::hf {

// Parses `text` (the contents of `path`) into *shards: shard file name ->
// the tensors it is said to hold, in the index's order. A shard must be a
// plain file name inside the folder (no '/', not "." or ".."). On failure
// returns false with *error naming the file and the entry.
bool ParseSafetensorsIndex(
    std::string_view text, const std::string& path,
    std::map<std::string, std::vector<std::string>>* shards,
    std::string* error);

// The index document for `weight_map` (tensor -> shard file, in order) and
// `total_size` (bytes of all tensors), as save_pretrained writes it.
std::string SafetensorsIndexJson(
    const std::vector<std::pair<std::string, std::string>>& weight_map,
    int64_t total_size);

}  // namespace halftime::engine::hf

#endif  // HALFTIME_ENGINE_HF_SAFETENSORS_INDEX_H_
