// Writes a trained model back out as a Hugging Face folder: the source
// folder's config.json and tokenizer files, and the weights under their
// Hugging Face names and layouts (hf::HfTensor), in one model.safetensors
// or, past the shard size, in model-0000i-of-0000N.safetensors shards with
// a model.safetensors.index.json, as save_pretrained writes them.
//
// Thread safety: a function of its arguments; callers serialize writes to
// one directory.

#ifndef HALFTIME_ENGINE_HF_EXPORT_H_
#define HALFTIME_ENGINE_HF_EXPORT_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "engine/checkpoint.h"
#include "engine/model.h"
#include "engine/status.h"

namespace halftime::engine::hf {

// save_pretrained's default max_shard_size ("5GB").
inline constexpr int64_t kMaxShardBytes = 5'000'000'000;

// The files besides the weights that a model folder carries and an export
// copies when the source has them.
const std::vector<std::string>& CompanionFiles();

// Writes `dir` from `weights` (parameter name -> values, any dtype) placed
// by `layout`, each cast to `dtype`, plus the companion files of
// `source_dir`. The folder is built beside `dir` and renamed into place,
// replacing an older one, so a reader never sees half an export.
// kTrainingFailed naming the path when a file cannot be written;
// kInvalidInput when `layout` names a parameter `weights` lacks.
TrainStatus ExportFolder(const std::string& source_dir,
                         const std::vector<HfTensor>& layout,
                         const NamedTensors& weights, at::ScalarType dtype,
                         const std::string& dir,
                         int64_t max_shard_bytes = kMaxShardBytes);

}  // namespace halftime::engine::hf

#endif  // HALFTIME_ENGINE_HF_EXPORT_H_
