// A SentencePiece model (tokenizer.model: a serialized ModelProto), read
// and run without libsentencepiece: text in, the ids that libsentencepiece's
// SentencePieceProcessor::Encode gives out.
//
// Why not libsentencepiece itself: Debian's libsentencepiece carries its own
// copy of protobuf-lite 3.14 with its symbols exported, and a process that
// also loads Debian's libprotobuf 3.21 (halftime-train does, through
// libtorch and gRPC) aborts at start-up in protobuf's version check or
// crashes on the first parse, whichever library the dynamic linker binds
// first. So this reads the protobuf wire format itself (only the fields
// encoding needs) and follows libsentencepiece 0.1.97 step for step; the
// parity test holds it to the real library, which it links on its own.
//
// What is read: pieces (piece, score, type: normal, unknown, control,
// user-defined, unused, byte); trainer_spec.model_type (UNIGRAM, BPE, WORD,
// CHAR), byte_fallback, treat_whitespace_as_suffix, bos_piece;
// normalizer_spec.precompiled_charsmap (the compiled normalization rules:
// nmt_nfkc, nfkc_cf, identity...), add_dummy_prefix,
// remove_extra_whitespaces, escape_whitespaces. self_test_data and the
// denormalizer (decoding only) are ignored. Every other field is skipped as
// protobuf skips unknown fields; a file whose structure is broken (cut
// short, a length past the end, a missing trainer_spec or normalizer_spec)
// is refused, as are the model errors libsentencepiece refuses (no unknown
// piece, a duplicate piece, byte pieces missing with byte_fallback...).
// Stricter than libsentencepiece, it also refuses what protobuf would read
// as a default or keep aside (an unknown model or piece type, a field of
// the wrong wire type), a NaN score and a piece that is not UTF-8; and a
// crafted charsmap that points outside itself reads as "no rule" instead
// of past the buffer.
//
// Thread safety: immutable after Parse except for an internal cache behind
// a mutex; Encode is safe from any number of threads at once.

#ifndef HALFTIME_TOKENIZER_SENTENCEPIECE_H_
#define HALFTIME_TOKENIZER_SENTENCEPIECE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace halftime::tokenizer {

class SentencePieceModel {
 public:
  enum class PieceType : uint8_t {
    kNormal = 1,
    kUnknown = 2,
    kControl = 3,
    kUserDefined = 4,
    kUnused = 5,
    kByte = 6,
  };

  // Parses a serialized ModelProto. On failure returns null with *error
  // naming the field (without a file name; the caller adds it).
  static std::unique_ptr<SentencePieceModel> Parse(std::string_view bytes,
                                                   std::string* error);
  ~SentencePieceModel();
  SentencePieceModel(const SentencePieceModel&) = delete;
  SentencePieceModel& operator=(const SentencePieceModel&) = delete;

  // Appends the ids of `text` (valid UTF-8, under 2 GiB) to *ids:
  // normalization, the model's segmentation, byte fallback or runs of unknown
  // pieces merged into one, as SentencePieceProcessor::Encode does. No BOS/EOS.
  void Encode(std::string_view text, std::vector<int32_t>* ids) const;

  int32_t size() const;
  const std::string& piece(int32_t id) const;
  PieceType type(int32_t id) const;
  // The id of trainer_spec.bos_piece when it is a control piece, else -1
  // (SentencePieceProcessor::bos_id).
  int32_t bos_id() const;
  // Whether encoding puts a "▁" before the text (add_dummy_prefix and not
  // treat_whitespace_as_suffix, which puts it after the text instead).
  bool adds_prefix_space() const;

 private:
  struct Impl;
  explicit SentencePieceModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace halftime::tokenizer

#endif  // HALFTIME_TOKENIZER_SENTENCEPIECE_H_
