// The tokenizer on small hand-written tokenizer.json files and small
// SentencePiece tokenizer.model files (the fuzzer's seeds; every expected id
// list and text here is what Hugging Face's library gives for the same
// tokenizer.json, and every id list what libsentencepiece's spm_encode gives
// for the same tokenizer.model, whose decoded texts follow the decoder
// tokenizer.h describes), invalid UTF-8, and hostile files of both kinds:
// each must give an error naming the file and the field, never a crash.
//
// The .model seeds were trained with Debian's spm_train on the ASCII-only
// lines of `node tests/tokenizer/make_corpus.mjs c.json 30000`:
//   tiny_bpe.model: --model_type=bpe --vocab_size=400 --byte_fallback=true
//     --normalization_rule_name=identity --remove_extra_whitespaces=false
//     --user_defined_symbols=<tool> --character_coverage=0.98
//   tiny_unigram.model: --model_type=unigram --vocab_size=150
//     --normalization_rule_tsv=rules.tsv (FF21 -> 41, FB01 -> 66 69,
//     3000 -> 20) --user_defined_symbols=<tool> --control_symbols=<ctl>
//     --character_coverage=0.98

#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/tokenizer/model_proto_builder.h"

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

// A seed with one change applied.
std::string EditedSeed(const std::string& name, void (*edit)(Json*)) {
  Json json = Json::parse(Seed(name));
  edit(&json);
  return json.dump();
}

std::string Edited(void (*edit)(Json*)) {
  return EditedSeed("gpt2_style.json", edit);
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
       "model.byte_fallback: true is not supported with a ByteLevel "
       "pre-tokenizer"},
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
      {Edited([](Json* j) {
         (*j)["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "__"}};
       }),
       "pre_tokenizer.replacement: expected a one-character string"},
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
         (*j)["pre_tokenizer"] = {
             {"type", "Sequence"},
             {"pretokenizers",
              {{{"type", "ByteLevel"}},
               {{"type", "Metaspace"}, {"replacement", "_"}}}}};
       }),
       "pre_tokenizer.pretokenizers[1]: a step after ByteLevel is not "
       "supported"},
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

// Llama 2 / Mistral's layout: Prepend + Replace normalizer, no
// pre-tokenizer, BPE with byte_fallback and fuse_unk, <s> added by the
// template, and the Replace/ByteFallback/Fuse/Strip decoder.
TEST(TokenizerTest, SentencePieceKindByteFallback) {
  auto tokenizer = ParseSeed("sentencepiece_bpe.json");
  ASSERT_NE(tokenizer, nullptr);
  // "▁ab▁c": ▁+a (rank 0), then ▁a+b (rank 2); "▁" "c" stay apart.
  EXPECT_EQ(Encode(*tokenizer, "ab c"), (Ids{13, 7, 10}));
  EXPECT_EQ(Encode(*tokenizer, "ab c", true), (Ids{1, 13, 7, 10}));
  // é has both of its bytes' tokens; \n has <0x0A>; x, € (E2 82 AC: no
  // <0x82>) and x have none, so they are one fused <unk> at the end.
  EXPECT_EQ(Encode(*tokenizer, "\xC3\xA9\nx\xE2\x82\xACx"),
            (Ids{7, 4, 5, 3, 0}));
  // An unknown character's <unk> waits for the next character with a
  // token, so byte tokens after it come first (as in the library).
  EXPECT_EQ(Encode(*tokenizer, "x\xC3\xA9"), (Ids{7, 4, 5, 0}));
  // Prepend applies to each piece between added tokens, and not to an
  // empty text.
  EXPECT_EQ(Encode(*tokenizer, "<s>ab"), (Ids{1, 13}));
  EXPECT_EQ(Encode(*tokenizer, ""), (Ids{}));
  EXPECT_EQ(Encode(*tokenizer, "", true), (Ids{1}));
  // Whitespace runs: "▁ab▁▁" and "▁▁▁ab".
  EXPECT_EQ(Encode(*tokenizer, "ab  "), (Ids{13, 14}));
  EXPECT_EQ(Encode(*tokenizer, "  ab"), (Ids{14, 13}));

  std::string text, error;
  ASSERT_TRUE(tokenizer->Decode({1, 13, 7, 10}, false, &text, &error));
  EXPECT_EQ(text, "<s> ab c");
  ASSERT_TRUE(tokenizer->Decode({1, 13, 7, 10}, true, &text, &error));
  EXPECT_EQ(text, "ab c");
  ASSERT_TRUE(tokenizer->Decode({7, 4, 5, 3}, false, &text, &error));
  EXPECT_EQ(text, "\xC3\xA9\n");
  // Byte tokens that are not UTF-8: one U+FFFD per byte, not per sequence.
  ASSERT_TRUE(tokenizer->Decode({4}, false, &text, &error));
  EXPECT_EQ(text, "\xEF\xBF\xBD");
  ASSERT_TRUE(tokenizer->Decode({4, 4, 5}, false, &text, &error));
  EXPECT_EQ(text, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  // Strip takes one leading space only.
  ASSERT_TRUE(tokenizer->Decode({14, 11, 0}, false, &text, &error));
  EXPECT_EQ(text, "  a<unk>");
  ASSERT_TRUE(tokenizer->Decode({14, 11, 0}, true, &text, &error));
  EXPECT_EQ(text, "  a");
}

// With a token that holds "b▁", the text is not cut in front of a "▁"
// after "b" (metaspace_cut.h): the merge b+▁ (rank 0) must see both.
TEST(TokenizerTest, NoCutWhereATokenCrossesTheMetaspace) {
  std::string error;
  auto tokenizer = Tokenizer::Parse(
      EditedSeed("sentencepiece_bpe.json",
                 [](Json* j) {
                   (*j)["model"]["vocab"]["b\xE2\x96\x81"] = 15;
                   (*j)["model"]["merges"].insert(
                       (*j)["model"]["merges"].begin(), "b \xE2\x96\x81");
                 }),
      "cross.json", &error);
  ASSERT_NE(tokenizer, nullptr) << error;
  EXPECT_EQ(Encode(*tokenizer, "ab c"), (Ids{11, 15, 10}));
  EXPECT_EQ(Encode(*tokenizer, "ab  ab"), (Ids{11, 15, 13}));
  // After "c" the cut stays.
  EXPECT_EQ(Encode(*tokenizer, "c ab"), (Ids{7, 10, 13}));
}

// Tokens that only look like byte tokens: the ByteFallback decoder reads
// what Rust's u8::from_str_radix reads ("<0x+A>", "<0x0a>"), and leaves the
// rest as text; encoding never produces them.
TEST(TokenizerTest, ByteFallbackDecoderReadsWhatTheLibraryReads) {
  std::string error;
  auto tokenizer =
      Tokenizer::Parse(EditedSeed("sentencepiece_bpe.json",
                                  [](Json* j) {
                                    (*j)["model"]["vocab"]["<0xZZ>"] = 15;
                                    (*j)["model"]["vocab"]["<0x+A>"] = 16;
                                    (*j)["model"]["vocab"]["<0x0a>"] = 17;
                                  }),
                       "odd.json", &error);
  ASSERT_NE(tokenizer, nullptr) << error;
  std::string text;
  for (const auto& [ids, want] : std::vector<std::pair<Ids, std::string>>{
           {{15}, "<0xZZ>"},
           {{16}, "\n"},
           {{17}, "\n"},
           {{7, 16, 4, 5, 15}, "\n\xC3\xA9<0xZZ>"}}) {
    ASSERT_TRUE(tokenizer->Decode(ids, false, &text, &error)) << error;
    EXPECT_EQ(text, want);
  }
  EXPECT_EQ(Encode(*tokenizer, "<0xZZ>"), (Ids{7, 0}));
}

// Metaspace with prepend_scheme "first": the "▁" goes only in front of a
// piece that starts the text, so not after an added token; split makes
// each "▁" start a pre-token. fuse_unk false: one <unk> per character.
TEST(TokenizerTest, MetaspaceFirstScheme) {
  auto tokenizer = ParseSeed("metaspace.json");
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(Encode(*tokenizer, "hi hi"), (Ids{6, 6}));
  EXPECT_EQ(Encode(*tokenizer, "<s>hi hi"), (Ids{1, 7, 6}));
  EXPECT_EQ(Encode(*tokenizer, "xx"), (Ids{2, 0, 0}));
  EXPECT_EQ(Encode(*tokenizer, " hi"), (Ids{6}));
  EXPECT_EQ(Encode(*tokenizer, "hi  hi"), (Ids{6, 2, 6}));
  // The Metaspace decoder drops the first token's "▁".
  std::string text, error;
  ASSERT_TRUE(tokenizer->Decode({6, 6}, false, &text, &error));
  EXPECT_EQ(text, "hi hi");
  ASSERT_TRUE(tokenizer->Decode({1, 6}, false, &text, &error));
  EXPECT_EQ(text, "<s> hi");
  ASSERT_TRUE(tokenizer->Decode({1, 6}, true, &text, &error));
  EXPECT_EQ(text, "hi");
  ASSERT_TRUE(tokenizer->Decode({2, 2, 7}, false, &text, &error));
  EXPECT_EQ(text, " hi");
}

TEST(TokenizerTest, HostileSentencePieceKindFiles) {
  struct Case {
    std::string json;
    std::string error;
  };
  const auto edited = [](void (*edit)(Json*)) {
    return EditedSeed("sentencepiece_bpe.json", edit);
  };
  const std::vector<Case> cases = {
      {edited([](Json* j) {
         (*j)["normalizer"]["normalizers"][0].erase("prepend");
       }),
       "normalizer.normalizers[0].prepend: expected a string"},
      {edited([](Json* j) {
         (*j)["normalizer"]["normalizers"][1]["pattern"] = {{"String", ""}};
       }),
       "normalizer.normalizers[1].pattern: an empty String pattern is not "
       "supported"},
      {edited([](Json* j) {
         (*j)["normalizer"]["normalizers"][1]["pattern"] = {{"Regex", "("}};
       }),
       "normalizer.normalizers[1].pattern"},
      {edited([](Json* j) {
         (*j)["normalizer"]["normalizers"][1]["pattern"] = " ";
       }),
       "normalizer.normalizers[1].pattern: expected {\"String\": string}"},
      {edited([](Json* j) {
         (*j)["normalizer"]["normalizers"][1]["content"] = 5;
       }),
       "normalizer.normalizers[1].content: expected a string"},
      {edited([](Json* j) {
         (*j)["normalizer"]["normalizers"][0] = {{"type", "NFKC"}};
       }),
       "normalizer.normalizers[0].type: NFKC is not supported"},
      {edited([](Json* j) {
         (*j)["pre_tokenizer"] = {{"type", "Metaspace"},
                                  {"replacement", "_"},
                                  {"prepend_scheme", "sometimes"}};
       }),
       "pre_tokenizer.prepend_scheme: expected \"always\""},
      {edited([](Json* j) {
         // The library refuses this pairing too.
         (*j)["pre_tokenizer"] = {{"type", "Metaspace"},
                                  {"replacement", "_"},
                                  {"add_prefix_space", false}};
       }),
       "pre_tokenizer.add_prefix_space: false does not match"},
      {edited([](Json* j) {
         (*j)["pre_tokenizer"] = {
             {"type", "Metaspace"}, {"replacement", "_"}, {"split", "yes"}};
       }),
       "pre_tokenizer.split: expected a boolean"},
      {edited(
           [](Json* j) { (*j)["decoder"]["decoders"][3]["content"] = "ab"; }),
       "decoder.decoders[3].content: expected a one-character string"},
      {edited([](Json* j) { (*j)["decoder"]["decoders"][3]["start"] = -1; }),
       "decoder.decoders[3].start: expected a non-negative integer"},
      {edited([](Json* j) {
         (*j)["decoder"]["decoders"][0] = {{"type", "CTC"}};
       }),
       "decoder.decoders[0].type: CTC is not supported"},
      {edited([](Json* j) { (*j)["decoder"]["decoders"][0].erase("pattern"); }),
       "decoder.decoders[0].pattern"},
      {edited([](Json* j) {
         (*j)["decoder"] = {{"type", "Metaspace"}, {"replacement", ""}};
       }),
       "decoder.replacement: expected a one-character string"},
      {edited([](Json* j) { (*j)["model"]["type"] = "Unigram"; }),
       "model.type Unigram is not supported (supported: BPE; a Unigram "
       "model's SentencePiece tokenizer.model loads instead)"},
      {edited([](Json* j) { (*j)["model"]["byte_fallback"] = "yes"; }),
       "model.byte_fallback: expected a boolean"},
      {edited([](Json* j) {
         // Replace "x" by "" and a normalized added token "x": nothing is
         // left to match.
         (*j)["normalizer"] = {{"type", "Replace"},
                               {"pattern", {{"String", "x"}}},
                               {"content", ""}};
         (*j)["added_tokens"].push_back({{"id", 15},
                                         {"content", "x"},
                                         {"normalized", true},
                                         {"special", false}});
       }),
       "added_tokens[3].content: empty once normalized"},
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

std::string SeedPath(const std::string& name) {
  return std::string(HALFTIME_TOKENIZER_SEEDS) + "/" + name;
}

// A BPE tokenizer.model with byte fallback, no normalization rules, kept
// whitespace and a user-defined symbol, loaded by path.
TEST(TokenizerTest, SentencePieceBpeModel) {
  std::string error;
  auto tokenizer = Tokenizer::Load(SeedPath("tiny_bpe.model"), &error);
  ASSERT_NE(tokenizer, nullptr) << error;
  EXPECT_EQ(tokenizer->id_limit(), 400);
  EXPECT_EQ(tokenizer->IdToToken(3), "<tool>");
  EXPECT_EQ(tokenizer->IdToToken(309), "\xE2\x96\x81H");
  EXPECT_EQ(Encode(*tokenizer, "Hello world"),
            (Ids{309, 328, 273, 330, 267, 265, 335, 341}));
  // BOS, as the model names it (<s>), when asked.
  EXPECT_EQ(Encode(*tokenizer, "Hello world", true),
            (Ids{1, 309, 328, 273, 330, 267, 265, 335, 341}));
  EXPECT_EQ(
      Encode(*tokenizer, "  two  spaces "),
      (Ids{327, 327, 261, 344, 330, 327, 269, 349, 333, 339, 328, 337, 327}));
  EXPECT_EQ(Encode(*tokenizer, "<tool>x<tool>"), (Ids{327, 3, 364, 3}));
  // 中 is not a piece: its three bytes.
  EXPECT_EQ(Encode(*tokenizer, "\xE4\xB8\xAD"), (Ids{327, 232, 188, 177}));
  EXPECT_EQ(Encode(*tokenizer, ""), (Ids{}));

  std::string text;
  ASSERT_TRUE(tokenizer->Decode({1, 309, 328, 273, 330, 267, 265, 335, 341},
                                false, &text, &error));
  EXPECT_EQ(text, "<s> Hello world");
  ASSERT_TRUE(tokenizer->Decode({1, 309, 328, 273, 330, 267, 265, 335, 341},
                                true, &text, &error));
  EXPECT_EQ(text, "Hello world");
  ASSERT_TRUE(tokenizer->Decode({327, 232, 188, 177}, true, &text, &error));
  EXPECT_EQ(text, "\xE4\xB8\xAD");
  EXPECT_FALSE(tokenizer->Decode({400}, false, &text, &error));
  EXPECT_NE(error.find("id 400 at position 0"), std::string::npos) << error;
}

// A unigram tokenizer.model with compiled normalization rules (FF21 -> A,
// FB01 -> fi, U+3000 -> space), extra whitespace removed, a user-defined
// and a control symbol, no byte fallback.
TEST(TokenizerTest, SentencePieceUnigramModel) {
  std::string error;
  auto tokenizer = Tokenizer::Load(SeedPath("tiny_unigram.model"), &error);
  ASSERT_NE(tokenizer, nullptr) << error;
  EXPECT_EQ(Encode(*tokenizer, "Hello world"),
            (Ids{5, 41, 144, 5, 40, 8, 10, 15, 16}));
  EXPECT_EQ(Encode(*tokenizer,
                   "\xEF\xBC\xA1"
                   "BC \xEF\xAC\x81ne\xE3\x80\x80"
                   "end"),
            (Ids{5, 56, 100, 82, 5, 28, 17, 9, 6, 5, 44, 16}));
  // The user-defined symbol is kept whole; a control symbol typed into the
  // text is only text.
  EXPECT_EQ(Encode(*tokenizer, "<tool>x<ctl>"),
            (Ids{5, 4, 34, 38, 45, 7, 15, 25}));
  // Two unknown characters in a row are one <unk>.
  EXPECT_EQ(Encode(*tokenizer, "\xE4\xB8\xAD\xE6\x96\x87 ok"),
            (Ids{5, 0, 5, 8, 71}));
  EXPECT_EQ(Encode(*tokenizer, "  a  "), (Ids{5, 11}));
  EXPECT_EQ(Encode(*tokenizer, "   "), (Ids{}));
  std::string text;
  ASSERT_TRUE(tokenizer->Decode({5, 0, 5, 8, 71}, false, &text, &error));
  EXPECT_EQ(text, "<unk> ok");
  ASSERT_TRUE(tokenizer->Decode({5, 0, 5, 8, 71}, true, &text, &error));
  EXPECT_EQ(text, " ok");
}

namespace mp = model_proto;

// mp::OneRuleBpeModel's ids, worked out by hand (and held to
// libsentencepiece in sentencepiece_parity_test).
TEST(TokenizerTest, HandMadeSentencePieceModel) {
  std::string error;
  auto tokenizer = Tokenizer::Parse(mp::OneRuleBpeModel(mp::OneRuleUnits('A')),
                                    "hand.model", &error);
  ASSERT_NE(tokenizer, nullptr) << error;
  // "▁ab▁A" -> "▁ab▁a": ▁a (score -1) at the left first, then ▁a at the
  // right; ▁a+b is no piece. B has no rule and no piece: <unk>.
  EXPECT_EQ(Encode(*tokenizer, "ab A"), (Ids{6, 5, 6}));
  EXPECT_EQ(Encode(*tokenizer, "B"), (Ids{3, 0}));
  // A rule whose leaf lies past the array, or whose replacement lies past
  // the strings, is no rule (libsentencepiece would read past its buffer).
  for (const auto& units : {mp::OneRuleUnits('A', /*leaf_offset=*/1024),
                            mp::OneRuleUnits('A', 2, /*value=*/1000)}) {
    auto broken =
        Tokenizer::Parse(mp::OneRuleBpeModel(units), "hand.model", &error);
    ASSERT_NE(broken, nullptr) << error;
    EXPECT_EQ(Encode(*broken, "A"), (Ids{3, 0}));
  }
}

TEST(TokenizerTest, HostileSentencePieceModels) {
  const std::string unk = mp::Piece("<unk>", 0, mp::kUnknown);
  const std::string a = mp::Piece("a", -1);
  const std::string bpe = mp::TrainerSpec(mp::kBpe);
  const std::string identity = mp::NormalizerSpec(true, false);
  const std::string pieces = mp::BytesField(1, unk) + mp::BytesField(1, a);
  std::string nan_piece =
      mp::BytesField(1, "a") +
      mp::FloatField(2, std::numeric_limits<float>::quiet_NaN());
  std::vector<std::string> bytes_but_one = mp::BytePieces();
  bytes_but_one.pop_back();
  bytes_but_one.insert(bytes_but_one.begin(), unk);
  struct Case {
    std::string model;
    std::string error;
  };
  const std::vector<Case> cases = {
      {mp::Model({a}, bpe, identity), "pieces: no unknown piece"},
      {mp::Model({unk, a, a}, bpe, identity),
       "pieces[2].piece: a is already defined"},
      {mp::Model({unk, mp::Piece("<unk2>", 0, mp::kUnknown)}, bpe, identity),
       "pieces[1]: a second unknown piece"},
      {mp::Model({unk, mp::Piece("<0x41>", 0, mp::kByte)}, bpe, identity),
       "pieces[1]: byte piece <0x41> but trainer_spec.byte_fallback is "
       "false"},
      {mp::Model({unk, mp::Piece("<0x4g>", 0, mp::kByte)},
                 mp::TrainerSpec(mp::kBpe, true), identity),
       "pieces[1]: byte piece <0x4g> is not <0xNN>"},
      {mp::Model(bytes_but_one, mp::TrainerSpec(mp::kBpe, true), identity),
       "pieces: no byte piece <0xFF> although trainer_spec.byte_fallback"},
      {mp::Model({unk, a}, mp::VarintField(3, 9), identity),
       "trainer_spec.model_type: 9 is not a model type"},
      {mp::Model({unk, mp::Piece("a", 0, static_cast<mp::PieceType>(9))}, bpe,
                 identity),
       "pieces[1].type: 9 is not a piece type"},
      {mp::Model({unk, nan_piece}, bpe, identity), "pieces[1].score: NaN"},
      {mp::Model({unk, mp::Piece("", 0)}, bpe, identity),
       "pieces[1].piece: empty"},
      {mp::Model({unk, mp::Piece("\xFF", 0)}, bpe, identity),
       "pieces[1].piece: invalid UTF-8"},
      {mp::Model({unk, mp::Piece("<s>", 0, mp::kControl)},
                 mp::TrainerSpec(mp::kUnigram), identity),
       "pieces: a unigram model with no normal pieces"},
      {mp::Model({unk, a}, mp::BytesField(3, "x"), identity),
       "trainer_spec.model_type: expected a varint field, got a "
       "length-delimited one"},
      {mp::Model({unk, a}, bpe,
                 mp::BytesField(2, std::string("\x10\x00\x00\x00", 4))),
       "normalizer_spec.precompiled_charsmap: broken"},
      {pieces + mp::BytesField(3, identity), "no trainer_spec"},
      {pieces + mp::BytesField(2, bpe), "no normalizer_spec"},
      // A tag of eleven varint bytes, lengths of them or past the end, a
      // group.
      {pieces + std::string(11, '\xFF'),
       "ModelProto is broken at byte " + std::to_string(pieces.size())},
      {"\n" + std::string(11, '\xFF'), "pieces[0] is broken at byte 1"},
      {"\n\x7F" + unk, "pieces[0] is broken at byte 1"},
      {pieces + mp::Varint((9 << 3) | 3), "groups are not supported"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    std::string error;
    auto tokenizer = Tokenizer::Parse(cases[i].model, "bad.model", &error);
    EXPECT_EQ(tokenizer, nullptr) << "case " << i;
    EXPECT_EQ(error.rfind("bad.model: SentencePiece model: ", 0), 0u)
        << "case " << i << ": " << error;
    EXPECT_NE(error.find(cases[i].error), std::string::npos)
        << "case " << i << ": " << error;
  }
}

// Every way of cutting a real model short gives an error naming the file:
// both specs come after the pieces, so even a cut between pieces is seen.
TEST(TokenizerTest, TruncatedModelsAreRefused) {
  const std::string model = Seed("tiny_bpe.model");
  ASSERT_GT(model.size(), 1000u);
  for (size_t size = 0; size < model.size(); ++size) {
    std::string error;
    auto tokenizer = Tokenizer::Parse(std::string_view(model).substr(0, size),
                                      "cut.model", &error);
    ASSERT_EQ(tokenizer, nullptr) << "cut at " << size;
    ASSERT_EQ(error.rfind("cut.model: ", 0), 0u) << size << ": " << error;
  }
}

// Corrupted models (bytes overwritten at seeded positions) load or are
// refused, and whatever loads encodes and decodes; this runs under the
// sanitizers in the Clang build.
TEST(TokenizerTest, CorruptedModelsNeverCrash) {
  for (const char* seed : {"tiny_bpe.model", "tiny_unigram.model"}) {
    const std::string model = Seed(seed);
    uint64_t state = 0x9E3779B97F4A7C15ull;
    const auto next = [&] {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      return state;
    };
    size_t loaded = 0;
    for (int round = 0; round < 500; ++round) {
      std::string corrupt = model;
      for (int k = 0; k < 1 + round % 4; ++k) {
        corrupt[next() % corrupt.size()] = static_cast<char>(next());
      }
      std::string error;
      auto tokenizer = Tokenizer::Parse(corrupt, "corrupt.model", &error);
      if (tokenizer == nullptr) {
        ASSERT_EQ(error.rfind("corrupt.model: ", 0), 0u) << error;
        continue;
      }
      ++loaded;
      Ids ids;
      ASSERT_TRUE(tokenizer->Encode("Hello <tool> w\xC3\xB6rld \xE4\xB8\xAD  x",
                                    true, &ids, &error))
          << error;
      std::string text;
      ASSERT_TRUE(tokenizer->Decode(ids, false, &text, &error)) << error;
    }
    // Most single-byte changes land in a piece's text or score, which
    // leaves a model that loads: both outcomes are exercised.
    EXPECT_GT(loaded, 0u) << seed;
    EXPECT_LT(loaded, 500u) << seed;
  }
}

// Load reads the content, not the name: a tokenizer.model path holding
// JSON is read as JSON, and a tokenizer.json path holding a model as one.
TEST(TokenizerTest, LoadTellsTheKindsApartByContent) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() /
      ("halftime-tokenizer-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string json_as_model = (dir / "tokenizer.model").string();
  const std::string model_as_json = (dir / "tokenizer.json").string();
  std::ofstream(json_as_model, std::ios::binary) << Seed("gpt2_style.json");
  std::ofstream(model_as_json, std::ios::binary) << Seed("tiny_bpe.model");
  std::string error;
  auto json = Tokenizer::Load(json_as_model, &error);
  ASSERT_NE(json, nullptr) << error;
  EXPECT_EQ(Encode(*json, "abc ab\n"), (Ids{5, 3, 4, 8}));
  auto model = Tokenizer::Load(model_as_json, &error);
  ASSERT_NE(model, nullptr) << error;
  EXPECT_EQ(Encode(*model, "<tool>x<tool>"), (Ids{327, 3, 364, 3}));
  // Neither: a binary file that is not a model names both kinds.
  std::ofstream(model_as_json, std::ios::binary) << std::string("\n\x05hi", 4);
  EXPECT_EQ(Tokenizer::Load(model_as_json, &error), nullptr);
  EXPECT_NE(error.find(model_as_json + ": SentencePiece model: not a "
                                       "SentencePiece model, or cut short"),
            std::string::npos)
      << error;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace halftime::tokenizer
