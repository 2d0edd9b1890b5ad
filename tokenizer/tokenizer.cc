#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "tokenizer/byte_trie.h"
#include "tokenizer/decoder.h"
#include "tokenizer/metaspace_cut.h"
#include "tokenizer/regex.h"
#include "tokenizer/sentencepiece.h"
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
// Longer texts are refused: the merge loops index symbols with 32 bits.
constexpr size_t kMaxTextBytes = (size_t{1} << 31) - 1;

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

struct NormalizerStep {
  enum class Kind { kNfc, kPrepend, kReplace };
  Kind kind = Kind::kNfc;
  // kPrepend: the prefix. kReplace: what every match of `literal` (or of
  // `regex` when set) becomes.
  std::string text;
  std::string literal;
  std::unique_ptr<Regex> regex;
};

enum class PrependScheme { kAlways, kFirst, kNever };

struct PreTokenizerStep {
  enum class Kind { kSplit, kByteLevel, kMetaspace };
  Kind kind = Kind::kSplit;
  // kSplit.
  std::unique_ptr<Regex> regex;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  // Before the step: a space in front of each piece that lacks one (the
  // ByteLevel option, moved onto the split that ByteLevel's regex makes).
  bool add_prefix_space = false;
  // kMetaspace: spaces become `replacement`, which is put in front per
  // `prepend` and, with `split`, starts a new piece wherever it is.
  std::string replacement;
  PrependScheme prepend = PrependScheme::kAlways;
  bool split = true;
};

struct AddedToken {
  int32_t id = 0;
  std::string content;  // As matched: normalized when `normalized`.
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = false;
};

// Leftmost-longest matching of a set of added tokens (Gemma 3 has 6415,
// most starting with "<"): a trie walked from each position.
class AddedTokenMatcher {
 public:
  // Before Finish only.
  void Add(const AddedToken* token) {
    trie_.Insert(token->content, static_cast<int32_t>(tokens_.size()));
    tokens_.push_back(token);
  }
  void Finish() { trie_.Finish(); }
  bool empty() const { return tokens_.empty(); }
  // The first token at or after `from`, longest there; null when none.
  const AddedToken* Find(std::string_view text, size_t from, size_t* at) const {
    for (size_t pos = from; pos < text.size(); ++pos) {
      size_t length = 0;
      const int32_t index = trie_.LongestPrefix(text.substr(pos), &length);
      if (index >= 0) {
        *at = pos;
        return tokens_[index];
      }
    }
    return nullptr;
  }

 private:
  ByteTrie trie_;
  // By the trie's values; of two tokens with the same content the first
  // is matched (the library ignores the second).
  std::vector<const AddedToken*> tokens_;
};

// A piece of the input: text still to encode, or an added token's id.
// `at_start`: the text begins at the input's first byte (Metaspace's
// "first" prepend scheme asks).
struct Segment {
  std::string text;
  int32_t added_id = -1;
  bool at_start = false;
};

struct MergeTarget {
  uint32_t rank;
  int32_t id;
};

std::string Quote(std::string_view s) {
  return Json(std::string(s))
      .dump(-1, ' ', false, Json::error_handler_t::replace);
}

// Whether `contents` is a serialized SentencePiece ModelProto rather than
// JSON: its first byte is the tag of the pieces field (0x0A, which is also
// a JSON newline), and the first byte that is not JSON whitespace does not
// open a JSON object or array.
bool LooksLikeSentencePiece(std::string_view contents) {
  if (contents.empty() || contents[0] != '\n') return false;
  const size_t first = contents.find_first_not_of(" \t\r\n");
  return first != std::string_view::npos && contents[first] != '{' &&
         contents[first] != '[';
}

}  // namespace

struct Tokenizer::Impl {
  std::string name;
  std::vector<NormalizerStep> normalizer;
  std::vector<PreTokenizerStep> pre_tokenizer;
  // Whether the model works on bytes (the pre-tokenizer ends in ByteLevel)
  // rather than on characters (SentencePiece-kind files).
  bool byte_level = false;
  // Model: each vocabulary token -> id, keyed by its raw bytes when
  // byte-level and by its text otherwise.
  std::unordered_map<std::string, int32_t> vocab;
  std::array<int32_t, 256> byte_ids{};
  // Character models: the ids of one-character tokens, and of the
  // "<0xNN>" tokens when `byte_fallback`.
  std::array<int32_t, 128> ascii_ids{};
  std::unordered_map<char32_t, int32_t> char_ids;
  bool byte_fallback = false;
  std::array<int32_t, 256> byte_fallback_ids{};
  std::unordered_map<uint64_t, MergeTarget> merges;
  bool ignore_merges = false;
  int32_t unk_id = -1;
  bool fuse_unk = false;
  // Character models: whether pre-tokens are cut in front of "▁"s
  // (metaspace_cut.h) and the parts encoded and cached apart. Files without
  // a pre-tokenizer (Llama 2, Mistral, Gemma) hand the model whole texts;
  // this keeps that from being one uncached merge per text. Needs "▁" to
  // be a token, and merges not to be ignored (which looks whole pre-tokens
  // up).
  bool split_at_metaspace = false;
  MetaspaceCuts metaspace_cuts;
  // Every token as tokenizer.json spells it, by id (vocabulary, then added
  // tokens over it).
  std::vector<std::string> id_to_token;
  std::vector<bool> is_special;
  std::vector<AddedToken> added_tokens;
  AddedTokenMatcher raw_matcher;
  AddedTokenMatcher normalized_matcher;
  // TemplateProcessing "single" (or a tokenizer.model's BOS): ids before
  // and after the sequence.
  std::vector<int32_t> template_prefix;
  std::vector<int32_t> template_suffix;
  std::vector<DecoderStep> decoder;
  // A SentencePiece tokenizer.model, which encodes by its own rules.
  std::unique_ptr<SentencePieceModel> sentencepiece;

  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  bool ParseJson(const Json& root, std::string* error);
  bool ParseNormalizer(const Json& j, const std::string& field,
                       std::string* error);
  bool ParsePreTokenizer(const Json& j, const std::string& field,
                         std::string* error);
  bool ParseModel(const Json& j, std::string* error);
  bool ParseAddedTokens(const Json& j, std::string* error);
  bool ParsePostProcessor(const Json& j, const std::string& field,
                          std::string* error);
  bool ParseDecoder(const Json& j, const std::string& field,
                    std::string* error);
  bool ParseSentencePiece(std::string_view bytes, std::string* error);

  bool Fail(const std::string& field, const std::string& what,
            std::string* error) const {
    *error = name + ": " + field + ": " + what;
    return false;
  }

  // A Sequence's steps: each element of j[key] given to `parse` with its
  // name, field.key[i].
  template <typename Parse>
  bool ParseSequence(const Json& j, const std::string& key,
                     const std::string& field, std::string* error,
                     Parse parse) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_array()) {
      return Fail(field + "." + key, "expected an array", error);
    }
    for (size_t i = 0; i < it->size(); ++i) {
      if (!parse((*it)[i], field + "." + key + "[" + std::to_string(i) + "]")) {
        return false;
      }
    }
    return true;
  }

  bool Normalize(std::string_view text, std::string* out,
                 std::string* error) const;
  void SplitOnAddedTokens(const AddedTokenMatcher& matcher,
                          std::string_view text, bool at_start,
                          std::vector<Segment>* out) const;
  bool PreTokenize(std::string text, bool at_start,
                   std::vector<std::string>* words, std::string* error) const;
  void EncodeWord(const std::string& word, std::vector<int32_t>* ids) const;
  void EncodeCached(std::string_view word, std::vector<int32_t>* ids) const;
  void MergeWord(std::string_view word, std::vector<int32_t>* ids) const;
  // The first symbols of `word` before any merge.
  void ByteSymbols(std::string_view word, std::vector<int32_t>* out) const;
  void CharSymbols(std::string_view word, std::vector<int32_t>* out) const;
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

// A JSON string holding exactly one character (Rust's `char` fields).
bool GetChar(const Json& j, const char* key, char32_t* out) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return false;
  const std::string& s = it->get_ref<const std::string&>();
  if (s.empty()) return false;
  size_t pos = 0;
  *out = NextCodePoint(s, &pos);
  return pos == s.size();
}

// The {"String": s} or {"Regex": r} pattern of Replace steps: a non-empty
// literal in *literal, or a compiled *regex. False with *what on failure.
bool GetPattern(const Json& j, std::string* literal,
                std::unique_ptr<Regex>* regex, std::string* what) {
  auto pattern = j.find("pattern");
  if (pattern == j.end() || !pattern->is_object() || pattern->size() != 1) {
    *what = "expected {\"String\": string} or {\"Regex\": string}";
    return false;
  }
  if (auto s = pattern->find("String"); s != pattern->end() && s->is_string()) {
    *literal = s->get<std::string>();
    if (literal->empty()) {
      // The library would match the empty string between every character.
      *what = "an empty String pattern is not supported";
      return false;
    }
    return true;
  }
  if (auto r = pattern->find("Regex"); r != pattern->end() && r->is_string()) {
    *regex = Regex::Compile(r->get_ref<const std::string&>(), false, what);
    return *regex != nullptr;
  }
  *what = "expected {\"String\": string} or {\"Regex\": string}";
  return false;
}

// `text` with every match of the pattern replaced by `content`.
bool ReplaceAll(std::string_view text, const std::string& literal,
                const Regex* regex, const std::string& content,
                std::string* out, std::string* error) {
  out->clear();
  size_t done = 0;
  if (regex != nullptr) {
    std::vector<std::pair<size_t, size_t>> matches;
    if (!regex->FindAll(text, &matches, error)) return false;
    for (auto [begin, end] : matches) {
      out->append(text.substr(done, begin - done));
      out->append(content);
      done = end;
    }
  } else {
    for (size_t at = text.find(literal); at != std::string_view::npos;
         at = text.find(literal, done)) {
      out->append(text.substr(done, at - done));
      out->append(content);
      done = at + literal.size();
    }
  }
  out->append(text.substr(done));
  return true;
}

}  // namespace

bool Tokenizer::Impl::ParseNormalizer(const Json& j, const std::string& field,
                                      std::string* error) {
  if (j.is_null()) return true;
  const std::string* type = TypeOf(j);
  if (type == nullptr) {
    return Fail(field, "expected null or an object with a string type", error);
  }
  NormalizerStep step;
  if (*type == "NFC") {
    step.kind = NormalizerStep::Kind::kNfc;
  } else if (*type == "Prepend") {
    auto it = j.find("prepend");
    if (it == j.end() || !it->is_string()) {
      return Fail(field + ".prepend", "expected a string", error);
    }
    step.kind = NormalizerStep::Kind::kPrepend;
    step.text = it->get<std::string>();
  } else if (*type == "Replace") {
    std::string what;
    if (!GetPattern(j, &step.literal, &step.regex, &what)) {
      return Fail(field + ".pattern", what, error);
    }
    auto content = j.find("content");
    if (content == j.end() || !content->is_string()) {
      return Fail(field + ".content", "expected a string", error);
    }
    step.kind = NormalizerStep::Kind::kReplace;
    step.text = content->get<std::string>();
  } else if (*type == "Sequence") {
    return ParseSequence(j, "normalizers", field, error,
                         [&](const Json& step, const std::string& name) {
                           return ParseNormalizer(step, name, error);
                         });
  } else {
    return Fail(field + ".type",
                *type +
                    " is not supported (supported: NFC, Prepend, Replace, "
                    "Sequence)",
                error);
  }
  normalizer.push_back(std::move(step));
  return true;
}

bool Tokenizer::Impl::ParsePreTokenizer(const Json& j, const std::string& field,
                                        std::string* error) {
  const std::string* type = TypeOf(j);
  if (type == nullptr) {
    return Fail(field, "expected an object with a string type", error);
  }
  if (!pre_tokenizer.empty() &&
      pre_tokenizer.back().kind == PreTokenizerStep::Kind::kByteLevel) {
    return Fail(field,
                "a step after ByteLevel is not supported (ByteLevel must be "
                "last)",
                error);
  }
  if (*type == "Sequence") {
    return ParseSequence(j, "pretokenizers", field, error,
                         [&](const Json& step, const std::string& name) {
                           return ParsePreTokenizer(step, name, error);
                         });
  }
  if (*type == "ByteLevel") {
    bool use_regex = true;
    PreTokenizerStep step;
    step.kind = PreTokenizerStep::Kind::kByteLevel;
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
  if (*type == "Metaspace") {
    PreTokenizerStep step;
    step.kind = PreTokenizerStep::Kind::kMetaspace;
    char32_t replacement = 0;
    if (!GetChar(j, "replacement", &replacement)) {
      return Fail(field + ".replacement", "expected a one-character string",
                  error);
    }
    AppendUtf8(replacement, &step.replacement);
    // The library's reading: prepend_scheme defaults to "always";
    // add_prefix_space false (older files) means "never" and contradicts
    // any other scheme; split defaults to true.
    step.prepend = PrependScheme::kAlways;
    if (auto it = j.find("prepend_scheme"); it != j.end()) {
      const std::string scheme = it->is_string() ? it->get<std::string>() : "";
      if (scheme == "always") {
        step.prepend = PrependScheme::kAlways;
      } else if (scheme == "first") {
        step.prepend = PrependScheme::kFirst;
      } else if (scheme == "never") {
        step.prepend = PrependScheme::kNever;
      } else {
        return Fail(field + ".prepend_scheme",
                    "expected \"always\", \"first\" or \"never\"", error);
      }
    }
    bool add_prefix_space = true;
    if (!GetBool(j, "add_prefix_space", true, &add_prefix_space)) {
      return Fail(field + ".add_prefix_space", "expected a boolean", error);
    }
    if (!add_prefix_space && step.prepend != PrependScheme::kNever) {
      return Fail(field + ".add_prefix_space",
                  "false does not match prepend_scheme (which must then be "
                  "\"never\")",
                  error);
    }
    if (!GetBool(j, "split", true, &step.split)) {
      return Fail(field + ".split", "expected a boolean", error);
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
                  " is not supported (supported: ByteLevel, Metaspace, Split, "
                  "Sequence)",
              error);
}

bool Tokenizer::Impl::ParseModel(const Json& j, std::string* error) {
  if (!j.is_object()) return Fail("model", "expected an object", error);
  if (auto type = j.find("type"); type != j.end()) {
    if (!type->is_string()) {
      return Fail("model.type", "expected a string", error);
    }
    const std::string& t = type->get_ref<const std::string&>();
    if (t != "BPE") {
      *error =
          name + ": model.type " + t + " is not supported (supported: BPE" +
          (t == "Unigram" ? "; a Unigram model's SentencePiece tokenizer.model "
                            "loads instead"
                          : "") +
          ")";
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
  if (!GetBool(j, "byte_fallback", false, &byte_fallback)) {
    return Fail("model.byte_fallback", "expected a boolean", error);
  }
  if (byte_fallback && byte_level) {
    return Fail("model.byte_fallback",
                "true is not supported with a ByteLevel pre-tokenizer (every "
                "byte already has a token)",
                error);
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
  vocab.reserve(vocab_json->size());
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
    if (!byte_level) {
      vocab.emplace(it.key(), id);
    } else if (ByteLevelToBytes(it.key(), &bytes)) {
      vocab.emplace(bytes, id);
    }
  }
  byte_ids.fill(-1);
  ascii_ids.fill(-1);
  byte_fallback_ids.fill(-1);
  if (byte_level) {
    for (int b = 0; b < 256; ++b) {
      auto it = vocab.find(std::string(1, static_cast<char>(b)));
      if (it != vocab.end()) byte_ids[b] = it->second;
    }
  } else {
    bool metaspace_token = false;
    for (const auto& [token, id] : vocab) {
      size_t pos = 0;
      const char32_t c = NextCodePoint(token, &pos);
      if (pos == token.size()) {
        if (c < 128) {
          ascii_ids[c] = id;
        } else {
          char_ids.emplace(c, id);
        }
      }
      if (token == kMetaspaceMark) metaspace_token = true;
      metaspace_cuts.AddToken(token);
    }
    split_at_metaspace = metaspace_token && !ignore_merges;
    if (byte_fallback) {
      static constexpr char kHex[] = "0123456789ABCDEF";
      for (int b = 0; b < 256; ++b) {
        const char token[] = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>'};
        auto it = vocab.find(std::string(token, sizeof(token)));
        if (it != vocab.end()) byte_fallback_ids[b] = it->second;
      }
    }
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
    if (token.normalized) {
      // Matched against normalized text, so normalized itself (with a
      // Prepend normalizer, "▁" + content), as the library does.
      std::string normalized, normalize_error;
      if (!Normalize(token.content, &normalized, &normalize_error)) {
        return Fail(field + ".content", normalize_error, error);
      }
      if (normalized.empty()) {
        return Fail(field + ".content", "empty once normalized", error);
      }
      token.content = std::move(normalized);
    }
    if (static_cast<size_t>(token.id) >= id_to_token.size()) {
      id_to_token.resize(static_cast<size_t>(token.id) + 1);
    }
    id_to_token[token.id] = content->get_ref<const std::string&>();
    added_tokens.push_back(std::move(token));
  }
  is_special.assign(id_to_token.size(), false);
  for (const AddedToken& token : added_tokens) {
    is_special[token.id] = token.special;
    (token.normalized ? normalized_matcher : raw_matcher).Add(&token);
  }
  raw_matcher.Finish();
  normalized_matcher.Finish();
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
    return ParseSequence(j, "processors", field, error,
                         [&](const Json& step, const std::string& name) {
                           return ParsePostProcessor(step, name, error);
                         });
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

bool Tokenizer::Impl::ParseDecoder(const Json& j, const std::string& field,
                                   std::string* error) {
  if (j.is_null()) return true;
  const std::string* type = TypeOf(j);
  if (type == nullptr) {
    return Fail(field, "expected null or an object with a string type", error);
  }
  DecoderStep step;
  if (*type == "Sequence") {
    return ParseSequence(j, "decoders", field, error,
                         [&](const Json& step, const std::string& name) {
                           return ParseDecoder(step, name, error);
                         });
  } else if (*type == "ByteLevel") {
    step.kind = DecoderStep::Kind::kByteLevel;
  } else if (*type == "ByteFallback") {
    step.kind = DecoderStep::Kind::kByteFallback;
  } else if (*type == "Fuse") {
    step.kind = DecoderStep::Kind::kFuse;
  } else if (*type == "Replace") {
    step.kind = DecoderStep::Kind::kReplace;
    std::string what;
    if (!GetPattern(j, &step.literal, &step.regex, &what)) {
      return Fail(field + ".pattern", what, error);
    }
    auto content = j.find("content");
    if (content == j.end() || !content->is_string()) {
      return Fail(field + ".content", "expected a string", error);
    }
    step.content = content->get<std::string>();
  } else if (*type == "Strip") {
    step.kind = DecoderStep::Kind::kStrip;
    if (!GetChar(j, "content", &step.character)) {
      return Fail(field + ".content", "expected a one-character string", error);
    }
    for (auto [key, out] :
         {std::pair{"start", &step.start}, std::pair{"stop", &step.stop}}) {
      auto it = j.find(key);
      if (it == j.end() || !it->is_number_unsigned()) {
        return Fail(field + "." + key, "expected a non-negative integer",
                    error);
      }
      *out = it->get<size_t>();
    }
  } else if (*type == "Metaspace") {
    step.kind = DecoderStep::Kind::kMetaspace;
    if (!GetChar(j, "replacement", &step.character)) {
      return Fail(field + ".replacement", "expected a one-character string",
                  error);
    }
    // Read as the pre-tokenizer reads it: only the "never" scheme keeps
    // the first token's metaspaces as spaces.
    std::string scheme = "always";
    if (auto it = j.find("prepend_scheme"); it != j.end()) {
      scheme = it->is_string() ? it->get<std::string>() : "";
      if (scheme != "always" && scheme != "first" && scheme != "never") {
        return Fail(field + ".prepend_scheme",
                    "expected \"always\", \"first\" or \"never\"", error);
      }
    }
    bool add_prefix_space = true;
    if (!GetBool(j, "add_prefix_space", true, &add_prefix_space)) {
      return Fail(field + ".add_prefix_space", "expected a boolean", error);
    }
    if (!add_prefix_space && scheme != "never") {
      return Fail(field + ".add_prefix_space",
                  "false does not match prepend_scheme (which must then be "
                  "\"never\")",
                  error);
    }
    step.prepend = scheme != "never";
  } else {
    return Fail(field + ".type",
                *type +
                    " is not supported (supported: ByteLevel, ByteFallback, "
                    "Fuse, Metaspace, Replace, Strip, Sequence)",
                error);
  }
  decoder.push_back(std::move(step));
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
  if (!ParseNormalizer(field("normalizer"), "normalizer", error)) return false;
  const Json& pre = field("pre_tokenizer");
  if (!pre.is_null() && !ParsePreTokenizer(pre, "pre_tokenizer", error)) {
    return false;
  }
  byte_level = !pre_tokenizer.empty() &&
               pre_tokenizer.back().kind == PreTokenizerStep::Kind::kByteLevel;
  if (!ParseModel(field("model"), error)) return false;
  if (!ParseAddedTokens(field("added_tokens"), error)) return false;
  if (!ParsePostProcessor(field("post_processor"), "post_processor", error)) {
    return false;
  }
  for (const auto* ids : {&template_prefix, &template_suffix}) {
    for (int32_t id : *ids) {
      if (static_cast<size_t>(id) >= id_to_token.size() ||
          id_to_token[id].empty()) {
        return Fail("post_processor",
                    "special token id " + std::to_string(id) +
                        " is not in the vocabulary",
                    error);
      }
    }
  }
  return ParseDecoder(field("decoder"), "decoder", error);
}

bool Tokenizer::Impl::ParseSentencePiece(std::string_view bytes,
                                         std::string* error) {
  std::string what;
  sentencepiece = SentencePieceModel::Parse(bytes, &what);
  if (!sentencepiece) {
    *error = name + ": SentencePiece model: " + what;
    return false;
  }
  const SentencePieceModel& sp = *sentencepiece;
  id_to_token.resize(static_cast<size_t>(sp.size()));
  is_special.assign(id_to_token.size(), false);
  using Type = SentencePieceModel::PieceType;
  for (int32_t id = 0; id < sp.size(); ++id) {
    id_to_token[id] = sp.piece(id);
    // Hugging Face's conversion adds the unknown and control pieces (<unk>,
    // <s>, </s>) as special tokens.
    is_special[id] =
        sp.type(id) == Type::kControl || sp.type(id) == Type::kUnknown;
  }
  // BOS only, as Hugging Face's Llama conversion and the processor's
  // "bos" option add it.
  if (sp.bos_id() >= 0) template_prefix.push_back(sp.bos_id());
  // The decoder Hugging Face's Llama/Gemma conversion writes: metaspaces
  // to spaces, <0xNN> runs to text, and the space encoding put in front
  // taken off again (libsentencepiece also keeps the one a
  // treat_whitespace_as_suffix model puts behind).
  DecoderStep replace;
  replace.kind = DecoderStep::Kind::kReplace;
  replace.literal = std::string(kMetaspaceMark);
  replace.content = " ";
  decoder.push_back(std::move(replace));
  DecoderStep byte_fallback_step;
  byte_fallback_step.kind = DecoderStep::Kind::kByteFallback;
  decoder.push_back(std::move(byte_fallback_step));
  DecoderStep fuse;
  fuse.kind = DecoderStep::Kind::kFuse;
  decoder.push_back(std::move(fuse));
  if (sp.adds_prefix_space()) {
    DecoderStep strip;
    strip.kind = DecoderStep::Kind::kStrip;
    strip.character = U' ';
    strip.start = 1;
    decoder.push_back(std::move(strip));
  }
  return true;
}

bool Tokenizer::Impl::Normalize(std::string_view text, std::string* out,
                                std::string* error) const {
  out->assign(text);
  std::string next;
  for (const NormalizerStep& step : normalizer) {
    switch (step.kind) {
      case NormalizerStep::Kind::kNfc:
        if (!NfcNormalize(*out, &next, error)) return false;
        out->swap(next);
        break;
      case NormalizerStep::Kind::kPrepend:
        // Nothing goes in front of an empty string.
        if (!out->empty()) out->insert(0, step.text);
        break;
      case NormalizerStep::Kind::kReplace:
        if (!ReplaceAll(*out, step.literal, step.regex.get(), step.text, &next,
                        error)) {
          return false;
        }
        out->swap(next);
        break;
    }
  }
  return true;
}

void Tokenizer::Impl::SplitOnAddedTokens(const AddedTokenMatcher& matcher,
                                         std::string_view text, bool at_start,
                                         std::vector<Segment>* out) const {
  if (matcher.empty()) {
    if (!text.empty()) out->push_back(Segment{std::string(text), -1, at_start});
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
      out->push_back(Segment{std::string(text.substr(done, start - done)), -1,
                             at_start && done == 0});
    }
    out->push_back(Segment{std::string(), token->id, false});
    done = stop;
  }
  if (done < text.size()) {
    out->push_back(
        Segment{std::string(text.substr(done)), -1, at_start && done == 0});
  }
}

bool Tokenizer::Impl::PreTokenize(std::string text, bool at_start,
                                  std::vector<std::string>* words,
                                  std::string* error) const {
  // Each piece with whether it begins at the input's first byte.
  std::vector<std::pair<std::string, bool>> pieces;
  pieces.emplace_back(std::move(text), at_start);
  std::vector<std::pair<std::string, bool>> next;
  std::vector<std::pair<size_t, size_t>> matches;
  // (begin, end, is_delimiter) covering a piece, as Hugging Face's
  // Pattern::find_matches gives them.
  std::vector<std::tuple<size_t, size_t, bool>> spans;
  std::vector<std::pair<size_t, size_t>> out;
  for (const PreTokenizerStep& step : pre_tokenizer) {
    if (step.add_prefix_space) {
      for (auto& [piece, first] : pieces) {
        if (piece.empty() || piece[0] != ' ') piece.insert(0, 1, ' ');
      }
    }
    if (step.kind == PreTokenizerStep::Kind::kByteLevel) continue;
    next.clear();
    if (step.kind == PreTokenizerStep::Kind::kMetaspace) {
      const std::string& mark = step.replacement;
      for (auto& [piece, first] : pieces) {
        std::string replaced;
        ReplaceAll(piece, " ", nullptr, mark, &replaced, error);
        const bool prepend = !replaced.empty() &&
                             replaced.compare(0, mark.size(), mark) != 0 &&
                             (step.prepend == PrependScheme::kAlways ||
                              (step.prepend == PrependScheme::kFirst && first));
        if (prepend) replaced.insert(0, mark);
        if (!step.split) {
          next.emplace_back(std::move(replaced), first);
          continue;
        }
        // MergedWithNext on each mark: every mark starts a new piece.
        size_t begin = 0;
        for (size_t at = replaced.find(mark, 1); at != std::string::npos;
             at = replaced.find(mark, at + 1)) {
          next.emplace_back(replaced.substr(begin, at - begin),
                            first && begin == 0);
          begin = at;
        }
        if (begin < replaced.size()) {
          next.emplace_back(replaced.substr(begin), first && begin == 0);
        }
      }
      pieces.swap(next);
      continue;
    }
    for (const auto& [piece, first] : pieces) {
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
      out.clear();
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
        if (e > b) next.emplace_back(piece.substr(b, e - b), first && b == 0);
      }
    }
    pieces.swap(next);
  }
  for (auto& [piece, first] : pieces) {
    if (!piece.empty()) words->push_back(std::move(piece));
  }
  return true;
}

void Tokenizer::Impl::ByteSymbols(std::string_view word,
                                  std::vector<int32_t>* out) const {
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
    out->push_back(id);
  }
}

// Hugging Face's BPE::merge_word for characters: each character's token,
// else its bytes' "<0xNN>" tokens (byte_fallback, when all exist), else
// the unknown token (a run of them one token with fuse_unk). An unknown
// token waits until a character with a token (or the end) comes, so that
// byte tokens after it go before it, as in the library.
void Tokenizer::Impl::CharSymbols(std::string_view word,
                                  std::vector<int32_t>* out) const {
  bool pending_unk = false;
  size_t pos = 0;
  while (pos < word.size()) {
    const size_t begin = pos;
    const char32_t c = NextCodePoint(word, &pos);
    int32_t id = -1;
    if (c < 128) {
      id = ascii_ids[c];
    } else if (auto it = char_ids.find(c); it != char_ids.end()) {
      id = it->second;
    }
    if (id >= 0) {
      if (pending_unk) out->push_back(unk_id);
      pending_unk = false;
      out->push_back(id);
      continue;
    }
    if (byte_fallback) {
      bool all = true;
      for (size_t i = begin; i < pos && all; ++i) {
        all = byte_fallback_ids[static_cast<uint8_t>(word[i])] >= 0;
      }
      if (all) {
        for (size_t i = begin; i < pos; ++i) {
          out->push_back(byte_fallback_ids[static_cast<uint8_t>(word[i])]);
        }
        continue;
      }
    }
    if (unk_id < 0) continue;
    if (pending_unk && !fuse_unk) out->push_back(unk_id);
    pending_unk = true;
  }
  if (pending_unk) out->push_back(unk_id);
}

void Tokenizer::Impl::MergeWord(std::string_view word,
                                std::vector<int32_t>* ids) const {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool gone;
  };
  std::vector<int32_t> initial;
  initial.reserve(word.size());
  if (byte_level) {
    ByteSymbols(word, &initial);
  } else {
    CharSymbols(word, &initial);
  }
  std::vector<Symbol> symbols;
  symbols.reserve(initial.size());
  for (size_t i = 0; i < initial.size(); ++i) {
    const int32_t index = static_cast<int32_t>(i);
    symbols.push_back(Symbol{initial[i], index - 1,
                             i + 1 < initial.size() ? index + 1 : -1, false});
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

void Tokenizer::Impl::EncodeCached(std::string_view word,
                                   std::vector<int32_t>* ids) const {
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  std::string key;
  if (cacheable) {
    key.assign(word);
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = cache.find(key);
    if (it != cache.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = ids->size();
  MergeWord(word, ids);
  if (cacheable) {
    std::vector<int32_t> merged(
        ids->begin() + static_cast<std::ptrdiff_t>(first), ids->end());
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (cache.size() >= kMaxCacheEntries) cache.clear();
    cache.emplace(std::move(key), std::move(merged));
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
  if (!split_at_metaspace) {
    EncodeCached(word, ids);
    return;
  }
  const std::string_view all = word;
  for (size_t begin = 0; begin < all.size();) {
    const size_t end = metaspace_cuts.NextCut(all, begin);
    EncodeCached(all.substr(begin, end - begin), ids);
    begin = end;
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

std::unique_ptr<Tokenizer> Tokenizer::Parse(std::string_view contents,
                                            std::string_view name,
                                            std::string* error) {
  auto impl = std::make_unique<Impl>();
  impl->name = std::string(name);
  if (LooksLikeSentencePiece(contents)) {
    try {
      if (!impl->ParseSentencePiece(contents, error)) return nullptr;
    } catch (const std::exception& e) {
      // Only allocation can throw there; a hostile file gets an error.
      *error = impl->name + ": " + e.what();
      return nullptr;
    }
    return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
  }
  if (JsonDepth(contents, kMaxJsonDepth) > kMaxJsonDepth) {
    *error = impl->name + ": JSON nested deeper than " +
             std::to_string(kMaxJsonDepth) + " levels";
    return nullptr;
  }
  try {
    Json root = Json::parse(contents, nullptr, /*allow_exceptions=*/false);
    if (root.is_discarded()) {
      // Parse again with exceptions only to get the position and reason.
      try {
        Json again = Json::parse(contents);
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
  if (text.size() > kMaxTextBytes) {
    *error = "a text of " + std::to_string(text.size()) +
             " bytes, past the 2 GiB that one call encodes";
    return false;
  }
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
  if (m.sentencepiece) {
    m.sentencepiece->Encode(text, ids);
    return true;
  }
  std::vector<Segment> raw;
  m.SplitOnAddedTokens(m.raw_matcher, text, /*at_start=*/true, &raw);
  std::vector<Segment> segments;
  std::string normalized;
  std::vector<std::string> words;
  for (Segment& segment : raw) {
    if (segment.added_id >= 0) {
      ids->push_back(segment.added_id);
      continue;
    }
    if (m.normalizer.empty()) {
      normalized.swap(segment.text);
    } else if (!m.Normalize(segment.text, &normalized, error)) {
      return false;
    }
    segments.clear();
    m.SplitOnAddedTokens(m.normalized_matcher, normalized, segment.at_start,
                         &segments);
    for (Segment& piece : segments) {
      if (piece.added_id >= 0) {
        ids->push_back(piece.added_id);
        continue;
      }
      words.clear();
      if (!m.PreTokenize(std::move(piece.text), piece.at_start, &words,
                         error)) {
        return false;
      }
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
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
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
    tokens.push_back(m.id_to_token[id]);
  }
  return RunDecoders(m.decoder, std::move(tokens), text, error);
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
