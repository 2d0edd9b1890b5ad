// A safetensors file opened for reading: memory-mapped (read-only, private)
// with its header checked against the file's size, so that a lying header
// or a truncated file is an error before any tensor is touched. Tensors are
// copied out one at a time and the pages they came from are released right
// after, so loading a model costs about one copy of it in its target dtype
// and not a second one in the page tables.
//
// Thread safety: not thread-safe (Take releases pages); one loader owns it.

#ifndef HALFTIME_ENGINE_HF_SAFETENSORS_FILE_H_
#define HALFTIME_ENGINE_HF_SAFETENSORS_FILE_H_

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/hf/safetensors_header.h"
#include "engine/status.h"

namespace halftime::engine::hf {

class SafetensorsFile {
 public:
  // Opens and maps `path`. kInvalidInput naming the path and the cause when
  // it cannot be opened or its header is malformed or lies.
  static TrainStatus Open(const std::string& path,
                          std::unique_ptr<SafetensorsFile>* out);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  // The entry named `name`; nullptr when the file has none.
  const TensorEntry* Find(const std::string& name) const;
  // A new CPU tensor holding `entry`'s values converted to `dtype`
  // (undefined `dtype`: the file's own). The file pages it was read from
  // are released. `entry` must come from this file's header.
  at::Tensor Read(const TensorEntry& entry,
                  c10::optional<at::ScalarType> dtype = c10::nullopt);

  // The at::ScalarType of a safetensors dtype.
  static at::ScalarType ScalarTypeOf(DType dtype);
  // The safetensors dtype of `type`; false when safetensors has none.
  static bool DTypeFor(at::ScalarType type, DType* out);

 private:
  SafetensorsFile() = default;
  std::string path_;
  int fd_ = -1;
  void* base_ = nullptr;
  size_t size_ = 0;
  SafetensorsHeader header_;
  std::map<std::string, size_t> index_;
};

}  // namespace halftime::engine::hf

#endif  // HALFTIME_ENGINE_HF_SAFETENSORS_FILE_H_
