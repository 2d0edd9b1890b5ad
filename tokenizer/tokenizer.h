// A Hugging Face tokenizer.json of the byte-level BPE kind (GPT-2, GPT-4,
// Llama 3, Qwen2/Qwen3), loaded and run without Python: text in, the same
// ids as Hugging Face's `tokenizers` library out, and back.
//
// What is read: normalizer null or NFC; pre_tokenizer ByteLevel, or a
// Sequence of Split (Regex or String pattern, any behavior, invert) steps
// and a ByteLevel step; model BPE (merges as "a b" strings or ["a", "b"]
// pairs, ignore_merges, unk_token, fuse_unk); added_tokens (lstrip, rstrip,
// single_word, normalized); post_processor null, ByteLevel or
// TemplateProcessing (its "single" template); decoder null or ByteLevel.
// Anything else is refused with an error naming the file and the field.
//
// Encoding follows the library's pipeline: split the text on the added
// tokens (those marked normalized=false on the raw text, the others after
// normalizing), normalize each remaining piece, pre-tokenize it, map each
// pre-token's bytes to ids by BPE merges (lowest rank first, leftmost
// first), then add the post-processor's special tokens when asked.

#ifndef HALFTIME_TOKENIZER_TOKENIZER_H_
#define HALFTIME_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace halftime::tokenizer {

// A loaded tokenizer.
//
// Thread safety: immutable after Parse/Load except for an internal
// pre-token cache behind a mutex; Encode and Decode are safe to call from
// any number of threads at once.
class Tokenizer {
 public:
  // Reads and parses the file at `path`. On failure returns null with
  // *error naming the file and the field.
  static std::unique_ptr<Tokenizer> Load(const std::string& path,
                                         std::string* error);
  // Parses tokenizer.json text; `name` (a file name) starts every error.
  static std::unique_ptr<Tokenizer> Parse(std::string_view json_text,
                                          std::string_view name,
                                          std::string* error);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Encodes UTF-8 `text` into *ids (replaced). With `add_special_tokens`
  // the post-processor's tokens (e.g. Llama 3's <|begin_of_text|>) are
  // added. Fails on invalid UTF-8, with *error naming the byte offset.
  bool Encode(std::string_view text, bool add_special_tokens,
              std::vector<int32_t>* ids, std::string* error) const;

  // The text of `ids`, as the ByteLevel decoder writes it: bytes that do not
  // form UTF-8 become U+FFFD. Special added tokens are left out when
  // `skip_special_tokens`. Fails on an id that names no token.
  bool Decode(const std::vector<int32_t>& ids, bool skip_special_tokens,
              std::string* text, std::string* error) const;

  // The token of `id` as tokenizer.json spells it ("Ġthe"); empty when
  // there is none.
  std::string IdToToken(int32_t id) const;
  // One past the largest id (vocabulary and added tokens).
  int32_t id_limit() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace halftime::tokenizer

#endif  // HALFTIME_TOKENIZER_TOKENIZER_H_
