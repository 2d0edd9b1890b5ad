// Where text in SentencePiece's form ("▁" for each space) can be cut into
// parts that BPE encodes apart, for the caches of the character-level BPE
// of tokenizer.json (Llama 2, Mistral, Gemma) and of BPE tokenizer.model
// files. Those hand whole texts to the model, not words; cut up, the parts
// repeat and their ids can be cached.
//
// A cut in front of a "▁" whose preceding character is c cannot change the
// result when no token contains c followed by "▁": every merge joins two
// adjacent symbols into a token, so a merge across the cut would make a
// token holding c and then "▁". Nor can a run of unknown characters span
// the cut when "▁" itself is a token. (Gemma 3's ">▁</" is the one real
// token of this kind seen: its ">" is not cut after.)
//
// Thread safety: immutable after building; safe from any thread.

#ifndef HALFTIME_TOKENIZER_METASPACE_CUT_H_
#define HALFTIME_TOKENIZER_METASPACE_CUT_H_

#include <cstddef>
#include <string_view>
#include <unordered_set>

namespace halftime::tokenizer {

// U+2581, SentencePiece's whitespace mark.
inline constexpr std::string_view kMetaspaceMark = "\xE2\x96\x81";

class MetaspaceCuts {
 public:
  // Notes the characters `token` (valid UTF-8) has right before a "▁".
  void AddToken(std::string_view token);
  // The first position past `from` where `text` (valid UTF-8) can be cut
  // in front of a "▁", or text.size() when there is none.
  size_t NextCut(std::string_view text, size_t from) const;

 private:
  // Characters other than "▁" that some token has right before a "▁".
  std::unordered_set<char32_t> joined_;
};

}  // namespace halftime::tokenizer

#endif  // HALFTIME_TOKENIZER_METASPACE_CUT_H_
