// Internal: on-disk formats — safetensors and the engine's checkpoints.
//
// safetensors (written by hand, https://github.com/huggingface/safetensors):
// 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...,
//  "__metadata__": {"k": "v"}} padded with spaces to a multiple of 8, then
// the raw little-endian tensor bytes.
//
// Checkpoints are torch.save-compatible zip pickles (torch::pickle_save) of a
// dict: {"format": "halftime-checkpoint-v1", "step", "micro_batches",
// "optimizer_steps", "precision", "fingerprint", "scaler": {...},
// "model": {name: fp32 tensor}, "optimizer": {name/what: tensor},
// "rng_cpu": tensor, "base_hash": str (adapter jobs)}. They are written to
// PATH.tmp and renamed into place.
//
// Thread safety: free functions; safe to call concurrently on distinct paths.

#ifndef HALFTIME_ENGINE_CHECKPOINT_H_
#define HALFTIME_ENGINE_CHECKPOINT_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/loss_scaler.h"
#include "engine/status.h"

namespace halftime::engine {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Writes `tensors` (any device; copied to CPU) as safetensors, atomically.
// Supported dtypes: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL.
TrainStatus WriteSafetensors(
    const std::string& path, const NamedTensors& tensors,
    const std::map<std::string, std::string>& metadata = {});

// Reads a safetensors file into CPU tensors (in file order). Errors name the
// path and what is malformed.
TrainStatus ReadSafetensors(const std::string& path, NamedTensors* out);

struct CheckpointData {
  int64_t step = 0;
  int64_t micro_batches = 0;
  int64_t optimizer_steps = 0;
  std::string precision;
  uint64_t fingerprint = 0;
  LossScalerState scaler;
  NamedTensors model;      // fp32 weights
  NamedTensors optimizer;  // optimizer state
  at::Tensor rng_cpu;      // default CPU generator state
  at::Tensor rng_cuda;     // default CUDA generator state (CUDA runs only)
  // Adapter jobs: the frozen base's content hash (AdapterReport::base_hash);
  // `model` then holds only the trainable tensors.
  std::string base_hash;
};

// Writes `data` to `path` atomically (PATH.tmp, then rename).
TrainStatus WriteCheckpoint(const std::string& path,
                            const CheckpointData& data);
TrainStatus ReadCheckpoint(const std::string& path, CheckpointData* out);

// Loads weights for init_from: a .safetensors file or one of our checkpoints.
TrainStatus ReadWeights(const std::string& path, NamedTensors* out);

// Writes `contents` to `path` atomically.
TrainStatus WriteFileAtomically(const std::string& path,
                                const std::string& contents);

// Builds the folder `dir` beside it (DIR.tmp, handed to `fill`) and renames
// it into place, replacing an older one, so a reader never sees half a
// folder. kTrainingFailed naming the path when the folder cannot be made or
// moved; `fill`'s error as it is.
TrainStatus WriteFolderAtomically(
    const std::string& dir,
    const std::function<TrainStatus(const std::filesystem::path& staging)>&
        fill);

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_CHECKPOINT_H_
