// A fixture for the tests that run `halftime-train tokenize` as a user
// does (the real binary in a child process): a scratch directory per test,
// the command's exit status and stderr, the ids it wrote, and the ids the
// tokenizer library gives for the same text.
#ifndef HALFTIME_TESTS_TRAIN_TOKENIZE_FIXTURE_H_
#define HALFTIME_TESTS_TRAIN_TOKENIZE_FIXTURE_H_

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

namespace halftime::testing {

namespace fs = std::filesystem;

class TokenizeFixture : public ::testing::Test {
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

}  // namespace halftime::testing

#endif  // HALFTIME_TESTS_TRAIN_TOKENIZE_FIXTURE_H_
