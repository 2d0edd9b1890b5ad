#include "tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

namespace halftime::tokenizer {
namespace {

std::string PcreMessage(int code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(code, buffer, sizeof(buffer)) < 0) {
    return "PCRE2 error " + std::to_string(code);
  }
  return reinterpret_cast<const char*>(buffer);
}

// Frees match data on every path out of FindAll.
struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};

}  // namespace

std::unique_ptr<Regex> Regex::Compile(std::string_view pattern, bool literal,
                                      std::string* error) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  // PCRE2_LITERAL refuses PCRE2_UCP, which plain text does not need.
  const uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()),
                                   pattern.size(), options, &error_code,
                                   &error_offset, nullptr);
  if (code == nullptr) {
    *error =
        PcreMessage(error_code) + " at offset " + std::to_string(error_offset);
    return nullptr;
  }
  // Without JIT (unsupported CPU, or no executable memory) the interpreter
  // gives the same matches, only slower.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return std::unique_ptr<Regex>(new Regex(code));
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

bool Regex::FindAll(std::string_view text,
                    std::vector<std::pair<size_t, size_t>>* matches,
                    std::string* error) const {
  auto* code = static_cast<pcre2_code*>(code_);
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> data(
      pcre2_match_data_create(1, nullptr));
  if (data == nullptr) {
    *error = "out of memory for regex match data";
    return false;
  }
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t offset = 0;
  // The caller checked the UTF-8 once for the whole text.
  uint32_t options = PCRE2_NO_UTF_CHECK;
  while (offset <= text.size()) {
    int rc = pcre2_match(code, subject, text.size(), offset, options,
                         data.get(), nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      // The JIT's small default stack ran out: the interpreter keeps its
      // backtracking frames on the heap.
      options |= PCRE2_NO_JIT;
      continue;
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      *error = "regex: " + PcreMessage(rc);
      return false;
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    const size_t begin = ovector[0], end = ovector[1];
    if (end > begin) {
      matches->emplace_back(begin, end);
      offset = end;
      continue;
    }
    // An empty match: go on from the next character.
    if (begin >= text.size()) break;
    offset = begin + 1;
    while (offset < text.size() &&
           (static_cast<uint8_t>(text[offset]) & 0xC0) == 0x80) {
      ++offset;
    }
  }
  return true;
}

}  // namespace halftime::tokenizer
