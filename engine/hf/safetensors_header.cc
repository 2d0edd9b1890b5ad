#include "engine/hf/safetensors_header.h"

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

namespace halftime::engine::hf {
namespace {

// Insertion-ordered, so tensors come out in file order.
using Json = nlohmann::ordered_json;

struct DTypeInfo {
  DType dtype;
  const char* name;
  int bytes;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::kF64, "F64", 8},   {DType::kF32, "F32", 4}, {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2}, {DType::kI64, "I64", 8}, {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2},   {DType::kI8, "I8", 1},   {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1},
};

bool Fail(std::string* error, std::string message) {
  *error = std::move(message);
  return false;
}

// A non-negative integer that fits int64 (nlohmann reads those as unsigned).
bool NonNegativeInt64(const Json& v, uint64_t* out) {
  if (!v.is_number_unsigned()) return false;
  const uint64_t n = v.get<uint64_t>();
  if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return false;
  }
  *out = n;
  return true;
}

// Parses `text`, refusing a key that appears twice in one object (ordered
// JSON would keep the first silently; a header that names a tensor twice
// lies about the file).
bool ParseStrict(std::string_view text, Json* out, std::string* error) {
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  const Json::parser_callback_t check_keys =
      [&](int /*depth*/, Json::parse_event_t event, Json& parsed) {
        switch (event) {
          case Json::parse_event_t::object_start:
            open_objects.emplace_back();
            break;
          case Json::parse_event_t::object_end:
            if (!open_objects.empty()) open_objects.pop_back();
            break;
          case Json::parse_event_t::key:
            if (!open_objects.empty() && duplicate.empty() &&
                !open_objects.back().insert(parsed.get<std::string>()).second) {
              duplicate = parsed.get<std::string>();
            }
            break;
          default:
            break;
        }
        return true;
      };
  try {
    *out = Json::parse(text.begin(), text.end(), check_keys);
  } catch (const Json::exception& e) {
    return Fail(error, std::string("malformed JSON header: ") + e.what());
  }
  if (!duplicate.empty()) {
    return Fail(error, "the header names " + duplicate + " twice");
  }
  return true;
}

}  // namespace

const char* DTypeName(DType dtype) {
  for (const auto& d : kDTypes) {
    if (d.dtype == dtype) return d.name;
  }
  return "?";
}

int DTypeBytes(DType dtype) {
  for (const auto& d : kDTypes) {
    if (d.dtype == dtype) return d.bytes;
  }
  return 0;
}

int64_t TensorEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

bool ReadHeaderLength(std::string_view prefix, uint64_t file_size,
                      uint64_t* length, std::string* error) {
  if (prefix.size() < 8 || file_size < 8) {
    return Fail(error, "truncated: shorter than the 8-byte header length");
  }
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) {
    n |= static_cast<uint64_t>(static_cast<unsigned char>(prefix[i]))
         << (8 * i);
  }
  if (n > kMaxHeaderBytes) {
    return Fail(error, "header length " + std::to_string(n) +
                           " is past the 100 MiB limit (not a safetensors "
                           "file?)");
  }
  if (n > file_size - 8) {
    return Fail(error, "truncated: the header says " + std::to_string(n) +
                           " bytes, the file has " +
                           std::to_string(file_size - 8) + " after the length");
  }
  *length = n;
  return true;
}

bool ParseSafetensorsHeader(std::string_view header, uint64_t file_size,
                            SafetensorsHeader* out, std::string* error) {
  *out = SafetensorsHeader();
  out->data_start = 8 + header.size();
  if (out->data_start > file_size) {
    return Fail(error, "truncated: the header runs past the end of the file");
  }
  const uint64_t data_bytes = file_size - out->data_start;
  Json root;
  if (!ParseStrict(header, &root, error)) return false;
  if (!root.is_object()) return Fail(error, "the header is not a JSON object");
  for (const auto& [name, v] : root.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) return Fail(error, "__metadata__ is not an object");
      for (const auto& [k, s] : v.items()) {
        if (!s.is_string()) {
          return Fail(error, "__metadata__ entry " + k + " is not a string");
        }
        out->metadata.emplace_back(k, s.get<std::string>());
      }
      continue;
    }
    const std::string what = "tensor " + name;
    if (!v.is_object()) return Fail(error, what + " is not an object");
    TensorEntry e;
    e.name = name;
    const auto dtype = v.find("dtype");
    if (dtype == v.end() || !dtype->is_string()) {
      return Fail(error, what + " has no dtype string");
    }
    const DTypeInfo* info = nullptr;
    for (const auto& d : kDTypes) {
      if (dtype->get<std::string>() == d.name) info = &d;
    }
    if (info == nullptr) {
      return Fail(error,
                  what + " has unsupported dtype " + dtype->get<std::string>());
    }
    e.dtype = info->dtype;
    const auto shape = v.find("shape");
    if (shape == v.end() || !shape->is_array()) {
      return Fail(error, what + " has no shape array");
    }
    // Bytes of the tensor, kept below 2^62 as the dims multiply.
    uint64_t bytes = static_cast<uint64_t>(info->bytes);
    for (const Json& d : *shape) {
      uint64_t dim = 0;
      if (!NonNegativeInt64(d, &dim)) {
        return Fail(error, what +
                               " has a shape entry that is not a "
                               "non-negative integer");
      }
      if (dim != 0 && bytes > (uint64_t{1} << 62) / dim) {
        return Fail(error, what + " has a shape too large for any file");
      }
      bytes *= dim;
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto offsets = v.find("data_offsets");
    if (offsets == v.end() || !offsets->is_array() || offsets->size() != 2 ||
        !NonNegativeInt64((*offsets)[0], &e.begin) ||
        !NonNegativeInt64((*offsets)[1], &e.end) || e.end < e.begin) {
      return Fail(error, what +
                             " needs data_offsets [begin, end] with "
                             "0 <= begin <= end");
    }
    if (e.end - e.begin != bytes) {
      return Fail(error, what + " spans " + std::to_string(e.end - e.begin) +
                             " bytes, its dtype and shape need " +
                             std::to_string(bytes));
    }
    if (e.end > data_bytes) {
      return Fail(error, "truncated: " + what + " ends at byte " +
                             std::to_string(e.end) +
                             " of the data, which has " +
                             std::to_string(data_bytes));
    }
    out->tensors.push_back(std::move(e));
  }
  std::vector<const TensorEntry*> by_offset;
  for (const auto& e : out->tensors) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorEntry* a, const TensorEntry* b) {
              return a->begin < b->begin ||
                     (a->begin == b->begin && a->end < b->end);
            });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i]->begin < by_offset[i - 1]->end) {
      return Fail(error, "tensor " + by_offset[i]->name + " overlaps tensor " +
                             by_offset[i - 1]->name);
    }
  }
  return true;
}

std::string SafetensorsHeaderJson(
    std::vector<TensorEntry>* tensors,
    const std::vector<std::pair<std::string, std::string>>& metadata) {
  Json root = Json::object();
  if (!metadata.empty()) {
    Json meta = Json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    root["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (TensorEntry& e : *tensors) {
    uint64_t bytes = static_cast<uint64_t>(DTypeBytes(e.dtype));
    for (int64_t d : e.shape) bytes *= static_cast<uint64_t>(d);
    e.begin = offset;
    e.end = offset + bytes;
    offset = e.end;
    root[e.name] = Json{{"dtype", DTypeName(e.dtype)},
                        {"shape", e.shape},
                        {"data_offsets", {e.begin, e.end}}};
  }
  // Names are the engine's own; a byte that is not UTF-8 is replaced rather
  // than thrown on.
  return root.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace halftime::engine::hf
