// libFuzzer target: a safetensors file's header on arbitrary bytes.
//
// The input is the start of a file whose size is the input's size: the
// 8-byte length, then the JSON header (the tensor bytes are never read).
// Beyond "no crash, no hang, no sanitizer report", a header that is
// accepted must describe tensors that a loader can copy without checking
// again: each range inside the data section, its length the shape's element
// count times the dtype's size, no two ranges overlapping, no name twice.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/hf/safetensors_header.h"

namespace {

using halftime::engine::hf::DTypeBytes;
using halftime::engine::hf::ParseSafetensorsHeader;
using halftime::engine::hf::ReadHeaderLength;
using halftime::engine::hf::SafetensorsHeader;

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_safetensors_header: %s\n", what.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  uint64_t length = 0;
  std::string error;
  if (!ReadHeaderLength(bytes, size, &length, &error)) {
    if (error.empty()) Fail("ReadHeaderLength failed without an error");
    return 0;
  }
  if (length > size - 8) Fail("header length past the file accepted");
  SafetensorsHeader header;
  if (!ParseSafetensorsHeader(bytes.substr(8, length), size, &header, &error)) {
    if (error.empty()) Fail("ParseSafetensorsHeader failed without an error");
    return 0;
  }
  if (header.data_start != 8 + length) Fail("data_start is not 8 + length");
  const uint64_t data_size = size - header.data_start;
  std::set<std::string> names;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& t : header.tensors) {
    if (!names.insert(t.name).second) Fail("tensor twice: " + t.name);
    if (t.begin > t.end || t.end > data_size) Fail("range outside: " + t.name);
    // The element count, recomputed with overflow checks.
    unsigned __int128 count = 1;
    for (int64_t d : t.shape) {
      if (d < 0) Fail("negative dimension accepted: " + t.name);
      count *= static_cast<uint64_t>(d);
      if (count > (static_cast<unsigned __int128>(1) << 64)) {
        Fail("element count overflow accepted: " + t.name);
      }
    }
    if (count * DTypeBytes(t.dtype) != t.end - t.begin) {
      Fail("range length is not the shape's bytes: " + t.name);
    }
    if (t.end > t.begin) ranges.emplace_back(t.begin, t.end);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) Fail("overlapping ranges");
  }
  return 0;
}
