#include "tokenizer/sentencepiece.h"

#include <algorithm>
#include <array>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <queue>
#include <unordered_map>
#include <utility>

#include "tokenizer/byte_trie.h"
#include "tokenizer/metaspace_cut.h"
#include "tokenizer/text.h"

namespace halftime::tokenizer {
namespace {

// Models with more pieces are refused, as tokenizer.json vocabularies past
// this id are (real ones stay under 300k).
constexpr size_t kMaxPieces = size_t{1} << 21;
// Normalized segments longer than this are not cached.
constexpr size_t kMaxCachedBytes = 256;
// The cache is dropped when it grows past this many segments.
constexpr size_t kMaxCacheEntries = 1 << 18;
// libsentencepiece keeps at most this many charsmap matches per position
// (Normalizer::kMaxTrieResultsSize) and the longest of them wins.
constexpr size_t kMaxCharsmapResults = 32;
// unigram::Model's penalty for an unknown character, below the lowest
// piece score.
constexpr float kUnkPenalty = 10.0f;

enum class ModelType { kUnigram = 1, kBpe = 2, kWord = 3, kChar = 4 };

// string_util::OneCharLen: the length of a UTF-8 sequence from its first
// byte alone.
size_t OneCharLen(char lead) {
  return "\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[(static_cast<uint8_t>(lead)) >> 4];
}

// The protobuf wire format, as far as ModelProto needs: varints,
// length-delimited fields and fixed32/fixed64 scalars. Groups (deprecated,
// never written for this message) are refused.
class WireReader {
 public:
  WireReader(std::string_view data, size_t base) : data_(data), base_(base) {}
  bool done() const { return pos_ >= data_.size(); }
  // The file offset of the next byte.
  size_t offset() const { return base_ + pos_; }

  bool ReadVarint(uint64_t* value) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) return false;
      const uint8_t b = static_cast<uint8_t>(data_[pos_++]);
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) {
        *value = v;
        return true;
      }
    }
    return false;  // More than ten bytes.
  }
  bool ReadFixed32(uint32_t* value) {
    if (data_.size() - pos_ < 4) return false;
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      v |= static_cast<uint32_t>(static_cast<uint8_t>(data_[pos_ + i]))
           << (8 * i);
    }
    pos_ += 4;
    *value = v;
    return true;
  }
  // A length-delimited field; *base is its first byte's file offset.
  bool ReadBytes(std::string_view* value, size_t* base) {
    uint64_t length = 0;
    if (!ReadVarint(&length) || length > data_.size() - pos_) return false;
    *base = offset();
    *value = data_.substr(pos_, static_cast<size_t>(length));
    pos_ += static_cast<size_t>(length);
    return true;
  }
  bool Skip(int wire_type) {
    uint64_t ignored = 0;
    std::string_view bytes;
    size_t base = 0;
    switch (wire_type) {
      case 0:
        return ReadVarint(&ignored);
      case 1:
        if (data_.size() - pos_ < 8) return false;
        pos_ += 8;
        return true;
      case 2:
        return ReadBytes(&bytes, &base);
      case 5:
        if (data_.size() - pos_ < 4) return false;
        pos_ += 4;
        return true;
      default:
        return false;
    }
  }

 private:
  std::string_view data_;
  size_t base_;
  size_t pos_ = 0;
};

// normalizer_spec.precompiled_charsmap: a little-endian uint32 size, a
// Darts-clone double array of that many bytes mapping input prefixes to
// offsets, then the replacement strings, each ended by a NUL.
class Charsmap {
 public:
  bool Parse(std::string_view blob, std::string* error) {
    if (blob.empty()) return true;
    uint32_t trie_bytes = 0;
    if (blob.size() > 4) {
      for (int i = 0; i < 4; ++i) {
        trie_bytes |= static_cast<uint32_t>(static_cast<uint8_t>(blob[i]))
                      << (8 * i);
      }
    }
    if (blob.size() <= 4 || trie_bytes > blob.size() - 4) {
      *error = "normalizer_spec.precompiled_charsmap: broken (" +
               std::to_string(blob.size()) + " bytes, its trie said to take " +
               std::to_string(trie_bytes) + ")";
      return false;
    }
    units_.resize(trie_bytes / 4);
    for (size_t u = 0; u < units_.size(); ++u) {
      uint32_t v = 0;
      for (int i = 0; i < 4; ++i) {
        v |= static_cast<uint32_t>(static_cast<uint8_t>(blob[4 + 4 * u + i]))
             << (8 * i);
      }
      units_[u] = v;
    }
    replacements_ = std::string(blob.substr(4 + trie_bytes));
    return true;
  }
  bool empty() const { return units_.empty(); }

  // The longest rule for a prefix of `text` (Darts commonPrefixSearch, as
  // Normalizer::NormalizePrefix uses it): its length, 0 when none, with
  // *replacement set. Positions and offsets outside the arrays end the
  // search where libsentencepiece would read past them.
  size_t LongestMatch(std::string_view text,
                      std::string_view* replacement) const {
    if (units_.empty()) return 0;
    size_t longest = 0;
    size_t results = 0;
    uint32_t value = 0;
    size_t node = Offset(units_[0]);
    for (size_t i = 0; i < text.size(); ++i) {
      const uint8_t c = static_cast<uint8_t>(text[i]);
      node ^= c;
      if (node >= units_.size()) break;
      const uint32_t unit = units_[node];
      if ((unit & ((1u << 31) | 0xFF)) != c) break;
      node ^= Offset(unit);
      if ((unit >> 8) & 1) {
        if (node >= units_.size()) break;
        if (results++ < kMaxCharsmapResults) {
          value = units_[node] & ((1u << 31) - 1);
          longest = i + 1;
        }
      }
    }
    if (longest == 0 || value >= replacements_.size()) return 0;
    const size_t end = replacements_.find('\0', value);
    *replacement =
        std::string_view(replacements_)
            .substr(value,
                    end == std::string::npos ? std::string::npos : end - value);
    return longest;
  }

 private:
  static size_t Offset(uint32_t unit) {
    return (unit >> 10) << ((unit & (1u << 9)) >> 6);
  }
  std::vector<uint32_t> units_;
  std::string replacements_;
};

}  // namespace

struct SentencePieceModel::Impl {
  struct Piece {
    std::string text;
    float score = 0;
    PieceType type = PieceType::kNormal;
  };
  std::vector<Piece> pieces;
  ModelType model_type = ModelType::kUnigram;
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  std::string bos_piece = "<s>";
  bool has_trainer_spec = false;
  bool has_normalizer_spec = false;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
  Charsmap charsmap;

  // ModelInterface's pieces_ (normal, user-defined, unused) and
  // reserved_id_map_ (control, unknown, byte).
  std::unordered_map<std::string_view, int32_t> normal;
  std::unordered_map<std::string_view, int32_t> reserved;
  int32_t unk_id = -1;
  std::array<int32_t, 256> byte_ids{};
  bool has_unused = false;
  // PrefixMatcher: libsentencepiece's Darts double array over the
  // user-defined symbols.
  ByteTrie user_defined;
  // unigram::Model: the trie (a Darts double array there) over `normal`
  // and the score range of normal
  // pieces. The library starts the maximum at FLT_MIN, the smallest positive
  // float, so with the usual negative scores it stays there; user-defined
  // pieces score by it.
  ByteTrie unigram_trie;
  float min_score = FLT_MAX;
  float max_score = FLT_MIN;
  // BPE only: whether the normalized text is cut in front of "▁"s
  // (metaspace_cut.h) and the parts encoded and cached apart; needs "▁" to
  // be a normal piece.
  bool split_at_space_symbol = false;
  MetaspaceCuts cuts;

  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  bool ParseModelProto(std::string_view data, std::string* error);
  bool ParsePiece(std::string_view data, size_t base, size_t index,
                  std::string* error);
  bool ParseTrainerSpec(std::string_view data, size_t base, std::string* error);
  bool ParseNormalizerSpec(std::string_view data, size_t base,
                           std::string* error);
  bool Initialize(std::string* error);

  int32_t PieceToId(std::string_view piece) const {
    if (auto it = reserved.find(piece); it != reserved.end()) {
      return it->second;
    }
    if (auto it = normal.find(piece); it != normal.end()) return it->second;
    return unk_id;
  }
  // PrefixMatcher::PrefixMatch: the longest user-defined symbol at the
  // start of `text` (*found), else one character.
  size_t PrefixMatch(std::string_view text, bool* found) const;
  // Normalizer::NormalizePrefix: the normalized form of the start of
  // `text` and how many bytes of `text` it stands for.
  std::string_view NormalizePrefix(std::string_view text,
                                   size_t* consumed) const;
  void Normalize(std::string_view input, std::string* out) const;

  using Result = std::vector<std::pair<std::string_view, int32_t>>;
  void EncodeBpe(std::string_view text, Result* out) const;
  void EncodeUnigram(std::string_view text, Result* out) const;
  void EncodeWord(std::string_view text, Result* out) const;
  void EncodeChar(std::string_view text, Result* out) const;
  // The model's pieces to ids as SentencePieceProcessor's
  // PopulateSentencePieceText gives them.
  void AppendIds(const Result& result, std::vector<int32_t>* ids) const;
  void EncodeNormalized(std::string_view text, std::vector<int32_t>* ids) const;
};

namespace {

const char* WireTypeName(int wire_type) {
  switch (wire_type) {
    case 0:
      return "varint";
    case 1:
      return "fixed64";
    case 2:
      return "length-delimited";
    case 5:
      return "fixed32";
    default:
      return "group";
  }
}

std::string Broken(const std::string& where, size_t offset) {
  return "not a SentencePiece model, or cut short: " + where +
         " is broken at byte " + std::to_string(offset);
}

// Reads the next tag of `reader`; false with *error on a broken one.
bool ReadTag(WireReader* reader, const std::string& where, uint32_t* field,
             int* wire_type, std::string* error) {
  const size_t at = reader->offset();
  uint64_t tag = 0;
  if (!reader->ReadVarint(&tag) || (tag >> 3) == 0 || (tag >> 3) > 0x1FFFFFFF) {
    *error = Broken(where, at);
    return false;
  }
  *field = static_cast<uint32_t>(tag >> 3);
  *wire_type = static_cast<int>(tag & 7);
  return true;
}

bool WrongType(const std::string& field, int got, int want,
               std::string* error) {
  *error = field + ": expected a " + WireTypeName(want) + " field, got a " +
           WireTypeName(got) + " one";
  return false;
}

bool ReadBool(WireReader* reader, const std::string& field, int wire_type,
              bool* out, std::string* error) {
  if (wire_type != 0) return WrongType(field, wire_type, 0, error);
  const size_t at = reader->offset();
  uint64_t v = 0;
  if (!reader->ReadVarint(&v)) {
    *error = Broken(field, at);
    return false;
  }
  *out = v != 0;
  return true;
}

bool ReadString(WireReader* reader, const std::string& field, int wire_type,
                std::string_view* out, size_t* base, std::string* error) {
  if (wire_type != 2) return WrongType(field, wire_type, 2, error);
  const size_t at = reader->offset();
  if (!reader->ReadBytes(out, base)) {
    *error = Broken(field, at);
    return false;
  }
  return true;
}

bool SkipField(WireReader* reader, const std::string& where, uint32_t field,
               int wire_type, std::string* error) {
  const size_t at = reader->offset();
  if (!reader->Skip(wire_type)) {
    *error = wire_type == 3 || wire_type == 4 || wire_type > 5
                 ? where + ": field " + std::to_string(field) +
                       " has wire type " + std::to_string(wire_type) +
                       " (groups are not supported)"
                 : Broken(where + " field " + std::to_string(field), at);
    return false;
  }
  return true;
}

}  // namespace

bool SentencePieceModel::Impl::ParsePiece(std::string_view data, size_t base,
                                          size_t index, std::string* error) {
  const std::string where = "pieces[" + std::to_string(index) + "]";
  Piece piece;
  WireReader reader(data, base);
  while (!reader.done()) {
    uint32_t field = 0;
    int wire_type = 0;
    if (!ReadTag(&reader, where, &field, &wire_type, error)) return false;
    if (field == 1) {
      std::string_view text;
      size_t at = 0;
      if (!ReadString(&reader, where + ".piece", wire_type, &text, &at,
                      error)) {
        return false;
      }
      piece.text = std::string(text);
    } else if (field == 2) {
      if (wire_type != 5) {
        return WrongType(where + ".score", wire_type, 5, error);
      }
      uint32_t bits = 0;
      const size_t at = reader.offset();
      if (!reader.ReadFixed32(&bits)) {
        *error = Broken(where + ".score", at);
        return false;
      }
      std::memcpy(&piece.score, &bits, sizeof(bits));
      if (std::isnan(piece.score)) {
        *error = where + ".score: NaN";
        return false;
      }
    } else if (field == 3) {
      if (wire_type != 0) {
        return WrongType(where + ".type", wire_type, 0, error);
      }
      uint64_t type = 0;
      const size_t at = reader.offset();
      if (!reader.ReadVarint(&type)) {
        *error = Broken(where + ".type", at);
        return false;
      }
      if (type < 1 || type > 6) {
        *error = where + ".type: " + std::to_string(type) +
                 " is not a piece type (1 normal, 2 unknown, 3 control, 4 "
                 "user-defined, 5 unused, 6 byte)";
        return false;
      }
      piece.type = static_cast<PieceType>(type);
    } else if (!SkipField(&reader, where, field, wire_type, error)) {
      return false;
    }
  }
  pieces.push_back(std::move(piece));
  return true;
}

bool SentencePieceModel::Impl::ParseTrainerSpec(std::string_view data,
                                                size_t base,
                                                std::string* error) {
  const std::string where = "trainer_spec";
  WireReader reader(data, base);
  while (!reader.done()) {
    uint32_t field = 0;
    int wire_type = 0;
    if (!ReadTag(&reader, where, &field, &wire_type, error)) return false;
    if (field == 3) {
      if (wire_type != 0) {
        return WrongType(where + ".model_type", wire_type, 0, error);
      }
      uint64_t type = 0;
      const size_t at = reader.offset();
      if (!reader.ReadVarint(&type)) {
        *error = Broken(where + ".model_type", at);
        return false;
      }
      if (type < 1 || type > 4) {
        *error = where + ".model_type: " + std::to_string(type) +
                 " is not a model type (1 unigram, 2 BPE, 3 word, 4 char)";
        return false;
      }
      model_type = static_cast<ModelType>(type);
    } else if (field == 24) {
      if (!ReadBool(&reader, where + ".treat_whitespace_as_suffix", wire_type,
                    &treat_whitespace_as_suffix, error)) {
        return false;
      }
    } else if (field == 35) {
      if (!ReadBool(&reader, where + ".byte_fallback", wire_type,
                    &byte_fallback, error)) {
        return false;
      }
    } else if (field == 46) {
      std::string_view text;
      size_t at = 0;
      if (!ReadString(&reader, where + ".bos_piece", wire_type, &text, &at,
                      error)) {
        return false;
      }
      bos_piece = std::string(text);
    } else if (!SkipField(&reader, where, field, wire_type, error)) {
      return false;
    }
  }
  has_trainer_spec = true;
  return true;
}

bool SentencePieceModel::Impl::ParseNormalizerSpec(std::string_view data,
                                                   size_t base,
                                                   std::string* error) {
  const std::string where = "normalizer_spec";
  WireReader reader(data, base);
  while (!reader.done()) {
    uint32_t field = 0;
    int wire_type = 0;
    if (!ReadTag(&reader, where, &field, &wire_type, error)) return false;
    if (field == 2) {
      std::string_view blob;
      size_t at = 0;
      if (!ReadString(&reader, where + ".precompiled_charsmap", wire_type,
                      &blob, &at, error)) {
        return false;
      }
      // A repeated bytes field replaces the earlier one, as protobuf does.
      charsmap = Charsmap();
      if (!charsmap.Parse(blob, error)) return false;
    } else if (field == 3) {
      if (!ReadBool(&reader, where + ".add_dummy_prefix", wire_type,
                    &add_dummy_prefix, error)) {
        return false;
      }
    } else if (field == 4) {
      if (!ReadBool(&reader, where + ".remove_extra_whitespaces", wire_type,
                    &remove_extra_whitespaces, error)) {
        return false;
      }
    } else if (field == 5) {
      if (!ReadBool(&reader, where + ".escape_whitespaces", wire_type,
                    &escape_whitespaces, error)) {
        return false;
      }
    } else if (!SkipField(&reader, where, field, wire_type, error)) {
      return false;
    }
  }
  has_normalizer_spec = true;
  return true;
}

bool SentencePieceModel::Impl::ParseModelProto(std::string_view data,
                                               std::string* error) {
  WireReader reader(data, 0);
  while (!reader.done()) {
    uint32_t field = 0;
    int wire_type = 0;
    if (!ReadTag(&reader, "ModelProto", &field, &wire_type, error)) {
      return false;
    }
    if (field >= 1 && field <= 3) {
      static const char* const kNames[] = {"", "pieces", "trainer_spec",
                                           "normalizer_spec"};
      std::string where = kNames[field];
      if (field == 1) where += "[" + std::to_string(pieces.size()) + "]";
      std::string_view message;
      size_t base = 0;
      if (!ReadString(&reader, where, wire_type, &message, &base, error)) {
        return false;
      }
      if (field == 1) {
        if (pieces.size() >= kMaxPieces) {
          *error = "pieces: more than " + std::to_string(kMaxPieces);
          return false;
        }
        if (!ParsePiece(message, base, pieces.size(), error)) return false;
      } else if (field == 2) {
        if (!ParseTrainerSpec(message, base, error)) return false;
      } else if (!ParseNormalizerSpec(message, base, error)) {
        return false;
      }
    } else if (!SkipField(&reader, "ModelProto", field, wire_type, error)) {
      return false;
    }
  }
  // The trainer writes both specs after the pieces: a file cut short at a
  // piece boundary parses, but without them.
  if (!has_trainer_spec || !has_normalizer_spec) {
    *error = std::string("not a SentencePiece model, or cut short: no ") +
             (has_trainer_spec ? "normalizer_spec" : "trainer_spec") +
             " (after " + std::to_string(pieces.size()) + " pieces)";
    return false;
  }
  return true;
}

// ModelInterface::InitializePieces and the models' constructors: the same
// checks, and the lookup tables.
bool SentencePieceModel::Impl::Initialize(std::string* error) {
  byte_ids.fill(-1);
  std::array<bool, 256> byte_found{};
  for (size_t i = 0; i < pieces.size(); ++i) {
    const Piece& p = pieces[i];
    const std::string where = "pieces[" + std::to_string(i) + "]";
    const int32_t id = static_cast<int32_t>(i);
    if (p.text.empty()) {
      *error = where + ".piece: empty";
      return false;
    }
    size_t bad = 0;
    if (!IsValidUtf8(p.text, &bad)) {
      *error = where + ".piece: invalid UTF-8 at byte " + std::to_string(bad);
      return false;
    }
    const bool is_normal = p.type == PieceType::kNormal ||
                           p.type == PieceType::kUserDefined ||
                           p.type == PieceType::kUnused;
    if (!(is_normal ? normal : reserved).emplace(p.text, id).second) {
      *error = where + ".piece: " + p.text + " is already defined";
      return false;
    }
    if (p.type == PieceType::kUserDefined) {
      // Darts keys are C strings: a NUL ends the symbol there.
      const std::string_view key(p.text.c_str());
      if (!key.empty()) user_defined.Insert(key, 1);
    }
    if (p.type == PieceType::kUnused) has_unused = true;
    if (p.type == PieceType::kUnknown) {
      if (unk_id >= 0) {
        *error = where + ": a second unknown piece (the first is pieces[" +
                 std::to_string(unk_id) + "])";
        return false;
      }
      unk_id = id;
    }
    if (p.type == PieceType::kByte) {
      if (!byte_fallback) {
        *error = where + ": byte piece " + p.text +
                 " but trainer_spec.byte_fallback is false";
        return false;
      }
      int b = -1;
      static constexpr char kHex[] = "0123456789ABCDEF";
      for (int v = 0; v < 256 && b < 0; ++v) {
        const char spelled[] = {'<', '0', 'x', kHex[v >> 4], kHex[v & 15], '>'};
        if (p.text == std::string_view(spelled, 6)) b = v;
      }
      if (b < 0) {
        *error = where + ": byte piece " + p.text + " is not <0xNN>";
        return false;
      }
      byte_found[b] = true;
      byte_ids[b] = id;
    }
    if (p.type == PieceType::kNormal) {
      min_score = std::min(min_score, p.score);
      max_score = std::max(max_score, p.score);
    }
  }
  if (unk_id < 0) {
    *error = "pieces: no unknown piece (type 2)";
    return false;
  }
  if (byte_fallback) {
    for (int b = 0; b < 256; ++b) {
      if (!byte_found[b]) {
        char hex[8];
        std::snprintf(hex, sizeof(hex), "%02X", b);
        *error = std::string("pieces: no byte piece <0x") + hex +
                 "> although trainer_spec.byte_fallback is true";
        return false;
      }
    }
  }
  if (model_type == ModelType::kUnigram) {
    if (normal.empty()) {
      *error = "pieces: a unigram model with no normal pieces";
      return false;
    }
    for (const auto& [text, id] : normal) unigram_trie.Insert(text, id);
  }
  unigram_trie.Finish();
  user_defined.Finish();
  if (model_type == ModelType::kBpe && normal.count(kMetaspaceMark) != 0 &&
      reserved.count(kMetaspaceMark) == 0) {
    split_at_space_symbol = true;
    for (const auto& [text, id] : normal) cuts.AddToken(text);
  }
  return true;
}

size_t SentencePieceModel::Impl::PrefixMatch(std::string_view text,
                                             bool* found) const {
  size_t length = 0;
  *found =
      !user_defined.empty() && user_defined.LongestPrefix(text, &length) >= 0;
  return *found ? length : std::min(text.size(), OneCharLen(text[0]));
}

std::string_view SentencePieceModel::Impl::NormalizePrefix(
    std::string_view text, size_t* consumed) const {
  bool found = false;
  const size_t length = PrefixMatch(text, &found);
  if (found) {
    *consumed = length;
    return text.substr(0, length);
  }
  std::string_view replacement;
  if (const size_t matched = charsmap.LongestMatch(text, &replacement)) {
    *consumed = matched;
    return replacement;
  }
  // The text is valid UTF-8 (Encode's caller checks), so the character is
  // copied as is.
  size_t pos = 0;
  NextCodePoint(text, &pos);
  *consumed = pos;
  return text.substr(0, pos);
}

void SentencePieceModel::Impl::Normalize(std::string_view input,
                                         std::string* out) const {
  out->clear();
  if (input.empty()) return;
  if (remove_extra_whitespaces) {
    while (!input.empty()) {
      size_t consumed = 0;
      if (NormalizePrefix(input, &consumed) != " ") break;
      input.remove_prefix(consumed);
    }
  }
  if (input.empty()) return;
  out->reserve(input.size() * 3);
  const auto add_space = [&] {
    if (escape_whitespaces) {
      out->append(kMetaspaceMark);
    } else {
      out->push_back(' ');
    }
  };
  if (!treat_whitespace_as_suffix && add_dummy_prefix) add_space();
  bool previous_space = remove_extra_whitespaces;
  while (!input.empty()) {
    size_t consumed = 0;
    std::string_view piece = NormalizePrefix(input, &consumed);
    while (previous_space && !piece.empty() && piece[0] == ' ') {
      piece.remove_prefix(1);
    }
    if (!piece.empty()) {
      for (char c : piece) {
        if (escape_whitespaces && c == ' ') {
          out->append(kMetaspaceMark);
        } else {
          out->push_back(c);
        }
      }
      previous_space = piece.back() == ' ';
    }
    input.remove_prefix(consumed);
    if (!remove_extra_whitespaces) previous_space = false;
  }
  if (remove_extra_whitespaces) {
    const std::string_view space =
        escape_whitespaces ? kMetaspaceMark : std::string_view(" ");
    while (out->size() >= space.size() &&
           out->compare(out->size() - space.size(), space.size(), space) == 0) {
      out->resize(out->size() - space.size());
    }
  }
  if (treat_whitespace_as_suffix && add_dummy_prefix) add_space();
}

// bpe::Model::SampleEncode without dropout: merge the adjacent pair whose
// concatenation is the highest-scoring piece, leftmost first, until none
// is left; pieces marked unused are split back into what formed them.
void SentencePieceModel::Impl::EncodeBpe(std::string_view text,
                                         Result* out) const {
  struct Symbol {
    int32_t prev;
    int32_t next;
    uint32_t begin;
    uint32_t size;  // 0 once merged into the symbol on its left.
    bool freeze;
  };
  struct Pair {
    float score;
    int32_t left;
    int32_t right;
    uint32_t size;
  };
  struct Lower {
    bool operator()(const Pair& a, const Pair& b) const {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
  };
  std::vector<Symbol> symbols;
  // Positions fit 32 bits: Tokenizer::Encode refuses texts of 2 GiB and
  // more.
  for (size_t pos = 0; pos < text.size();) {
    bool freeze = false;
    const size_t length = PrefixMatch(text.substr(pos), &freeze);
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back(Symbol{index - 1, -1, static_cast<uint32_t>(pos),
                             static_cast<uint32_t>(length), freeze});
    if (index > 0) symbols[index - 1].next = index;
    pos += length;
  }
  if (symbols.empty()) return;
  std::priority_queue<Pair, std::vector<Pair>, Lower> agenda;
  std::unordered_map<std::string_view,
                     std::pair<std::string_view, std::string_view>>
      rev_merge;
  const auto piece_of = [&](const Symbol& s) {
    return text.substr(s.begin, s.size);
  };
  const auto maybe_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0 || symbols[left].freeze ||
        symbols[right].freeze) {
      return;
    }
    const std::string_view joined = text.substr(
        symbols[left].begin, symbols[left].size + symbols[right].size);
    auto it = normal.find(joined);
    if (it == normal.end()) return;
    const Piece& p = pieces[it->second];
    agenda.push(
        Pair{p.score, left, right, static_cast<uint32_t>(joined.size())});
    if (p.type == PieceType::kUnused) {
      rev_merge[joined] = {piece_of(symbols[left]), piece_of(symbols[right])};
    }
  };
  for (size_t i = 1; i < symbols.size(); ++i) {
    maybe_add(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));
  }
  while (!agenda.empty()) {
    const Pair top = agenda.top();
    agenda.pop();
    Symbol& left = symbols[top.left];
    Symbol& right = symbols[top.right];
    // A pair whose symbols changed since it was queued.
    if (left.size == 0 || right.size == 0 ||
        left.size + right.size != top.size) {
      continue;
    }
    left.size += right.size;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    right.size = 0;
    maybe_add(left.prev, top.left);
    maybe_add(top.left, left.next);
  }
  std::vector<std::string_view> stack;
  for (int32_t i = 0; i != -1; i = symbols[i].next) {
    stack.push_back(piece_of(symbols[i]));
    while (!stack.empty()) {
      const std::string_view w = stack.back();
      stack.pop_back();
      const int32_t id = PieceToId(w);
      if (has_unused && pieces[id].type == PieceType::kUnused) {
        auto it = rev_merge.find(w);
        if (it != rev_merge.end()) {
          // Left first: the right half goes under it on the stack.
          stack.push_back(it->second.second);
          stack.push_back(it->second.first);
          continue;
        }
      }
      out->emplace_back(w, id);
    }
  }
}

// unigram::Model::EncodeOptimized: Viterbi over the pieces that start at
// each character, with an unknown piece for a character no piece covers.
// The score arithmetic keeps the library's types (double for a candidate,
// float once stored) so that near-ties break the same way.
void SentencePieceModel::Impl::EncodeUnigram(std::string_view text,
                                             Result* out) const {
  struct BestPathNode {
    int32_t id = -1;
    float best_path_score = 0;
    int64_t starts_at = -1;
  };
  const size_t size = text.size();
  const float unk_score = min_score - kUnkPenalty;
  std::vector<BestPathNode> best(size + 1);
  size_t starts_at = 0;
  while (starts_at < size) {
    const float till_here = best[starts_at].best_path_score;
    bool has_single_node = false;
    const size_t mblen =
        std::min(OneCharLen(text[starts_at]), size - starts_at);
    int32_t node = 0;
    for (size_t key_pos = starts_at; key_pos < size; ++key_pos) {
      node = unigram_trie.Child(node, static_cast<uint8_t>(text[key_pos]));
      if (node < 0) break;
      const int32_t id = unigram_trie.value(node);
      if (id < 0 || pieces[id].type == PieceType::kUnused) continue;
      const size_t length = key_pos + 1 - starts_at;
      BestPathNode& target = best[key_pos + 1];
      const double score = pieces[id].type == PieceType::kUserDefined
                               ? (static_cast<float>(length) * max_score - 0.1)
                               : pieces[id].score;
      const double candidate = score + till_here;
      if (target.starts_at == -1 || candidate > target.best_path_score) {
        target.best_path_score = static_cast<float>(candidate);
        target.starts_at = static_cast<int64_t>(starts_at);
        target.id = id;
      }
      if (length == mblen) has_single_node = true;
    }
    if (!has_single_node) {
      BestPathNode& target = best[starts_at + mblen];
      const float candidate = unk_score + till_here;
      if (target.starts_at == -1 || candidate > target.best_path_score) {
        target.best_path_score = candidate;
        target.starts_at = static_cast<int64_t>(starts_at);
        target.id = unk_id;
      }
    }
    starts_at += mblen;
  }
  const size_t first = out->size();
  size_t ends_at = size;
  while (ends_at > 0) {
    const BestPathNode& node = best[ends_at];
    // Every character boundary is reached (by the unknown piece at
    // worst); this only guards a broken invariant.
    if (node.starts_at < 0) break;
    const size_t start = static_cast<size_t>(node.starts_at);
    out->emplace_back(text.substr(start, ends_at - start), node.id);
    ends_at = start;
  }
  std::reverse(out->begin() + static_cast<std::ptrdiff_t>(first), out->end());
}

// word::Model: SplitIntoWords (a new word at the start and at every "▁"),
// each word one piece or unknown.
void SentencePieceModel::Impl::EncodeWord(std::string_view text,
                                          Result* out) const {
  size_t word_begin = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t mblen = std::min(OneCharLen(text[pos]), text.size() - pos);
    if (pos > 0 && text.compare(pos, mblen, kMetaspaceMark) == 0) {
      const std::string_view word = text.substr(word_begin, pos - word_begin);
      out->emplace_back(word, PieceToId(word));
      word_begin = pos;
    }
    pos += mblen;
  }
  if (pos > word_begin) {
    const std::string_view word = text.substr(word_begin);
    out->emplace_back(word, PieceToId(word));
  }
}

// character::Model: one piece per character (or user-defined symbol).
void SentencePieceModel::Impl::EncodeChar(std::string_view text,
                                          Result* out) const {
  while (!text.empty()) {
    bool found = false;
    const size_t length = PrefixMatch(text, &found);
    const std::string_view w = text.substr(0, length);
    out->emplace_back(w, PieceToId(w));
    text.remove_prefix(length);
  }
}

void SentencePieceModel::Impl::AppendIds(const Result& result,
                                         std::vector<int32_t>* ids) const {
  bool previous_unknown = false;
  for (const auto& [w, id] : result) {
    const PieceType t = pieces[id].type;
    const bool unknown = t == PieceType::kUnknown;
    if (t == PieceType::kControl) {
      ids->push_back(id);
    } else if (unknown && byte_fallback) {
      for (char b : w) ids->push_back(byte_ids[static_cast<uint8_t>(b)]);
    } else if (!(unknown && previous_unknown)) {
      // A run of unknown pieces is one unknown id.
      ids->push_back(id);
    }
    previous_unknown = unknown;
  }
}

void SentencePieceModel::Impl::EncodeNormalized(
    std::string_view text, std::vector<int32_t>* ids) const {
  Result result;
  switch (model_type) {
    case ModelType::kUnigram:
      EncodeUnigram(text, &result);
      break;
    case ModelType::kBpe:
      EncodeBpe(text, &result);
      break;
    case ModelType::kWord:
      EncodeWord(text, &result);
      break;
    case ModelType::kChar:
      EncodeChar(text, &result);
      break;
  }
  AppendIds(result, ids);
}

SentencePieceModel::SentencePieceModel(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}
SentencePieceModel::~SentencePieceModel() = default;

std::unique_ptr<SentencePieceModel> SentencePieceModel::Parse(
    std::string_view bytes, std::string* error) {
  auto impl = std::make_unique<Impl>();
  if (!impl->ParseModelProto(bytes, error) || !impl->Initialize(error)) {
    return nullptr;
  }
  return std::unique_ptr<SentencePieceModel>(
      new SentencePieceModel(std::move(impl)));
}

void SentencePieceModel::Encode(std::string_view text,
                                std::vector<int32_t>* ids) const {
  const Impl& m = *impl_;
  std::string normalized;
  m.Normalize(text, &normalized);
  if (!m.split_at_space_symbol) {
    m.EncodeNormalized(normalized, ids);
    return;
  }
  const std::string_view all = normalized;
  for (size_t begin = 0; begin < all.size();) {
    const size_t end = m.cuts.NextCut(all, begin);
    const std::string_view segment = all.substr(begin, end - begin);
    begin = end;
    if (segment.size() > kMaxCachedBytes) {
      m.EncodeNormalized(segment, ids);
      continue;
    }
    const std::string key(segment);
    {
      std::lock_guard<std::mutex> lock(m.cache_mutex);
      auto it = m.cache.find(key);
      if (it != m.cache.end()) {
        ids->insert(ids->end(), it->second.begin(), it->second.end());
        continue;
      }
    }
    const size_t first = ids->size();
    m.EncodeNormalized(segment, ids);
    std::vector<int32_t> encoded(
        ids->begin() + static_cast<std::ptrdiff_t>(first), ids->end());
    std::lock_guard<std::mutex> lock(m.cache_mutex);
    if (m.cache.size() >= kMaxCacheEntries) m.cache.clear();
    m.cache.emplace(key, std::move(encoded));
  }
}

int32_t SentencePieceModel::size() const {
  return static_cast<int32_t>(impl_->pieces.size());
}

const std::string& SentencePieceModel::piece(int32_t id) const {
  return impl_->pieces[id].text;
}

SentencePieceModel::PieceType SentencePieceModel::type(int32_t id) const {
  return impl_->pieces[id].type;
}

int32_t SentencePieceModel::bos_id() const {
  const int32_t id = impl_->PieceToId(impl_->bos_piece);
  return impl_->pieces[id].type == PieceType::kControl ? id : -1;
}

bool SentencePieceModel::adds_prefix_space() const {
  return impl_->add_dummy_prefix && !impl_->treat_whitespace_as_suffix;
}

}  // namespace halftime::tokenizer
