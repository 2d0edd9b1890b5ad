// libFuzzer target: a Hugging Face config.json, and the same bytes as a
// model.safetensors.index.json, on arbitrary bytes.
//
// Beyond "no crash, no hang, no sanitizer report", a config that is
// accepted must be one the model builders can use without checking again:
// a supported architecture, positive sizes, heads that split evenly into
// key/value groups, a known RoPE type and a known activation.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "engine/hf/model_config.h"
#include "engine/hf/safetensors_index.h"

namespace {

using halftime::engine::hf::Family;
using halftime::engine::hf::ModelConfig;
using halftime::engine::hf::ParseModelConfig;
using halftime::engine::hf::ParseSafetensorsIndex;
using halftime::engine::hf::SupportedArchitectures;

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_hf_config: %s\n", what.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  // An accepted index names only plain files inside the folder.
  std::map<std::string, std::vector<std::string>> shards;
  std::string index_error;
  if (ParseSafetensorsIndex(text, "index.json", &shards, &index_error)) {
    for (const auto& [file, tensors] : shards) {
      if (file.empty() || file.find('/') != std::string::npos || file == "." ||
          file == ".." || tensors.empty()) {
        Fail("index accepted a shard outside the folder: " + file);
      }
    }
  } else if (index_error.rfind("index.json", 0) != 0) {
    Fail("index error does not name the file: " + index_error);
  }
  ModelConfig c;
  std::string error;
  if (!ParseModelConfig(text, "config.json", &c, &error)) {
    if (error.rfind("config.json", 0) != 0) {
      Fail("error does not name the file: " + error);
    }
    return 0;
  }
  if (c.architecture.empty() ||
      (", " + SupportedArchitectures() + ",")
              .find(", " + c.architecture + ",") == std::string::npos) {
    Fail("unsupported architecture accepted: " + c.architecture);
  }
  for (int64_t v :
       {c.vocab_size, c.hidden_size, c.num_layers, c.num_heads, c.num_kv_heads,
        c.head_dim, c.intermediate_size, c.max_positions}) {
    if (v <= 0) Fail("a non-positive size accepted");
  }
  if (c.num_heads % c.num_kv_heads != 0) Fail("uneven key/value groups");
  if (!(c.norm_eps > 0) || !(c.rope.theta > 0) || !(c.rope.factor > 0)) {
    Fail("a non-positive eps, theta or factor accepted");
  }
  if (c.rope.type != "default" && c.rope.type != "linear" &&
      c.rope.type != "llama3") {
    Fail("unknown rope type accepted: " + c.rope.type);
  }
  const bool gpt2 = c.family == Family::kGpt2;
  if (gpt2 ? (c.activation != "gelu_tanh" && c.activation != "gelu")
           : c.activation != "silu") {
    Fail("unknown activation accepted: " + c.activation);
  }
  if (gpt2 && c.hidden_size != c.num_heads * c.head_dim) {
    Fail("GPT-2 heads do not split the width");
  }
  return 0;
}
