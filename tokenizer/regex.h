// A compiled PCRE2 pattern (UTF, Unicode properties, JIT when available)
// for the pre-tokenizers' Split steps and the GPT-2 ByteLevel regex.
// PCRE2 reads the Oniguruma patterns tokenizer.json files carry (\p{L},
// (?i:...), look-ahead) with the same meaning.
//
// Thread safety: immutable after Compile; FindAll is safe from any thread
// (each call has its own match data).

#ifndef HALFTIME_TOKENIZER_REGEX_H_
#define HALFTIME_TOKENIZER_REGEX_H_

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace halftime::tokenizer {

class Regex {
 public:
  // `literal`: match `pattern` as plain text. Null with *error on a pattern
  // PCRE2 rejects.
  static std::unique_ptr<Regex> Compile(std::string_view pattern, bool literal,
                                        std::string* error);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends the [begin, end) byte ranges of the non-overlapping matches in
  // `text` (valid UTF-8), left to right; empty matches are skipped. False
  // with *error when the engine gives up (a match or depth limit).
  bool FindAll(std::string_view text,
               std::vector<std::pair<size_t, size_t>>* matches,
               std::string* error) const;

 private:
  explicit Regex(void* code) : code_(code) {}
  void* code_;  // pcre2_code_8*
};

}  // namespace halftime::tokenizer

#endif  // HALFTIME_TOKENIZER_REGEX_H_
