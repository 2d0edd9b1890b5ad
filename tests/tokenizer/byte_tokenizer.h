// A small byte-level BPE tokenizer.json for tests and fuzzers that must run
// without the npm tokenizer files: every byte is a token (so any UTF-8 text
// encodes), a few merges make multi-byte tokens whose boundaries can
// straddle a segment boundary, and the chat templates' special tokens are
// added tokens.
//
// Thread safety: a pure function.

#ifndef HALFTIME_TESTS_TOKENIZER_BYTE_TOKENIZER_H_
#define HALFTIME_TESTS_TOKENIZER_BYTE_TOKENIZER_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/text.h"

namespace halftime::tokenizer::testdata {

// Ids: byte b is id b (its GPT-2 ByteLevel character); then one id per
// merge of ByteTokenizerMerges() in order (the merged token); then the
// added tokens of ByteTokenizerAddedTokens() in order.
inline const std::vector<std::pair<std::string, std::string>>&
ByteTokenizerMerges() {
  // "Ġ" is the ByteLevel character of " ", "Ċ" that of "\n".
  static const auto* merges =
      new std::vector<std::pair<std::string, std::string>>{
          {"H", "e"},  {"He", "l"},  {"Hel", "l"},  {"Hell", "o"},
          {"Ċ", "Ċ"},  {"Ġ", "Ġ"},   {"Ġ", "b"},    {"Ġ", "w"},
          {"Ġw", "o"}, {"Ġwo", "r"}, {"Ġwor", "l"}, {"Ġworl", "d"},
      };
  return *merges;
}

inline const std::vector<std::string>& ByteTokenizerAddedTokens() {
  static const auto* tokens = new std::vector<std::string>{
      "<|begin_of_text|>",
      "<|start_header_id|>",
      "<|end_header_id|>",
      "<|eot_id|>",
      "<|im_start|>",
      "<|im_end|>",
      "<s>",
      "</s>",
  };
  return *tokens;
}

// The id of added token `content`; -1 when it is not one.
inline int32_t ByteTokenizerAddedId(const std::string& content) {
  const auto& added = ByteTokenizerAddedTokens();
  for (size_t i = 0; i < added.size(); ++i) {
    if (added[i] == content) {
      return static_cast<int32_t>(256 + ByteTokenizerMerges().size() + i);
    }
  }
  return -1;
}

inline std::string ByteTokenizerJson() {
  using Json = nlohmann::json;
  Json vocab = Json::object();
  for (int b = 0; b < 256; ++b) {
    std::string token;
    AppendUtf8(ByteToChar(static_cast<uint8_t>(b)), &token);
    vocab[token] = b;
  }
  Json merges = Json::array();
  int32_t next = 256;
  for (const auto& [left, right] : ByteTokenizerMerges()) {
    merges.push_back(left + " " + right);
    vocab[left + right] = next++;
  }
  Json added = Json::array();
  for (const std::string& content : ByteTokenizerAddedTokens()) {
    added.push_back({{"id", next++},
                     {"content", content},
                     {"special", true},
                     {"normalized", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"single_word", false}});
  }
  const Json byte_level = {{"type", "ByteLevel"},
                           {"add_prefix_space", false},
                           {"trim_offsets", false},
                           {"use_regex", true}};
  Json root = {
      {"version", "1.0"},
      {"normalizer", nullptr},
      {"pre_tokenizer", byte_level},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
      {"added_tokens", added},
      {"post_processor", nullptr},
      {"decoder", byte_level}};
  return root.dump();
}

}  // namespace halftime::tokenizer::testdata

#endif  // HALFTIME_TESTS_TOKENIZER_BYTE_TOKENIZER_H_
