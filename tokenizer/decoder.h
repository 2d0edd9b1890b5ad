// Hugging Face's decoders (tokens back to text) as a chain of steps, each
// doing what the `tokenizers` library's decoder of the same name does:
// ByteLevel, Replace, ByteFallback, Fuse, Strip and Metaspace. A Sequence
// decoder is its steps in order. The SentencePiece tokenizer.model path uses
// the same steps, in the chain Hugging Face's converter writes for Llama.
//
// Thread safety: a chain is immutable once built; RunDecoders is safe from
// any thread.

#ifndef HALFTIME_TOKENIZER_DECODER_H_
#define HALFTIME_TOKENIZER_DECODER_H_

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/regex.h"

namespace halftime::tokenizer {

struct DecoderStep {
  enum class Kind {
    // Each token's characters back to the bytes of GPT-2's table, all
    // tokens joined into one string (bytes that are not UTF-8 become
    // U+FFFD).
    kByteLevel,
    // Every match of `literal` (or of `regex` when set) in each token
    // becomes `content`.
    kReplace,
    // Runs of "<0xNN>" tokens become the text of their bytes, or one U+FFFD
    // per byte when those bytes are not UTF-8.
    kByteFallback,
    // All tokens joined into one.
    kFuse,
    // Up to `start` leading and `stop` trailing `character`s of each token
    // removed.
    kStrip,
    // `character` (the metaspace, "▁") becomes a space; in the first token
    // it is dropped instead when `prepend` (the prepend scheme is not
    // "never").
    kMetaspace,
  };
  Kind kind = Kind::kFuse;
  std::string literal;
  std::unique_ptr<Regex> regex;
  std::string content;
  char32_t character = 0;
  size_t start = 0;
  size_t stop = 0;
  bool prepend = true;
};

// The text of `tokens` after `steps`, joined. With no steps the tokens are
// joined with spaces, as the library does without a decoder. False with
// *error only when a Replace regex gives up (a match limit).
bool RunDecoders(const std::vector<DecoderStep>& steps,
                 std::vector<std::string> tokens, std::string* text,
                 std::string* error);

// The byte a "<0xNN>" token stands for, as the ByteFallback decoder reads
// it; -1 for any other token.
int ByteFallbackByte(const std::string& token);

}  // namespace halftime::tokenizer

#endif  // HALFTIME_TOKENIZER_DECODER_H_
