// The header of a safetensors file: 8 bytes of little-endian length N, then
// N bytes of JSON
//   {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]},
//    ..., "__metadata__": {"k": "v"}}
// then the tensor bytes; offsets count from the end of the header. Parsed
// and checked against the file without libtorch, so that the fuzz target
// links it and a loader can copy each accepted range without checking again.
//
// Thread safety: pure functions; safe from any thread.

#ifndef HALFTIME_ENGINE_HF_SAFETENSORS_HEADER_H_
#define HALFTIME_ENGINE_HF_SAFETENSORS_HEADER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace halftime::engine::hf {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// "F32", "BF16", ... as safetensors writes them; "?" for no such dtype.
const char* DTypeName(DType dtype);
// Bytes per element.
int DTypeBytes(DType dtype);

struct TensorEntry {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  // Byte range within the data section (after the header).
  uint64_t begin = 0;
  uint64_t end = 0;
  // Elements: the product of the shape (1 for a scalar).
  int64_t numel() const;
};

struct SafetensorsHeader {
  // Bytes from the start of the file to the first tensor byte (8 + N).
  uint64_t data_start = 0;
  // In file order.
  std::vector<TensorEntry> tensors;
  // In file order.
  std::vector<std::pair<std::string, std::string>> metadata;
};

// The largest header accepted: the reference implementation's limit.
inline constexpr uint64_t kMaxHeaderBytes = 100u << 20;

// Reads the header length N from the file's first 8 bytes (`prefix` holds
// them). Fails, with *error saying why, when the file is shorter than 8
// bytes or N is past kMaxHeaderBytes or past the end of the file.
bool ReadHeaderLength(std::string_view prefix, uint64_t file_size,
                      uint64_t* length, std::string* error);

// Parses the header JSON `header` of a file of `file_size` bytes and checks
// it against the file: a known dtype, non-negative integer dims whose
// product times the dtype's size is the byte range, ranges inside the file
// that do not overlap, no name twice, string metadata. On failure returns
// false with *error naming the tensor and what is wrong; *out is then
// unspecified.
bool ParseSafetensorsHeader(std::string_view header, uint64_t file_size,
                            SafetensorsHeader* out, std::string* error);

// The header JSON (without the length prefix or padding) for `tensors` laid
// out back to back in the given order, and `metadata`. Sets each entry's
// begin/end from its dtype and shape.
std::string SafetensorsHeaderJson(
    std::vector<TensorEntry>* tensors,
    const std::vector<std::pair<std::string, std::string>>& metadata);

}  // namespace halftime::engine::hf

#endif  // HALFTIME_ENGINE_HF_SAFETENSORS_HEADER_H_
