#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>
#include <unordered_map>
#include <utility>

#include "tokenizer/regex.h"
#include "tokenizer/text.h"

namespace halftime::tokenizer {
namespace {

using Json = nlohmann::json;

// Ids past this are refused: real vocabularies stay under 300k, and the
// id-to-token table is sized by the largest id (64 MiB of empty strings at
// worst, for a hostile file).
constexpr int64_t kMaxId = (int64_t{1} << 21) - 1;
// Real files nest five deep; a pathological nesting is refused before the
// recursive parts of the JSON library see it.
constexpr int kMaxJsonDepth = 64;
// Pre-tokens longer than this are not cached (as in Hugging Face's BPE).
constexpr size_t kMaxCachedWordBytes = 256;
// The cache is dropped when it grows past this many pre-tokens.
constexpr size_t kMaxCacheEntries = 1 << 18;

// GPT-2's pre-tokenizer regex, which ByteLevel uses when use_regex is true.
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

enum class SplitBehavior {
  kRemoved,
  kIsolated,
  kMergedWithPrevious,
  kMergedWithNext,
  kContiguous
};

struct PreTokenizerStep {
  // A Split step when `regex` is set, otherwise the ByteLevel step.
  std::unique_ptr<Regex> regex;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;
};

struct AddedToken {
  int32_t id = 0;
  std::string content;  // As matched: NFC-normalized when `normalized`.
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = false;
};

// Leftmost-longest matching of a set of added tokens (few, short).
class AddedTokenMatcher {
 public:
  void Add(const AddedToken* token) {
    auto& bucket = by_first_byte_[static_cast<uint8_t>(token->content[0])];
    bucket.push_back(token);
    std::stable_sort(bucket.begin(), bucket.end(),
                     [](const AddedToken* a, const AddedToken* b) {
                       return a->content.size() > b->content.size();
                     });
    empty_ = false;
  }
  bool empty() const { return empty_; }
  // The first token at or after `from`, longest there; null when none.
  const AddedToken* Find(std::string_view text, size_t from, size_t* at) const {
    for (size_t pos = from; pos < text.size(); ++pos) {
      const auto& bucket = by_first_byte_[static_cast<uint8_t>(text[pos])];
      for (const AddedToken* token : bucket) {
        if (text.compare(pos, token->content.size(), token->content) == 0) {
          *at = pos;
          return token;
        }
      }
    }
    return nullptr;
  }

 private:
  std::array<std::vector<const AddedToken*>, 256> by_first_byte_;
  bool empty_ = true;
};

// A piece of the input: text still to encode, or an added token's id.
struct Segment {
  std::string text;
  int32_t added_id = -1;
};

struct MergeTarget {
  uint32_t rank;
  int32_t id;
};

std::string Quote(std::string_view s) {
  return Json(std::string(s))
      .dump(-1, ' ', false, Json::error_handler_t::replace);
}

// The deepest nesting of arrays and objects in `text`, strings skipped.
int JsonDepth(std::string_view text) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

}  // namespace

struct Tokenizer::Impl {
  std::string name;
  bool nfc = false;
  std::vector<PreTokenizerStep> pre_tokenizer;
  // Model: the raw bytes of each byte-level vocabulary token -> id.
  std::unordered_map<std::string, int32_t> vocab;
  std::array<int32_t, 256> byte_ids{};
  std::unordered_map<uint64_t, MergeTarget> merges;
  bool ignore_merges = false;
  int32_t unk_id = -1;
  bool fuse_unk = false;
  // Every token as tokenizer.json spells it, by id (vocabulary, then added
  // tokens over it).
  std::vector<std::string> id_to_token;
  std::vector<bool> is_added;
  std::vector<bool> is_special;
  std::vector<AddedToken> added_tokens;
  AddedTokenMatcher raw_matcher;
  AddedTokenMatcher normalized_matcher;
  // TemplateProcessing "single": ids before and after the sequence.
  std::vector<int32_t> template_prefix;
  std::vector<int32_t> template_suffix;
  bool byte_level_decoder = false;

  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  bool ParseJson(const Json& root, std::string* error);
  bool ParseNormalizer(const Json& j, std::string* error);
  bool ParsePreTokenizer(const Json& j, const std::string& field,
                         std::string* error);
  bool ParseModel(const Json& j, std::string* error);
  bool ParseAddedTokens(const Json& j, std::string* error);
  bool ParsePostProcessor(const Json& j, const std::string& field,
                          std::string* error);
  bool ParseDecoder(const Json& j, std::string* error);

  bool Fail(const std::string& field, const std::string& what,
            std::string* error) const {
    *error = name + ": " + field + ": " + what;
    return false;
  }

  void SplitOnAddedTokens(const AddedTokenMatcher& matcher,
                          std::string_view text,
                          std::vector<Segment>* out) const;
  bool PreTokenize(std::string text, std::vector<std::string>* words,
                   std::string* error) const;
  void EncodeWord(const std::string& word, std::vector<int32_t>* ids) const;
  void MergeWord(std::string_view word, std::vector<int32_t>* ids) const;
};

namespace {

// Reads an optional boolean field; absent or null gives `fallback`.
bool GetBool(const Json& j, const char* key, bool fallback, bool* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    *out = fallback;
    return true;
  }
  if (!it->is_boolean()) return false;
  *out = it->get<bool>();
  return true;
}

// An id in [0, kMaxId]; false for anything else (a float, a negative or
// huge number, another type).
bool GetId(const Json& j, int32_t* out) {
  if (j.is_number_unsigned()) {
    const uint64_t v = j.get<uint64_t>();
    if (v > static_cast<uint64_t>(kMaxId)) return false;
    *out = static_cast<int32_t>(v);
    return true;
  }
  if (j.is_number_integer()) {
    const int64_t v = j.get<int64_t>();
    if (v < 0 || v > kMaxId) return false;
    *out = static_cast<int32_t>(v);
    return true;
  }
  return false;
}

const std::string* TypeOf(const Json& j) {
  if (!j.is_object()) return nullptr;
  auto it = j.find("type");
  if (it == j.end() || !it->is_string()) return nullptr;
  return it->get_ptr<const std::string*>();
}

// The raw bytes a byte-level token stands for; false when a character is
// not one of the 256 (such a token can never be produced by encoding).
bool ByteLevelToBytes(std::string_view token, std::string* bytes) {
  bytes->clear();
  size_t pos = 0;
  while (pos < token.size()) {
    const int b = CharToByte(NextCodePoint(token, &pos));
    if (b < 0) return false;
    bytes->push_back(static_cast<char>(b));
  }
  return true;
}

}  // namespace

bool Tokenizer::Impl::ParseNormalizer(const Json& j, std::string* error) {
  if (j.is_null()) return true;
  const std::string* type = TypeOf(j);
  if (type == nullptr) {
    return Fail("normalizer", "expected null or an object with a string type",
                error);
  }
  if (*type == "NFC") {
    nfc = true;
    return true;
  }
  if (*type == "Sequence") {
    auto it = j.find("normalizers");
    if (it == j.end() || !it->is_array()) {
      return Fail("normalizer.normalizers", "expected an array", error);
    }
    for (const Json& step : *it) {
      const std::string* step_type = TypeOf(step);
      if (step_type == nullptr || *step_type != "NFC") {
        return Fail("normalizer.normalizers",
                    "type " + (step_type ? *step_type : "(missing)") +
                        " is not supported (supported: NFC)",
                    error);
      }
      nfc = true;
    }
    return true;
  }
  return Fail("normalizer.type",
              *type + " is not supported (supported: NFC, Sequence of NFC)",
              error);
}

bool Tokenizer::Impl::ParsePreTokenizer(const Json& j, const std::string& field,
                                        std::string* error) {
  const std::string* type = TypeOf(j);
  if (type == nullptr) {
    return Fail(field, "expected an object with a string type", error);
  }
  if (!pre_tokenizer.empty() && !pre_tokenizer.back().regex) {
    return Fail(field,
                "a step after ByteLevel is not supported (ByteLevel must be "
                "last)",
                error);
  }
  if (*type == "Sequence") {
    auto it = j.find("pretokenizers");
    if (it == j.end() || !it->is_array()) {
      return Fail(field + ".pretokenizers", "expected an array", error);
    }
    for (size_t i = 0; i < it->size(); ++i) {
      if (!ParsePreTokenizer(
              (*it)[i], field + ".pretokenizers[" + std::to_string(i) + "]",
              error)) {
        return false;
      }
    }
    return true;
  }
  if (*type == "ByteLevel") {
    bool use_regex = true;
    PreTokenizerStep step;
    if (!GetBool(j, "add_prefix_space", true, &step.add_prefix_space)) {
      return Fail(field + ".add_prefix_space", "expected a boolean", error);
    }
    if (!GetBool(j, "use_regex", true, &use_regex)) {
      return Fail(field + ".use_regex", "expected a boolean", error);
    }
    if (use_regex) {
      // The GPT-2 split comes first, then the byte-level step.
      PreTokenizerStep split;
      std::string regex_error;
      split.regex = Regex::Compile(kGpt2Pattern, false, &regex_error);
      if (!split.regex) return Fail(field, regex_error, error);
      split.behavior = SplitBehavior::kIsolated;
      // The prefix space goes before the split.
      split.add_prefix_space = step.add_prefix_space;
      step.add_prefix_space = false;
      pre_tokenizer.push_back(std::move(split));
    }
    pre_tokenizer.push_back(std::move(step));
    return true;
  }
  if (*type == "Split") {
    PreTokenizerStep step;
    auto pattern = j.find("pattern");
    const Json* text = nullptr;
    bool literal = false;
    if (pattern != j.end() && pattern->is_object()) {
      if (auto r = pattern->find("Regex"); r != pattern->end()) {
        text = &*r;
      } else if (auto s = pattern->find("String"); s != pattern->end()) {
        text = &*s;
        literal = true;
      }
    }
    if (text == nullptr || !text->is_string()) {
      return Fail(field + ".pattern",
                  "expected {\"Regex\": string} or {\"String\": string}",
                  error);
    }
    std::string regex_error;
    step.regex = Regex::Compile(text->get_ref<const std::string&>(), literal,
                                &regex_error);
    if (!step.regex) return Fail(field + ".pattern", regex_error, error);
    auto behavior = j.find("behavior");
    if (behavior == j.end() || !behavior->is_string()) {
      return Fail(field + ".behavior", "expected a string", error);
    }
    const std::string& b = behavior->get_ref<const std::string&>();
    if (b == "Removed") {
      step.behavior = SplitBehavior::kRemoved;
    } else if (b == "Isolated") {
      step.behavior = SplitBehavior::kIsolated;
    } else if (b == "MergedWithPrevious") {
      step.behavior = SplitBehavior::kMergedWithPrevious;
    } else if (b == "MergedWithNext") {
      step.behavior = SplitBehavior::kMergedWithNext;
    } else if (b == "Contiguous") {
      step.behavior = SplitBehavior::kContiguous;
    } else {
      return Fail(field + ".behavior", Quote(b) + " is not a split behavior",
                  error);
    }
    if (!GetBool(j, "invert", false, &step.invert)) {
      return Fail(field + ".invert", "expected a boolean", error);
    }
    pre_tokenizer.push_back(std::move(step));
    return true;
  }
  return Fail(field + ".type",
              *type +
                  " is not supported (supported: ByteLevel, Split, "
                  "Sequence)",
              error);
}

bool Tokenizer::Impl::ParseModel(const Json& j, std::string* error) {
  if (!j.is_object()) return Fail("model", "expected an object", error);
  if (auto type = j.find("type"); type != j.end()) {
    if (!type->is_string()) {
      return Fail("model.type", "expected a string", error);
    }
    if (type->get_ref<const std::string&>() != "BPE") {
      *error = name + ": model.type " + type->get_ref<const std::string&>() +
               " is not supported (supported: BPE)";
      return false;
    }
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_string()) {
      return Fail(std::string("model.") + key, "expected a string", error);
    }
    if (!it->get_ref<const std::string&>().empty()) {
      return Fail(std::string("model.") + key,
                  "a non-empty value is not supported", error);
    }
  }
  if (auto it = j.find("dropout"); it != j.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() != 0.0) {
      return Fail("model.dropout", "only null (no dropout) is supported",
                  error);
    }
  }
  bool byte_fallback = false;
  if (!GetBool(j, "byte_fallback", false, &byte_fallback)) {
    return Fail("model.byte_fallback", "expected a boolean", error);
  }
  if (byte_fallback) {
    return Fail("model.byte_fallback", "true is not supported", error);
  }
  if (!GetBool(j, "ignore_merges", false, &ignore_merges)) {
    return Fail("model.ignore_merges", "expected a boolean", error);
  }
  if (!GetBool(j, "fuse_unk", false, &fuse_unk)) {
    return Fail("model.fuse_unk", "expected a boolean", error);
  }

  auto vocab_json = j.find("vocab");
  if (vocab_json == j.end() || !vocab_json->is_object()) {
    return Fail("model.vocab", "expected an object of token: id", error);
  }
  // Spelled token -> id, for the merges.
  std::unordered_map<std::string_view, int32_t> spelled;
  spelled.reserve(vocab_json->size());
  std::string bytes;
  for (auto it = vocab_json->begin(); it != vocab_json->end(); ++it) {
    int32_t id = 0;
    if (!GetId(it.value(), &id)) {
      return Fail("model.vocab[" + Quote(it.key()) + "]",
                  "expected an integer id in [0, " + std::to_string(kMaxId) +
                      "], got " + it.value().dump(),
                  error);
    }
    if (static_cast<size_t>(id) >= id_to_token.size()) {
      id_to_token.resize(static_cast<size_t>(id) + 1);
    }
    if (!id_to_token[id].empty()) {
      return Fail("model.vocab[" + Quote(it.key()) + "]",
                  "id " + std::to_string(id) + " is also given to " +
                      Quote(id_to_token[id]),
                  error);
    }
    if (it.key().empty()) {
      return Fail("model.vocab", "an empty token", error);
    }
    id_to_token[id] = it.key();
    spelled.emplace(it.key(), id);
    if (ByteLevelToBytes(it.key(), &bytes)) vocab.emplace(bytes, id);
  }
  byte_ids.fill(-1);
  for (int b = 0; b < 256; ++b) {
    auto it = vocab.find(std::string(1, static_cast<char>(b)));
    if (it != vocab.end()) byte_ids[b] = it->second;
  }
  if (auto it = j.find("unk_token"); it != j.end() && !it->is_null()) {
    if (!it->is_string()) {
      return Fail("model.unk_token", "expected a string or null", error);
    }
    auto found = spelled.find(it->get_ref<const std::string&>());
    if (found == spelled.end()) {
      return Fail("model.unk_token",
                  Quote(it->get_ref<const std::string&>()) +
                      " is not in the vocabulary",
                  error);
    }
    unk_id = found->second;
  }

  auto merges_json = j.find("merges");
  if (merges_json == j.end() || !merges_json->is_array()) {
    return Fail("model.merges", "expected an array", error);
  }
  merges.reserve(merges_json->size());
  std::string joined;
  for (size_t rank = 0; rank < merges_json->size(); ++rank) {
    const Json& merge = (*merges_json)[rank];
    const std::string field = "model.merges[" + std::to_string(rank) + "]";
    std::string_view left, right;
    if (merge.is_string()) {
      const std::string& s = merge.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos ||
          s.find(' ', space + 1) != std::string::npos) {
        return Fail(field,
                    "expected \"a b\" (two tokens, one space), got " + Quote(s),
                    error);
      }
      left = std::string_view(s).substr(0, space);
      right = std::string_view(s).substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      left = merge[0].get_ref<const std::string&>();
      right = merge[1].get_ref<const std::string&>();
    } else {
      return Fail(field, "expected \"a b\" or [\"a\", \"b\"]", error);
    }
    auto a = spelled.find(left);
    auto b = spelled.find(right);
    for (auto [it, token] : {std::pair{a, left}, std::pair{b, right}}) {
      if (it == spelled.end()) {
        return Fail(field,
                    "token " + Quote(token) + " is not in the vocabulary",
                    error);
      }
    }
    joined.assign(left);
    joined.append(right);
    auto merged = spelled.find(joined);
    if (merged == spelled.end()) {
      return Fail(
          field,
          "the merged token " + Quote(joined) + " is not in the vocabulary",
          error);
    }
    const uint64_t key = (static_cast<uint64_t>(a->second) << 32) |
                         static_cast<uint32_t>(b->second);
    // A pair given twice keeps its last rank, as Hugging Face's map does.
    merges[key] = MergeTarget{static_cast<uint32_t>(rank), merged->second};
  }
  return true;
}

bool Tokenizer::Impl::ParseAddedTokens(const Json& j, std::string* error) {
  if (j.is_null()) return true;
  if (!j.is_array()) return Fail("added_tokens", "expected an array", error);
  added_tokens.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string field = "added_tokens[" + std::to_string(i) + "]";
    const Json& t = j[i];
    if (!t.is_object()) return Fail(field, "expected an object", error);
    AddedToken token;
    auto id = t.find("id");
    if (id == t.end() || !GetId(*id, &token.id)) {
      return Fail(field + ".id",
                  "expected an integer in [0, " + std::to_string(kMaxId) + "]",
                  error);
    }
    auto content = t.find("content");
    if (content == t.end() || !content->is_string() ||
        content->get_ref<const std::string&>().empty()) {
      return Fail(field + ".content", "expected a non-empty string", error);
    }
    token.content = content->get_ref<const std::string&>();
    size_t bad = 0;
    if (!IsValidUtf8(token.content, &bad)) {
      return Fail(field + ".content", "invalid UTF-8", error);
    }
    bool ok = GetBool(t, "special", false, &token.special) &&
              GetBool(t, "lstrip", false, &token.lstrip) &&
              GetBool(t, "rstrip", false, &token.rstrip) &&
              GetBool(t, "single_word", false, &token.single_word) &&
              GetBool(t, "normalized", !token.special, &token.normalized);
    if (!ok) {
      return Fail(field,
                  "special, lstrip, rstrip, single_word and normalized must "
                  "be booleans",
                  error);
    }
    if (token.normalized && nfc) {
      std::string normalized, nfc_error;
      if (!NfcNormalize(token.content, &normalized, &nfc_error)) {
        return Fail(field + ".content", nfc_error, error);
      }
      token.content = std::move(normalized);
    }
    if (static_cast<size_t>(token.id) >= id_to_token.size()) {
      id_to_token.resize(static_cast<size_t>(token.id) + 1);
    }
    id_to_token[token.id] = content->get_ref<const std::string&>();
    added_tokens.push_back(std::move(token));
  }
  is_added.assign(id_to_token.size(), false);
  is_special.assign(id_to_token.size(), false);
  for (const AddedToken& token : added_tokens) {
    is_added[token.id] = true;
    is_special[token.id] = token.special;
    (token.normalized ? normalized_matcher : raw_matcher).Add(&token);
  }
  return true;
}

bool Tokenizer::Impl::ParsePostProcessor(const Json& j,
                                         const std::string& field,
                                         std::string* error) {
  if (j.is_null()) return true;
  const std::string* type = TypeOf(j);
  if (type == nullptr) {
    return Fail(field, "expected null or an object with a string type", error);
  }
  // ByteLevel only adjusts offsets, which are not computed here.
  if (*type == "ByteLevel") return true;
  if (*type == "Sequence") {
    auto it = j.find("processors");
    if (it == j.end() || !it->is_array()) {
      return Fail(field + ".processors", "expected an array", error);
    }
    for (size_t i = 0; i < it->size(); ++i) {
      if (!ParsePostProcessor((*it)[i],
                              field + ".processors[" + std::to_string(i) + "]",
                              error)) {
        return false;
      }
    }
    return true;
  }
  if (*type != "TemplateProcessing") {
    return Fail(field + ".type",
                *type +
                    " is not supported (supported: ByteLevel, "
                    "TemplateProcessing, Sequence)",
                error);
  }
  if (!template_prefix.empty() || !template_suffix.empty()) {
    return Fail(field, "a second TemplateProcessing is not supported", error);
  }
  auto single = j.find("single");
  auto specials = j.find("special_tokens");
  if (single == j.end() || !single->is_array()) {
    return Fail(field + ".single", "expected an array", error);
  }
  if (specials == j.end() || !specials->is_object()) {
    return Fail(field + ".special_tokens", "expected an object", error);
  }
  bool seen_sequence = false;
  for (size_t i = 0; i < single->size(); ++i) {
    const Json& piece = (*single)[i];
    const std::string piece_field =
        field + ".single[" + std::to_string(i) + "]";
    if (!piece.is_object())
      return Fail(piece_field, "expected an object", error);
    if (auto seq = piece.find("Sequence"); seq != piece.end()) {
      auto id = seq->is_object() ? seq->find("id") : seq->end();
      if (!seq->is_object() || id == seq->end() || *id != "A" ||
          seen_sequence) {
        return Fail(piece_field, "expected one {\"Sequence\": {\"id\": \"A\"}}",
                    error);
      }
      seen_sequence = true;
      continue;
    }
    auto special = piece.find("SpecialToken");
    auto id = special != piece.end() && special->is_object()
                  ? special->find("id")
                  : piece.end();
    if (special == piece.end() || !special->is_object() ||
        id == special->end() || !id->is_string()) {
      return Fail(piece_field,
                  "expected {\"Sequence\": ...} or {\"SpecialToken\": {\"id\": "
                  "string}}",
                  error);
    }
    auto entry = specials->find(id->get_ref<const std::string&>());
    auto ids = entry != specials->end() && entry->is_object()
                   ? entry->find("ids")
                   : specials->end();
    if (entry == specials->end() || !entry->is_object() ||
        ids == entry->end() || !ids->is_array()) {
      return Fail(field + ".special_tokens[" +
                      Quote(id->get_ref<const std::string&>()) + "]",
                  "expected an object with an ids array", error);
    }
    for (const Json& value : *ids) {
      int32_t token_id = 0;
      if (!GetId(value, &token_id)) {
        return Fail(field + ".special_tokens[" +
                        Quote(id->get_ref<const std::string&>()) + "].ids",
                    "expected integers in [0, " + std::to_string(kMaxId) + "]",
                    error);
      }
      (seen_sequence ? template_suffix : template_prefix).push_back(token_id);
    }
  }
  if (!seen_sequence) {
    return Fail(field + ".single", "has no {\"Sequence\": {\"id\": \"A\"}}",
                error);
  }
  return true;
}

bool Tokenizer::Impl::ParseDecoder(const Json& j, std::string* error) {
  if (j.is_null()) return true;
  const std::string* type = TypeOf(j);
  if (type == nullptr) {
    return Fail("decoder", "expected null or an object with a string type",
                error);
  }
  if (*type != "ByteLevel") {
    return Fail("decoder.type",
                *type + " is not supported (supported: ByteLevel)", error);
  }
  byte_level_decoder = true;
  return true;
}

bool Tokenizer::Impl::ParseJson(const Json& root, std::string* error) {
  if (!root.is_object()) {
    *error = name + ": expected a JSON object at the top level";
    return false;
  }
  static const Json kNull;
  const auto field = [&](const char* key) -> const Json& {
    auto it = root.find(key);
    return it == root.end() ? kNull : *it;
  };
  if (auto it = root.find("model"); it == root.end()) {
    return Fail("model", "missing", error);
  }
  if (!ParseNormalizer(field("normalizer"), error)) return false;
  const Json& pre = field("pre_tokenizer");
  if (pre.is_null()) {
    return Fail("pre_tokenizer",
                "null is not supported (a byte-level BPE needs a ByteLevel "
                "pre-tokenizer)",
                error);
  }
  if (!ParsePreTokenizer(pre, "pre_tokenizer", error)) return false;
  if (pre_tokenizer.empty() || pre_tokenizer.back().regex) {
    return Fail("pre_tokenizer",
                "no ByteLevel step (only byte-level BPE is supported)", error);
  }
  if (!ParseModel(field("model"), error)) return false;
  if (!ParseAddedTokens(field("added_tokens"), error)) return false;
  if (!ParsePostProcessor(field("post_processor"), "post_processor", error)) {
    return false;
  }
  for (int32_t id : template_prefix) {
    if (static_cast<size_t>(id) >= id_to_token.size() ||
        id_to_token[id].empty()) {
      return Fail("post_processor",
                  "special token id " + std::to_string(id) +
                      " is not in the vocabulary",
                  error);
    }
  }
  for (int32_t id : template_suffix) {
    if (static_cast<size_t>(id) >= id_to_token.size() ||
        id_to_token[id].empty()) {
      return Fail("post_processor",
                  "special token id " + std::to_string(id) +
                      " is not in the vocabulary",
                  error);
    }
  }
  return ParseDecoder(field("decoder"), error);
}

void Tokenizer::Impl::SplitOnAddedTokens(const AddedTokenMatcher& matcher,
                                         std::string_view text,
                                         std::vector<Segment>* out) const {
  if (matcher.empty()) {
    if (!text.empty()) out->push_back(Segment{std::string(text), -1});
    return;
  }
  // Hugging Face's AddedVocabulary::find_matches: leftmost-longest matches,
  // the search going on after each match's own end.
  size_t done = 0;    // Text before this is in `out`.
  size_t search = 0;  // Where the next search starts.
  size_t at = 0;
  while (const AddedToken* token = matcher.Find(text, search, &at)) {
    size_t start = at;
    size_t stop = at + token->content.size();
    search = stop;
    if (token->single_word) {
      size_t ignored;
      const bool space_before = start == 0 || !IsAlphanumeric(PreviousCodePoint(
                                                  text, start, &ignored));
      size_t next = stop;
      const bool space_after =
          stop == text.size() || !IsAlphanumeric(NextCodePoint(text, &next));
      if (!space_before || !space_after) continue;
    }
    if (token->lstrip) {
      size_t new_start = start;
      while (new_start > 0) {
        size_t previous;
        if (!IsWhitespace(PreviousCodePoint(text, new_start, &previous))) break;
        new_start = previous;
      }
      start = std::max(new_start, done);
    }
    if (token->rstrip) {
      while (stop < text.size()) {
        size_t next = stop;
        if (!IsWhitespace(NextCodePoint(text, &next))) break;
        stop = next;
      }
    }
    if (done < start) {
      out->push_back(Segment{std::string(text.substr(done, start - done)), -1});
    }
    out->push_back(Segment{std::string(), token->id});
    done = stop;
  }
  if (done < text.size()) {
    out->push_back(Segment{std::string(text.substr(done)), -1});
  }
}

bool Tokenizer::Impl::PreTokenize(std::string text,
                                  std::vector<std::string>* words,
                                  std::string* error) const {
  std::vector<std::string> pieces;
  pieces.push_back(std::move(text));
  std::vector<std::string> next;
  std::vector<std::pair<size_t, size_t>> matches;
  // (begin, end, is_delimiter) covering a piece, as Hugging Face's
  // Pattern::find_matches gives them.
  std::vector<std::tuple<size_t, size_t, bool>> spans;
  for (const PreTokenizerStep& step : pre_tokenizer) {
    if (step.add_prefix_space) {
      for (std::string& piece : pieces) {
        if (piece.empty() || piece[0] != ' ') piece.insert(0, 1, ' ');
      }
    }
    if (!step.regex) continue;
    next.clear();
    for (const std::string& piece : pieces) {
      matches.clear();
      if (!step.regex->FindAll(piece, &matches, error)) return false;
      spans.clear();
      size_t previous = 0;
      for (auto [begin, end] : matches) {
        if (previous != begin) spans.emplace_back(previous, begin, step.invert);
        spans.emplace_back(begin, end, !step.invert);
        previous = end;
      }
      if (previous != piece.size()) {
        spans.emplace_back(previous, piece.size(), step.invert);
      }
      // Each output piece as [begin, end).
      std::vector<std::pair<size_t, size_t>> out;
      bool previous_delimiter = false;
      switch (step.behavior) {
        case SplitBehavior::kRemoved:
          for (auto [b, e, delimiter] : spans) {
            if (!delimiter) out.emplace_back(b, e);
          }
          break;
        case SplitBehavior::kIsolated:
          for (auto [b, e, delimiter] : spans) out.emplace_back(b, e);
          break;
        case SplitBehavior::kContiguous:
          for (size_t i = 0; i < spans.size(); ++i) {
            auto [b, e, delimiter] = spans[i];
            if (i > 0 && delimiter == previous_delimiter) {
              out.back().second = e;
            } else {
              out.emplace_back(b, e);
            }
            previous_delimiter = delimiter;
          }
          break;
        case SplitBehavior::kMergedWithPrevious:
          for (auto [b, e, delimiter] : spans) {
            if (delimiter && !previous_delimiter && !out.empty()) {
              out.back().second = e;
            } else {
              out.emplace_back(b, e);
            }
            previous_delimiter = delimiter;
          }
          break;
        case SplitBehavior::kMergedWithNext:
          for (size_t i = spans.size(); i-- > 0;) {
            auto [b, e, delimiter] = spans[i];
            if (delimiter && !previous_delimiter && !out.empty()) {
              out.back().first = b;
            } else {
              out.emplace_back(b, e);
            }
            previous_delimiter = delimiter;
          }
          std::reverse(out.begin(), out.end());
          break;
      }
      for (auto [b, e] : out) {
        if (e > b) next.push_back(piece.substr(b, e - b));
      }
    }
    pieces.swap(next);
  }
  for (std::string& piece : pieces) {
    if (!piece.empty()) words->push_back(std::move(piece));
  }
  return true;
}

void Tokenizer::Impl::MergeWord(std::string_view word,
                                std::vector<int32_t>* ids) const {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool gone;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  bool previous_unk = false;
  for (char c : word) {
    int32_t id = byte_ids[static_cast<uint8_t>(c)];
    if (id < 0) {
      // A byte the vocabulary lacks: the unknown token, or nothing.
      if (unk_id < 0) continue;
      if (fuse_unk && previous_unk) continue;
      id = unk_id;
      previous_unk = true;
    } else {
      previous_unk = false;
    }
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back(Symbol{id, index - 1, -1, false});
    if (index > 0) symbols[index - 1].next = index;
  }
  // Hugging Face's Word::merge_all: the lowest rank first, then the
  // leftmost position.
  struct Candidate {
    uint32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>,
                      std::greater<Candidate>>
      queue;
  const auto lookup = [&](int32_t left, int32_t right) -> const MergeTarget* {
    auto it = merges.find((static_cast<uint64_t>(left) << 32) |
                          static_cast<uint32_t>(right));
    return it == merges.end() ? nullptr : &it->second;
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const MergeTarget* m = lookup(symbols[i].id, symbols[i + 1].id)) {
      queue.push(Candidate{m->rank, static_cast<int32_t>(i), m->id});
    }
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (left.gone || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    const MergeTarget* m = lookup(left.id, right.id);
    if (m == nullptr || m->id != top.new_id) continue;
    left.id = top.new_id;
    right.gone = true;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const MergeTarget* p = lookup(symbols[left.prev].id, left.id)) {
        queue.push(Candidate{p->rank, left.prev, p->id});
      }
    }
    if (left.next >= 0) {
      if (const MergeTarget* n = lookup(left.id, symbols[left.next].id)) {
        queue.push(Candidate{n->rank, top.pos, n->id});
      }
    }
  }
  for (const Symbol& s : symbols) {
    if (!s.gone) ids->push_back(s.id);
  }
}

void Tokenizer::Impl::EncodeWord(const std::string& word,
                                 std::vector<int32_t>* ids) const {
  if (ignore_merges) {
    auto it = vocab.find(word);
    if (it != vocab.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = cache.find(word);
    if (it != cache.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = ids->size();
  MergeWord(word, ids);
  if (cacheable) {
    std::vector<int32_t> merged(ids->begin() + first, ids->end());
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (cache.size() >= kMaxCacheEntries) cache.clear();
    cache.emplace(word, std::move(merged));
  }
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::Load(const std::string& path,
                                           std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = path + ": cannot open";
    return nullptr;
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) {
    *error = path + ": read failed";
    return nullptr;
  }
  return Parse(contents.str(), path, error);
}

std::unique_ptr<Tokenizer> Tokenizer::Parse(std::string_view json_text,
                                            std::string_view name,
                                            std::string* error) {
  auto impl = std::make_unique<Impl>();
  impl->name = std::string(name);
  if (JsonDepth(json_text) > kMaxJsonDepth) {
    *error = impl->name + ": JSON nested deeper than " +
             std::to_string(kMaxJsonDepth) + " levels";
    return nullptr;
  }
  try {
    Json root = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
    if (root.is_discarded()) {
      // Parse again with exceptions only to get the position and reason.
      try {
        Json again = Json::parse(json_text);
      } catch (const Json::exception& e) {
        *error = impl->name + ": invalid JSON: " + e.what();
        return nullptr;
      }
      *error = impl->name + ": invalid JSON";
      return nullptr;
    }
    if (!impl->ParseJson(root, error)) return nullptr;
  } catch (const std::exception& e) {
    // The checks above should leave nothing to throw; this keeps a missed
    // case an error rather than a crash.
    *error = impl->name + ": " + e.what();
    return nullptr;
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

bool Tokenizer::Encode(std::string_view text, bool add_special_tokens,
                       std::vector<int32_t>* ids, std::string* error) const {
  ids->clear();
  size_t bad_offset = 0;
  if (!IsValidUtf8(text, &bad_offset)) {
    char byte[8];
    std::snprintf(byte, sizeof(byte), "0x%02X",
                  static_cast<uint8_t>(text[bad_offset]));
    *error = "invalid UTF-8 at byte offset " + std::to_string(bad_offset) +
             " (byte " + byte + ")";
    return false;
  }
  const Impl& m = *impl_;
  if (add_special_tokens) {
    ids->insert(ids->end(), m.template_prefix.begin(), m.template_prefix.end());
  }
  std::vector<Segment> raw;
  m.SplitOnAddedTokens(m.raw_matcher, text, &raw);
  std::vector<Segment> segments;
  std::string normalized;
  std::vector<std::string> words;
  for (Segment& segment : raw) {
    if (segment.added_id >= 0) {
      ids->push_back(segment.added_id);
      continue;
    }
    if (m.nfc) {
      if (!NfcNormalize(segment.text, &normalized, error)) return false;
    } else {
      normalized.swap(segment.text);
    }
    segments.clear();
    m.SplitOnAddedTokens(m.normalized_matcher, normalized, &segments);
    for (Segment& piece : segments) {
      if (piece.added_id >= 0) {
        ids->push_back(piece.added_id);
        continue;
      }
      words.clear();
      if (!m.PreTokenize(std::move(piece.text), &words, error)) return false;
      for (const std::string& word : words) m.EncodeWord(word, ids);
    }
  }
  if (add_special_tokens) {
    ids->insert(ids->end(), m.template_suffix.begin(), m.template_suffix.end());
  }
  return true;
}

bool Tokenizer::Decode(const std::vector<int32_t>& ids,
                       bool skip_special_tokens, std::string* text,
                       std::string* error) const {
  const Impl& m = *impl_;
  std::string bytes;
  std::string token_bytes;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || static_cast<size_t>(id) >= m.id_to_token.size() ||
        m.id_to_token[id].empty()) {
      *error = "id " + std::to_string(id) + " at position " +
               std::to_string(i) + " is not in the vocabulary";
      return false;
    }
    if (skip_special_tokens && static_cast<size_t>(id) < m.is_special.size() &&
        m.is_special[id]) {
      continue;
    }
    const std::string& token = m.id_to_token[id];
    if (!m.byte_level_decoder) {
      // Without a decoder Hugging Face joins the tokens with spaces.
      if (!bytes.empty()) bytes.push_back(' ');
      bytes.append(token);
    } else if (ByteLevelToBytes(token, &token_bytes)) {
      bytes.append(token_bytes);
    } else {
      // A token with characters outside the byte table stands for itself.
      bytes.append(token);
    }
  }
  *text = Utf8Lossy(bytes);
  return true;
}

std::string Tokenizer::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->id_to_token.size()) {
    return std::string();
  }
  return impl_->id_to_token[id];
}

int32_t Tokenizer::id_limit() const {
  return static_cast<int32_t>(impl_->id_to_token.size());
}

}  // namespace halftime::tokenizer
