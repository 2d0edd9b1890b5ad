// PEFT's adapter_config.json as PEFT writes it (the seed corpus of
// fuzz_peft_config), without libtorch: what loads, what is refused with
// the file and field named, and our own writing read back.

#include "engine/hf/peft_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace halftime::engine::hf {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Seed(const std::string& name) {
  std::ifstream in(std::string(HALFTIME_PEFT_CONFIG_CORPUS) + "/" + name);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(PeftConfigTest, ReadsWhatPeftWrites) {
  PeftConfig c;
  std::string error;
  ASSERT_TRUE(ParsePeftConfig(Seed("peft-llama-qv.json"), "a.json", &c, &error))
      << error;
  EXPECT_EQ(c.rank, 16);
  EXPECT_EQ(c.alpha, 32);
  EXPECT_EQ(c.dropout, 0.05);
  EXPECT_THAT(c.target_modules, ElementsAre("v_proj", "q_proj"));
  EXPECT_TRUE(c.modules_to_save.empty());
  EXPECT_EQ(c.base_model_name_or_path, "meta-llama/Llama-3.2-1B-Instruct");

  ASSERT_TRUE(
      ParsePeftConfig(Seed("peft-gpt2-all-linear.json"), "a.json", &c, &error))
      << error;
  EXPECT_THAT(c.target_modules, ElementsAre("all-linear"));
  EXPECT_TRUE(c.rslora);
  EXPECT_TRUE(c.fan_in_fan_out);
  EXPECT_EQ(c.alpha, 16.5);
  EXPECT_THAT(c.modules_to_save, ElementsAre("lm_head"));

  // Only peft_type is required; the rest takes PEFT's defaults.
  ASSERT_TRUE(ParsePeftConfig(Seed("minimal.json"), "a.json", &c, &error));
  EXPECT_EQ(c.rank, 8);
  EXPECT_EQ(c.alpha, 8);
  EXPECT_TRUE(c.target_modules.empty());
}

TEST(PeftConfigTest, RefusalsNameTheFileAndField) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {Seed("not-lora.json"), "a.json: peft_type must be \"LORA\""},
      {"[1, 2]", "a.json: not a JSON object"},
      {"{\"peft_type\": \"LORA\", \"r\": 0}", "a.json: r must be"},
      {"{\"peft_type\": \"LORA\", \"r\": 2.5}", "a.json: r must be"},
      {"{\"peft_type\": \"LORA\", \"lora_alpha\": -1}", "lora_alpha"},
      {"{\"peft_type\": \"LORA\", \"lora_dropout\": 1}", "lora_dropout"},
      {"{\"peft_type\": \"LORA\", \"use_dora\": true}", "DoRA"},
      {"{\"peft_type\": \"LORA\", \"target_modules\": \".*proj\"}",
       "regular expression"},
      {"{\"peft_type\": \"LORA\", \"target_modules\": [1]}", "target_modules"},
      {"{\"peft_type\": \"LORA\", \"use_rslora\": \"yes\"}", "use_rslora"},
  };
  for (const auto& [text, needle] : cases) {
    PeftConfig c;
    std::string error;
    EXPECT_FALSE(ParsePeftConfig(text, "a.json", &c, &error)) << text;
    EXPECT_THAT(error, HasSubstr(needle)) << text;
  }
}

TEST(PeftConfigTest, WhatWeWriteReadsBackTheSame) {
  PeftConfig c;
  c.rank = 4;
  c.alpha = 12.5;
  c.dropout = 0.1;
  c.target_modules = {"c_attn", "mlp.c_proj"};
  c.modules_to_save = {"lm_head"};
  c.rslora = true;
  c.fan_in_fan_out = true;
  c.base_model_name_or_path = "models/gpt2";
  const std::string text = FormatPeftConfig(c);
  EXPECT_THAT(text, HasSubstr("\"peft_type\": \"LORA\""));
  EXPECT_THAT(text, HasSubstr("\"task_type\": \"CAUSAL_LM\""));
  PeftConfig back;
  std::string error;
  ASSERT_TRUE(ParsePeftConfig(text, "a.json", &back, &error)) << error;
  EXPECT_EQ(back.rank, 4);
  EXPECT_EQ(back.alpha, 12.5);
  EXPECT_EQ(back.dropout, 0.1);
  EXPECT_EQ(back.target_modules, c.target_modules);
  EXPECT_EQ(back.modules_to_save, c.modules_to_save);
  EXPECT_TRUE(back.rslora);
  EXPECT_TRUE(back.fan_in_fan_out);
  EXPECT_EQ(back.base_model_name_or_path, "models/gpt2");
}

}  // namespace
}  // namespace halftime::engine::hf
