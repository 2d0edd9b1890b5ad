// A tokenizer loaded and run without Python: text in, the same ids as the
// reference implementation out, and back. Two kinds of file are read:
//
// Hugging Face tokenizer.json, as its `tokenizers` library (0.22) runs it:
// the byte-level BPE kind (GPT-2, GPT-4, Llama 3, Qwen2/Qwen3) and the
// SentencePiece kind (Llama 2, Mistral 7B, TinyLlama, Gemma). What is read:
// normalizer null, NFC, Prepend, Replace (String or Regex pattern) or a
// Sequence of them; pre_tokenizer null, ByteLevel, Metaspace (replacement,
// prepend_scheme always/first/never or the older add_prefix_space, split),
// Split (Regex or String pattern, any behavior, invert) or a Sequence of
// them with ByteLevel last; model BPE (merges as "a b" strings or
// ["a", "b"] pairs, ignore_merges, unk_token, fuse_unk, and byte_fallback
// to <0xNN> tokens for the character kind); added_tokens (lstrip, rstrip,
// single_word, normalized); post_processor null, ByteLevel or
// TemplateProcessing (its "single" template); decoder null, ByteLevel,
// Replace, ByteFallback, Fuse, Strip, Metaspace or a Sequence of them.
// The model works on bytes when the pre-tokenizer ends in ByteLevel and on
// characters otherwise. Anything else (a Unigram or WordPiece model, the
// NFKC or Precompiled normalizers...) is refused with an error naming the
// file and the field.
//
// SentencePiece tokenizer.model (a serialized ModelProto), as
// libsentencepiece's SentencePieceProcessor encodes it: unigram, BPE, word
// and char models, their compiled normalization rules, byte fallback and
// user-defined symbols (see sentencepiece.h for what is read, and why it is
// read here rather than through libsentencepiece). add_special_tokens puts
// the model's BOS (<s>) in front, nothing behind, as Hugging Face's Llama
// conversion does; control symbols written in the text stay text, as in
// SentencePiece. Decoding follows the decoder that conversion writes:
// metaspaces become spaces, <0xNN> runs their bytes, and the space encoding
// put in front is taken off; <unk>, <s> and </s> count as special tokens.
//
// Which kind a file is, is read from its content: a serialized ModelProto
// starts with the byte 0x0A and is not JSON. Encoding a tokenizer.json
// follows the library's pipeline: split the text on the added tokens (those
// marked normalized=false on the raw text, the others after normalizing),
// normalize each remaining piece, pre-tokenize it, map each pre-token to
// ids by BPE merges (lowest rank first, leftmost first), then add the
// post-processor's special tokens when asked.

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
// Thread safety: immutable after Parse/Load except for internal pre-token
// caches behind a mutex; Encode and Decode are safe to call from any number
// of threads at once.
class Tokenizer {
 public:
  // Reads and parses the file at `path`, a tokenizer.json or a
  // tokenizer.model. On failure returns null with *error naming the file
  // and the field.
  static std::unique_ptr<Tokenizer> Load(const std::string& path,
                                         std::string* error);
  // Parses the contents of a tokenizer.json or a tokenizer.model; `name` (a
  // file name) starts every error.
  static std::unique_ptr<Tokenizer> Parse(std::string_view contents,
                                          std::string_view name,
                                          std::string* error);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Encodes UTF-8 `text` into *ids (replaced). With `add_special_tokens`
  // the post-processor's tokens (e.g. Llama 3's <|begin_of_text|>, or a
  // tokenizer.model's BOS) are added. Fails on invalid UTF-8, with *error
  // naming the byte offset, and on a text of 2 GiB or more.
  bool Encode(std::string_view text, bool add_special_tokens,
              std::vector<int32_t>* ids, std::string* error) const;

  // The text of `ids`, as the file's decoder writes it (for ByteLevel,
  // bytes that do not form UTF-8 become U+FFFD; without a decoder the
  // tokens are joined with spaces). Special added tokens are left out when
  // `skip_special_tokens`. Fails on an id that names no token.
  bool Decode(const std::vector<int32_t>& ids, bool skip_special_tokens,
              std::string* text, std::string* error) const;

  // The token of `id` as the file spells it ("Ġthe", "▁the"); empty when
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
