// A Hugging Face model folder opened for training: config.json parsed, and
// model.safetensors or the shards model.safetensors.index.json lists
// mapped and checked. Family builders (engine/models/) take each
// tensor they need by its Hugging Face name, straight into the training
// dtype; afterwards CheckAllTaken() refuses a folder with tensors no
// parameter claimed.
//
// Thread safety: not thread-safe; one model build owns it.

#ifndef HALFTIME_ENGINE_HF_PRETRAINED_H_
#define HALFTIME_ENGINE_HF_PRETRAINED_H_

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "engine/hf/model_config.h"
#include "engine/hf/safetensors_file.h"
#include "engine/status.h"

namespace halftime::engine::hf {

class PretrainedFolder {
 public:
  // Opens `dir`. kInvalidInput naming the file and the cause: no
  // config.json, an unsupported architecture or bad field, no weights, an
  // index naming a shard outside the folder or a tensor its shard lacks, a
  // malformed or truncated safetensors file, a tensor in two files.
  static TrainStatus Open(const std::string& dir,
                          std::unique_ptr<PretrainedFolder>* out);

  const std::string& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  bool Has(const std::string& name) const { return where_.count(name) > 0; }
  // The tensor `name` as a new CPU tensor of `dtype`. kInvalidInput naming
  // the file, the tensor and what was expected when it is missing or its
  // shape is not `shape`.
  TrainStatus Take(const std::string& name, at::IntArrayRef shape,
                   at::ScalarType dtype, at::Tensor* out);
  // Drops `name` without reading it (buffers a model recomputes, such as
  // GPT-2's attention masks).
  void Skip(const std::string& name) { taken_.insert(name); }
  // kInvalidInput naming the first tensors no Take or Skip claimed.
  TrainStatus CheckAllTaken() const;
  // The dtype most of the weights are stored in (by bytes).
  DType StoredDType() const;

 private:
  PretrainedFolder() = default;
  std::string dir_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  // Tensor name -> index into files_.
  std::map<std::string, size_t> where_;
  std::set<std::string> taken_;
};

}  // namespace halftime::engine::hf

#endif  // HALFTIME_ENGINE_HF_PRETRAINED_H_
