// The tokenizer on small hand-written tokenizer.json files (the fuzzer's
// seeds; every expected id list here is what Hugging Face's library gives
// for the same file and text), invalid UTF-8, and hostile tokenizer.json files:
// each must give an error naming the file and the field, never a crash.

#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace halftime::tokenizer {
namespace {

using Json = nlohmann::json;
using Ids = std::vector<int32_t>;

std::string Seed(const std::string& name) {
  std::ifstream in(std::string(HALFTIME_TOKENIZER_SEEDS) + "/" + name);
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

std::unique_ptr<Tokenizer> ParseSeed(const std::string& name) {
  std::string error;
  auto tokenizer = Tokenizer::Parse(Seed(name), name, &error);
  EXPECT_NE(tokenizer, nullptr) << error;
  return tokenizer;
}

Ids Encode(const Tokenizer& tokenizer, std::string_view text,
           bool special = false) {
  Ids ids;
  std::string error;
  EXPECT_TRUE(tokenizer.Encode(text, special, &ids, &error)) << error;
  return ids;
}

TEST(TokenizerTest, Gpt2StyleMergesByRank) {
  auto tokenizer = ParseSeed("gpt2_style.json");
  ASSERT_NE(tokenizer, nullptr);
  // "abc" | " ab" | "\n" after GPT-2's regex; a+b (rank 0) comes before Ġ+a.
  EXPECT_EQ(Encode(*tokenizer, "abc ab\n"), (Ids{5, 3, 4, 8}));
  // The added token is cut out first; "x" is in no vocabulary and there is
  // no unk_token, so it is dropped (as Hugging Face does).
  EXPECT_EQ(Encode(*tokenizer, "abc<|end|>abx"), (Ids{5, 9, 4}));
  std::string text, error;
  ASSERT_TRUE(tokenizer->Decode({5, 7, 8, 9}, false, &text, &error)) << error;
  EXPECT_EQ(text, "abc ab\n<|end|>");
  ASSERT_TRUE(tokenizer->Decode({5, 9}, true, &text, &error)) << error;
  EXPECT_EQ(text, "abc");
  EXPECT_FALSE(tokenizer->Decode({5, 99}, false, &text, &error));
  EXPECT_NE(error.find("id 99 at position 1"), std::string::npos) << error;
  EXPECT_FALSE(tokenizer->Decode({-1}, false, &text, &error));
}

TEST(TokenizerTest, SplitNfcIgnoreMergesAndTemplate) {
  auto tokenizer = ParseSeed("split_nfc.json");
  ASSERT_NE(tokenizer, nullptr);
  // NFD "e" + U+0301 is composed to U+00E9 (bytes C3 A9 = "Ã©"), which
  // ignore_merges maps straight to its id; "ba" the same way.
  EXPECT_EQ(Encode(*tokenizer, "ba"), (Ids{7}));
  EXPECT_EQ(Encode(*tokenizer, "\xC3\xA9"), (Ids{4}));
  EXPECT_EQ(Encode(*tokenizer, "e\xCC\x81"), (Ids{4}));
  EXPECT_EQ(Encode(*tokenizer, "a's", true), (Ids{10, 0, 8, 9}));
  EXPECT_EQ(Encode(*tokenizer, "<s>ba", false), (Ids{10, 7}));
}

TEST(TokenizerTest, UnkLstripRstripSingleWord) {
  auto tokenizer = ParseSeed("removed_invert.json");
  ASSERT_NE(tokenizer, nullptr);
  // "zz" is two unknown bytes, fused into one "?".
  EXPECT_EQ(Encode(*tokenizer, "xy"), (Ids{3, 4}));
  EXPECT_EQ(Encode(*tokenizer, "zz"), (Ids{3, 0}));
  EXPECT_EQ(Encode(*tokenizer, "xy [m] y"), (Ids{3, 4, 5, 3, 2}));
  // Inside a word [m] is not a single word, so it is not cut out; the
  // Removed/invert split then drops the brackets.
  EXPECT_EQ(Encode(*tokenizer, "x[m]y"), (Ids{3, 1, 3, 0, 3, 2}));
}

TEST(TokenizerTest, InvalidUtf8NamesTheOffset) {
  auto tokenizer = ParseSeed("gpt2_style.json");
  ASSERT_NE(tokenizer, nullptr);
  struct Case {
    std::string text;
    std::string offset;
  };
  for (const Case& c :
       std::vector<Case>{{"ab\xFF", "byte offset 2"},
                         {"abc\xE2\x82", "byte offset 3"},
                         {"\xC0\xAF", "byte offset 0"},
                         {"a\xED\xA0\x80", "byte offset 1"},
                         {"ab\xF4\x90\x80\x80", "byte offset 2"},
                         {std::string("a\0b\x80", 4), "byte offset 3"}}) {
    Ids ids;
    std::string error;
    EXPECT_FALSE(tokenizer->Encode(c.text, false, &ids, &error));
    EXPECT_NE(error.find("invalid UTF-8"), std::string::npos) << error;
    EXPECT_NE(error.find(c.offset), std::string::npos) << error;
  }
}

// The seed with one change applied; "" when `edit` leaves valid JSON out.
std::string Edited(void (*edit)(Json*)) {
  Json json = Json::parse(Seed("gpt2_style.json"));
  edit(&json);
  return json.dump();
}

TEST(TokenizerTest, HostileFilesGiveErrorsNamingTheField) {
  const std::string valid = Seed("gpt2_style.json");
  struct Case {
    std::string json;
    std::string error;
  };
  const std::vector<Case> cases = {
      {"", "invalid JSON"},
      {valid.substr(0, valid.size() / 2), "invalid JSON"},
      {"[]", "expected a JSON object"},
      {"{}", "model: missing"},
      {std::string(100000, '[') + std::string(100000, ']'), "nested deeper"},
      {Edited([](Json* j) { (*j)["model"]["type"] = "WordPiece"; }),
       "model.type WordPiece is not supported (supported: BPE)"},
      {Edited([](Json* j) { (*j)["model"]["type"] = 7; }),
       "model.type: expected a string"},
      {Edited([](Json* j) { (*j)["model"] = "BPE"; }),
       "model: expected an object"},
      {Edited([](Json* j) { (*j)["model"]["vocab"] = Json::array(); }),
       "model.vocab: expected an object"},
      {Edited([](Json* j) { (*j)["model"]["vocab"]["a"] = "0"; }),
       "model.vocab[\"a\"]: expected an integer id"},
      {Edited([](Json* j) { (*j)["model"]["vocab"]["a"] = -1; }),
       "model.vocab[\"a\"]: expected an integer id"},
      {Edited([](Json* j) { (*j)["model"]["vocab"]["a"] = 1e12; }),
       "model.vocab[\"a\"]"},
      {Edited([](Json* j) {
         (*j)["model"]["vocab"]["a"] = 18446744073709551615ull;
       }),
       "model.vocab[\"a\"]"},
      {Edited([](Json* j) { (*j)["model"]["vocab"]["a"] = 1; }),
       "is also given to"},
      {Edited([](Json* j) { (*j)["model"]["merges"][1] = "ab zz"; }),
       "model.merges[1]: token \"zz\" is not in the vocabulary"},
      {Edited([](Json* j) { (*j)["model"]["merges"][0] = "b a"; }),
       "model.merges[0]: the merged token \"ba\" is not in the vocabulary"},
      {Edited([](Json* j) { (*j)["model"]["merges"][0] = "a b c"; }),
       "model.merges[0]: expected \"a b\""},
      {Edited([](Json* j) { (*j)["model"]["merges"][2] = 5; }),
       "model.merges[2]"},
      {Edited([](Json* j) { (*j)["model"]["merges"] = "a b"; }),
       "model.merges: expected an array"},
      {Edited([](Json* j) { (*j)["model"]["byte_fallback"] = true; }),
       "model.byte_fallback"},
      {Edited([](Json* j) { (*j)["model"]["unk_token"] = "<unk>"; }),
       "model.unk_token"},
      {Edited([](Json* j) { (*j)["added_tokens"][0]["id"] = -5; }),
       "added_tokens[0].id"},
      {Edited([](Json* j) { (*j)["added_tokens"][0]["id"] = 1 << 30; }),
       "added_tokens[0].id"},
      {Edited([](Json* j) { (*j)["added_tokens"][0]["content"] = ""; }),
       "added_tokens[0].content"},
      {Edited([](Json* j) { (*j)["added_tokens"][0]["lstrip"] = "yes"; }),
       "added_tokens[0]"},
      {Edited([](Json* j) { (*j)["pre_tokenizer"] = nullptr; }),
       "pre_tokenizer: null is not supported"},
      {Edited([](Json* j) { (*j)["pre_tokenizer"]["type"] = "Whitespace"; }),
       "pre_tokenizer.type: Whitespace is not supported"},
      {Edited([](Json* j) {
         (*j)["pre_tokenizer"] = {{"type", "Split"},
                                  {"pattern", {{"Regex", "(unclosed"}}},
                                  {"behavior", "Isolated"}};
       }),
       "pre_tokenizer.pattern"},
      {Edited([](Json* j) {
         (*j)["pre_tokenizer"] = {{"type", "Split"},
                                  {"pattern", {{"Regex", "a"}}},
                                  {"behavior", "Sideways"}};
       }),
       "pre_tokenizer.behavior"},
      {Edited([](Json* j) {
         (*j)["pre_tokenizer"] = {{"type", "Split"},
                                  {"pattern", {{"Regex", "a"}}},
                                  {"behavior", "Isolated"}};
       }),
       "no ByteLevel step"},
      {Edited([](Json* j) {
         (*j)["normalizer"] = {{"type", "NFKC"}};
       }),
       "normalizer.type: NFKC is not supported"},
      {Edited([](Json* j) {
         (*j)["decoder"] = {{"type", "WordPiece"}};
       }),
       "decoder.type: WordPiece is not supported"},
      {Edited([](Json* j) {
         (*j)["post_processor"] = {{"type", "Bert"}};
       }),
       "post_processor.type: Bert is not supported"},
      {Edited([](Json* j) {
         (*j)["post_processor"] = {{"type", "TemplateProcessing"},
                                   {"single", Json::array()},
                                   {"special_tokens", Json::object()}};
       }),
       "post_processor.single"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    std::string error;
    auto tokenizer = Tokenizer::Parse(cases[i].json, "bad.json", &error);
    EXPECT_EQ(tokenizer, nullptr) << "case " << i;
    EXPECT_EQ(error.rfind("bad.json: ", 0), 0u)
        << "case " << i << ": " << error;
    EXPECT_NE(error.find(cases[i].error), std::string::npos)
        << "case " << i << ": " << error;
  }
}

TEST(TokenizerTest, LoadNamesAMissingFile) {
  std::string error;
  EXPECT_EQ(Tokenizer::Load("/nonexistent/tokenizer.json", &error), nullptr);
  EXPECT_EQ(error, "/nonexistent/tokenizer.json: cannot open");
}

}  // namespace
}  // namespace halftime::tokenizer
