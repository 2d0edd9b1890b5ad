// Writes SentencePiece ModelProto bytes by hand for the tokenizer tests:
// models the trainer never would (chosen pieces and scores, a hand-made
// charsmap, unused pieces) and broken ones, field by field in the protobuf
// wire format (sentencepiece_model.proto's field numbers).

#ifndef HALFTIME_TESTS_TOKENIZER_MODEL_PROTO_BUILDER_H_
#define HALFTIME_TESTS_TOKENIZER_MODEL_PROTO_BUILDER_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace halftime::tokenizer::model_proto {

// SentencePiece::Type.
enum PieceType : int {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6
};
// TrainerSpec::ModelType.
enum ModelType : int { kUnigram = 1, kBpe = 2, kWord = 3, kChar = 4 };

inline std::string Varint(uint64_t value) {
  std::string out;
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7F) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
  return out;
}

inline std::string VarintField(int field, uint64_t value) {
  return Varint(static_cast<uint64_t>(field) << 3) + Varint(value);
}

inline std::string BytesField(int field, std::string_view payload) {
  return Varint((static_cast<uint64_t>(field) << 3) | 2) +
         Varint(payload.size()) + std::string(payload);
}

inline std::string FloatField(int field, float value) {
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof(bits));
  std::string out = Varint((static_cast<uint64_t>(field) << 3) | 5);
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(bits >> (8 * i)));
  return out;
}

// A SentencePiece message (pieces field 1 of ModelProto, unwrapped).
inline std::string Piece(std::string_view text, float score,
                         PieceType type = kNormal) {
  return BytesField(1, text) + FloatField(2, score) + VarintField(3, type);
}

// The 256 byte pieces <0x00>..<0xFF>, as byte_fallback models carry them.
inline std::vector<std::string> BytePieces() {
  std::vector<std::string> pieces;
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    const char text[] = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>'};
    pieces.push_back(Piece(std::string_view(text, 6), 0, kByte));
  }
  return pieces;
}

inline std::string TrainerSpec(ModelType type, bool byte_fallback = false) {
  return VarintField(3, type) + VarintField(35, byte_fallback ? 1 : 0);
}

// NormalizerSpec with `charsmap` (empty: none, the identity rule).
inline std::string NormalizerSpec(bool add_dummy_prefix,
                                  bool remove_extra_whitespaces,
                                  std::string_view charsmap = "") {
  std::string out = BytesField(1, charsmap.empty() ? "identity" : "custom");
  if (!charsmap.empty()) out += BytesField(2, charsmap);
  return out + VarintField(3, add_dummy_prefix ? 1 : 0) +
         VarintField(4, remove_extra_whitespaces ? 1 : 0) + VarintField(5, 1);
}

inline std::string Model(const std::vector<std::string>& pieces,
                         std::string_view trainer_spec,
                         std::string_view normalizer_spec) {
  std::string out;
  for (const std::string& piece : pieces) out += BytesField(1, piece);
  return out + BytesField(2, trainer_spec) + BytesField(3, normalizer_spec);
}

// A precompiled charsmap: the Darts-clone units (little-endian uint32s)
// after their byte size, then the NUL-ended replacement strings.
inline std::string Charsmap(const std::vector<uint32_t>& units,
                            std::string_view replacements) {
  std::string out;
  const uint32_t size = static_cast<uint32_t>(units.size() * 4);
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(size >> (8 * i)));
  for (uint32_t unit : units) {
    for (int i = 0; i < 4; ++i) {
      out.push_back(static_cast<char>(unit >> (8 * i)));
    }
  }
  return out + std::string(replacements);
}

// A Darts-clone double array holding one rule, the byte `from` -> the
// replacement at offset 0: the root's children start at offset 1, so
// `from` sits at unit 1 ^ from, whose leaf is 2 further along (XOR 2).
// `leaf_offset` and `value` break it on purpose when changed.
inline std::vector<uint32_t> OneRuleUnits(uint8_t from,
                                          uint32_t leaf_offset = 2,
                                          uint32_t value = 0) {
  std::vector<uint32_t> units(512, 0);
  units[0] = 1u << 10;  // Offset 1, no label.
  const uint32_t node = 1u ^ from;
  units[node] = from | (1u << 8) | (leaf_offset << 10);  // Has a leaf.
  if ((node ^ leaf_offset) < units.size()) {
    units[node ^ leaf_offset] = (1u << 31) | value;  // The leaf.
  }
  return units;
}

// A BPE model with a one-rule charsmap (`units`, the rule's replacement
// "a"): <unk>, <s>, </s>, then ▁ (score -3), a (-4), b (-5), ▁a (-1) and
// ab (-2) as ids 3 to 7.
inline std::string OneRuleBpeModel(const std::vector<uint32_t>& units) {
  return Model(
      {Piece("<unk>", 0, kUnknown), Piece("<s>", 0, kControl),
       Piece("</s>", 0, kControl), Piece("\xE2\x96\x81", -3), Piece("a", -4),
       Piece("b", -5),
       Piece("\xE2\x96\x81"
             "a",
             -1),
       Piece("ab", -2)},
      TrainerSpec(kBpe),
      NormalizerSpec(true, false, Charsmap(units, std::string("a\0", 2))));
}

// A BPE model with a piece that crosses a metaspace ("b▁", the best
// score), so that the text must not be cut in front of a "▁" after "b",
// and no normalization rules: <unk>, <s>, </s>, ▁, a, b, c, b▁, ▁a, ab.
inline std::string CrossingBpeModel() {
  return Model(
      {Piece("<unk>", 0, kUnknown), Piece("<s>", 0, kControl),
       Piece("</s>", 0, kControl), Piece("\xE2\x96\x81", -3), Piece("a", -4),
       Piece("b", -5), Piece("c", -6), Piece("b\xE2\x96\x81", -0.5f),
       Piece("\xE2\x96\x81"
             "a",
             -1),
       Piece("ab", -2)},
      TrainerSpec(kBpe), NormalizerSpec(true, false));
}

// A unigram model with the same one-rule charsmap, a user-defined symbol
// ("<u>", which always wins), an unused piece ("bc", which never does),
// byte fallback and no dummy prefix.
inline std::string OneRuleUnigramModel() {
  std::vector<std::string> pieces = {Piece("<unk>", 0, kUnknown),
                                     Piece("<s>", 0, kControl),
                                     Piece("</s>", 0, kControl),
                                     Piece("<u>", 0, kUserDefined),
                                     Piece("bc", -0.5f, kUnused),
                                     Piece("\xE2\x96\x81", -2),
                                     Piece("a", -3),
                                     Piece("b", -3.5f),
                                     Piece("c", -4),
                                     Piece("ab", -4.5f),
                                     Piece("abc", -6),
                                     Piece("\xE2\x96\x81"
                                           "ab",
                                           -5)};
  for (const std::string& byte : BytePieces()) pieces.push_back(byte);
  return Model(
      pieces, TrainerSpec(kUnigram, /*byte_fallback=*/true),
      NormalizerSpec(false, true,
                     Charsmap(OneRuleUnits('A'), std::string("a\0", 2))));
}

}  // namespace halftime::tokenizer::model_proto

#endif  // HALFTIME_TESTS_TOKENIZER_MODEL_PROTO_BUILDER_H_
