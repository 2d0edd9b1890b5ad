#include "tokenizer/decoder.h"

#include <utility>

#include "tokenizer/text.h"

namespace halftime::tokenizer {
namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The characters of `token` (valid UTF-8).
std::vector<char32_t> CodePoints(const std::string& token) {
  std::vector<char32_t> out;
  size_t pos = 0;
  while (pos < token.size()) out.push_back(NextCodePoint(token, &pos));
  return out;
}

bool Replace(const DecoderStep& step, std::string* token, std::string* error) {
  std::string out;
  if (step.regex) {
    std::vector<std::pair<size_t, size_t>> matches;
    if (!step.regex->FindAll(*token, &matches, error)) return false;
    if (matches.empty()) return true;
    size_t done = 0;
    for (auto [begin, end] : matches) {
      out.append(*token, done, begin - done);
      out.append(step.content);
      done = end;
    }
    out.append(*token, done, std::string::npos);
  } else {
    size_t at = token->find(step.literal);
    if (at == std::string::npos) return true;
    size_t done = 0;
    while (at != std::string::npos) {
      out.append(*token, done, at - done);
      out.append(step.content);
      done = at + step.literal.size();
      at = token->find(step.literal, done);
    }
    out.append(*token, done, std::string::npos);
  }
  token->swap(out);
  return true;
}

// Hugging Face's ByteFallback: a run of byte tokens becomes its text when
// the bytes are UTF-8, else one U+FFFD per byte (not per invalid sequence).
void FlushBytes(std::string* bytes, std::vector<std::string>* out) {
  if (bytes->empty()) return;
  size_t ignored = 0;
  if (IsValidUtf8(*bytes, &ignored)) {
    out->push_back(*bytes);
  } else {
    for (size_t i = 0; i < bytes->size(); ++i) out->push_back("\xEF\xBF\xBD");
  }
  bytes->clear();
}

}  // namespace

int ByteFallbackByte(const std::string& token) {
  if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') {
    return -1;
  }
  // Rust's u8::from_str_radix(&token[3..5], 16), which also takes "+F".
  if (token[3] == '+') return HexDigit(token[4]);
  const int high = HexDigit(token[3]);
  const int low = HexDigit(token[4]);
  if (high < 0 || low < 0) return -1;
  return high * 16 + low;
}

bool RunDecoders(const std::vector<DecoderStep>& steps,
                 std::vector<std::string> tokens, std::string* text,
                 std::string* error) {
  text->clear();
  if (steps.empty()) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0) text->push_back(' ');
      text->append(tokens[i]);
    }
    return true;
  }
  std::vector<std::string> next;
  for (const DecoderStep& step : steps) {
    switch (step.kind) {
      case DecoderStep::Kind::kByteLevel: {
        std::string bytes;
        for (const std::string& token : tokens) {
          const size_t mark = bytes.size();
          size_t pos = 0;
          bool all = true;
          while (pos < token.size()) {
            const int b = CharToByte(NextCodePoint(token, &pos));
            if (b < 0) {
              all = false;
              break;
            }
            bytes.push_back(static_cast<char>(b));
          }
          if (!all) {
            // A token with characters outside the table stands for itself.
            bytes.resize(mark);
            bytes.append(token);
          }
        }
        tokens.assign(1, Utf8Lossy(bytes));
        break;
      }
      case DecoderStep::Kind::kReplace:
        for (std::string& token : tokens) {
          if (!Replace(step, &token, error)) return false;
        }
        break;
      case DecoderStep::Kind::kByteFallback: {
        next.clear();
        std::string bytes;
        for (std::string& token : tokens) {
          const int b = ByteFallbackByte(token);
          if (b >= 0) {
            bytes.push_back(static_cast<char>(b));
            continue;
          }
          FlushBytes(&bytes, &next);
          next.push_back(std::move(token));
        }
        FlushBytes(&bytes, &next);
        tokens.swap(next);
        break;
      }
      case DecoderStep::Kind::kFuse: {
        std::string all;
        for (const std::string& token : tokens) all.append(token);
        tokens.assign(1, std::move(all));
        break;
      }
      case DecoderStep::Kind::kStrip:
        for (std::string& token : tokens) {
          const std::vector<char32_t> chars = CodePoints(token);
          size_t begin = 0;
          while (begin < step.start && begin < chars.size() &&
                 chars[begin] == step.character) {
            ++begin;
          }
          size_t end = chars.size();
          // The library indexes past the front here (a panic) when `stop`
          // exceeds the token; stopping at `begin` is the sane reading.
          for (size_t i = 0; i < step.stop && end > begin; ++i) {
            if (chars[end - 1] != step.character) break;
            --end;
          }
          std::string out;
          for (size_t i = begin; i < end; ++i) AppendUtf8(chars[i], &out);
          token.swap(out);
        }
        break;
      case DecoderStep::Kind::kMetaspace:
        for (size_t i = 0; i < tokens.size(); ++i) {
          std::string out;
          size_t pos = 0;
          while (pos < tokens[i].size()) {
            const char32_t c = NextCodePoint(tokens[i], &pos);
            if (c != step.character) {
              AppendUtf8(c, &out);
            } else if (i > 0 || !step.prepend) {
              out.push_back(' ');
            }
          }
          tokens[i].swap(out);
        }
        break;
    }
  }
  for (const std::string& token : tokens) text->append(token);
  return true;
}

}  // namespace halftime::tokenizer
