#include "tokenizer/metaspace_cut.h"

#include "tokenizer/text.h"

namespace halftime::tokenizer {

void MetaspaceCuts::AddToken(std::string_view token) {
  for (size_t at = token.find(kMetaspaceMark, 1); at != std::string_view::npos;
       at = token.find(kMetaspaceMark, at + kMetaspaceMark.size())) {
    size_t start = 0;
    const char32_t before = PreviousCodePoint(token, at, &start);
    if (before != U'\u2581') joined_.insert(before);
  }
}

size_t MetaspaceCuts::NextCut(std::string_view text, size_t from) const {
  for (size_t at = text.find(kMetaspaceMark, from + 1);
       at != std::string_view::npos;
       at = text.find(kMetaspaceMark, at + kMetaspaceMark.size())) {
    size_t start = 0;
    const char32_t before = PreviousCodePoint(text, at, &start);
    if (before != U'\u2581' && joined_.count(before) == 0) return at;
  }
  return text.size();
}

}  // namespace halftime::tokenizer
