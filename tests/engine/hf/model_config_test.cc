// Hugging Face config.json as published models write it (the seed corpus
// of fuzz_hf_config) and model.safetensors.index.json, without libtorch.

#include "engine/hf/model_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "engine/hf/safetensors_index.h"

namespace halftime::engine::hf {
namespace {

using ::testing::HasSubstr;

std::string Seed(const std::string& name) {
  std::ifstream in(std::string(HALFTIME_HF_CONFIG_CORPUS) + "/" + name);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

ModelConfig Parse(const std::string& text) {
  ModelConfig c;
  std::string error;
  EXPECT_TRUE(ParseModelConfig(text, "config.json", &c, &error)) << error;
  return c;
}

std::string ParseError(const std::string& text) {
  ModelConfig c;
  std::string error;
  EXPECT_FALSE(ParseModelConfig(text, "dir/config.json", &c, &error));
  return error;
}

TEST(ModelConfigTest, PublishedConfigsParse) {
  const ModelConfig llama = Parse(Seed("llama-3.2-1b.json"));
  EXPECT_EQ(llama.family, Family::kLlama);
  EXPECT_EQ(llama.vocab_size, 128256);
  EXPECT_EQ(llama.num_kv_heads, 8);
  EXPECT_EQ(llama.head_dim, 64);
  EXPECT_TRUE(llama.tie_word_embeddings);
  EXPECT_EQ(llama.rope.type, "llama3");
  EXPECT_EQ(llama.rope.factor, 32.0);
  EXPECT_EQ(llama.rope.original_max_position_embeddings, 8192);
  EXPECT_EQ(llama.rope.theta, 500000.0);

  const ModelConfig qwen2 = Parse(Seed("qwen2.5-0.5b.json"));
  EXPECT_TRUE(qwen2.qkv_bias);
  EXPECT_FALSE(qwen2.o_bias);
  EXPECT_EQ(qwen2.head_dim, 64);
  EXPECT_EQ(qwen2.sliding_window, 0);  // use_sliding_window is false

  const ModelConfig qwen3 = Parse(Seed("qwen3-0.6b.json"));
  EXPECT_TRUE(qwen3.qk_norm);
  EXPECT_EQ(qwen3.head_dim, 128);  // not hidden_size / heads

  const ModelConfig mistral = Parse(Seed("mistral-7b-v0.3.json"));
  EXPECT_EQ(mistral.sliding_window, 0);  // null
  EXPECT_FALSE(mistral.tie_word_embeddings);

  const ModelConfig gpt2 = Parse(Seed("gpt2.json"));
  EXPECT_EQ(gpt2.family, Family::kGpt2);
  EXPECT_EQ(gpt2.intermediate_size, 4 * 768);
  EXPECT_EQ(gpt2.activation, "gelu_tanh");
  EXPECT_EQ(gpt2.max_positions, 1024);
}

TEST(ModelConfigTest, ErrorsNameTheFileAndTheField) {
  EXPECT_THAT(ParseError("{\"architectures\": [\"BertModel\"]}"),
              HasSubstr("BertModel is not supported"));
  EXPECT_THAT(ParseError("{\"architectures\": [\"BertModel\"]}"),
              HasSubstr("LlamaForCausalLM"));
  EXPECT_THAT(ParseError("{\"architectures\": [\"LlamaForCausalLM\"], "
                         "\"vocab_size\": 8, \"hidden_size\": 64, "
                         "\"intermediate_size\": 8, \"num_hidden_layers\": 1, "
                         "\"num_attention_heads\": 4, "
                         "\"num_key_value_heads\": 3}"),
              HasSubstr("dir/config.json: num_key_value_heads: must divide"));
  EXPECT_THAT(ParseError("{\"architectures\": [\"LlamaForCausalLM\"], "
                         "\"vocab_size\": -8}"),
              HasSubstr("dir/config.json: vocab_size: expected a positive"));
  EXPECT_THAT(ParseError("{\"architectures\": [\"LlamaForCausalLM\"], "
                         "\"vocab_size\": 8, \"hidden_size\": 64, "
                         "\"intermediate_size\": 8, \"num_hidden_layers\": 1, "
                         "\"num_attention_heads\": 4, \"rope_scaling\": "
                         "{\"rope_type\": \"yarn\", \"factor\": 4}}"),
              HasSubstr("rope_scaling.rope_type: 'yarn' is not supported"));
  EXPECT_THAT(ParseError("{\"architectures\": [\"GPT2LMHeadModel\"], "
                         "\"activation_function\": \"relu\"}"),
              HasSubstr("activation_function"));
  EXPECT_THAT(ParseError("{\"architectures\": "), HasSubstr("not valid JSON"));
  EXPECT_THAT(ParseError("[1]"), HasSubstr("not a JSON object"));
}

std::string IndexError(const std::string& text) {
  std::map<std::string, std::vector<std::string>> shards;
  std::string error;
  EXPECT_FALSE(ParseSafetensorsIndex(text, "dir/model.safetensors.index.json",
                                     &shards, &error));
  return error;
}

TEST(SafetensorsIndexTest, GroupsTensorsByShardInIndexOrder) {
  std::map<std::string, std::vector<std::string>> shards;
  std::string error;
  ASSERT_TRUE(ParseSafetensorsIndex(
      "{\"metadata\": {\"total_size\": 64}, \"weight_map\": {"
      "\"z.weight\": \"model-00002-of-00002.safetensors\", "
      "\"a.weight\": \"model-00001-of-00002.safetensors\", "
      "\"b.weight\": \"model-00002-of-00002.safetensors\"}}",
      "index.json", &shards, &error))
      << error;
  ASSERT_EQ(shards.size(), 2u);
  EXPECT_THAT(shards["model-00002-of-00002.safetensors"],
              ::testing::ElementsAre("z.weight", "b.weight"));
  EXPECT_THAT(shards["model-00001-of-00002.safetensors"],
              ::testing::ElementsAre("a.weight"));
}

TEST(SafetensorsIndexTest, WriterOutputReadsBack) {
  const std::string text =
      SafetensorsIndexJson({{"b", "model-00001-of-00002.safetensors"},
                            {"a", "model-00002-of-00002.safetensors"},
                            {"c", "model-00001-of-00002.safetensors"}},
                           96);
  std::map<std::string, std::vector<std::string>> shards;
  std::string error;
  ASSERT_TRUE(ParseSafetensorsIndex(text, "index.json", &shards, &error))
      << error;
  EXPECT_THAT(shards["model-00001-of-00002.safetensors"],
              ::testing::ElementsAre("b", "c"));
  EXPECT_THAT(shards["model-00002-of-00002.safetensors"],
              ::testing::ElementsAre("a"));
  EXPECT_THAT(text, HasSubstr("\"total_size\": 96"));
}

TEST(SafetensorsIndexTest, ErrorsNameTheFileAndTheEntry) {
  EXPECT_THAT(IndexError("{\"weight_map\": {\"w\": \"../x.safetensors\"}}"),
              HasSubstr("dir/model.safetensors.index.json: weight_map.w: "
                        "expected a file name in the folder, not "
                        "'../x.safetensors'"));
  EXPECT_THAT(IndexError("{\"weight_map\": {\"w\": \"..\"}}"),
              HasSubstr("weight_map.w"));
  EXPECT_THAT(IndexError("{\"weight_map\": {\"w\": 3}}"),
              HasSubstr("not number"));
  EXPECT_THAT(IndexError("{\"weight_map\": {}}"),
              HasSubstr("weight_map: expected an object"));
  EXPECT_THAT(IndexError("[1]"), HasSubstr("weight_map: expected an object"));
  EXPECT_THAT(IndexError("{\"weight_map\": "), HasSubstr("not valid JSON"));
}

}  // namespace
}  // namespace halftime::engine::hf
