#include "tokenizer/text.h"

#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cstdlib>

namespace halftime::tokenizer {
namespace {

// Length of the valid UTF-8 sequence at text[pos], or 0 when it is invalid.
size_t ValidSequenceLength(std::string_view text, size_t pos) {
  const auto byte = [&](size_t i) {
    return static_cast<uint8_t>(text[pos + i]);
  };
  const uint8_t b0 = byte(0);
  if (b0 < 0x80) return 1;
  const size_t left = text.size() - pos;
  const auto cont = [&](size_t i) {
    return i < left && (byte(i) & 0xC0) == 0x80;
  };
  if (b0 >= 0xC2 && b0 <= 0xDF) return cont(1) ? 2 : 0;
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (left < 2) return 0;
    const uint8_t b1 = byte(1);
    // No overlong forms (E0 80..9F) and no surrogates (ED A0..BF).
    if ((b0 == 0xE0 && b1 < 0xA0) || (b0 == 0xED && b1 > 0x9F)) return 0;
    return cont(1) && cont(2) ? 3 : 0;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    if (left < 2) return 0;
    const uint8_t b1 = byte(1);
    // No overlong forms (F0 80..8F) and nothing past U+10FFFF (F4 90..).
    if ((b0 == 0xF0 && b1 < 0x90) || (b0 == 0xF4 && b1 > 0x8F)) return 0;
    return cont(1) && cont(2) && cont(3) ? 4 : 0;
  }
  return 0;
}

struct ByteTables {
  std::array<char32_t, 256> byte_to_char{};
  // Every ByteLevel character is below U+0144.
  std::array<int16_t, 0x144> char_to_byte{};
  ByteTables() {
    char_to_byte.fill(-1);
    int next_extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable =
          (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t c = printable ? b : 0x100 + next_extra++;
      byte_to_char[b] = c;
      char_to_byte[c] = static_cast<int16_t>(b);
    }
  }
};

const ByteTables& Tables() {
  static const ByteTables tables;
  return tables;
}

}  // namespace

bool IsValidUtf8(std::string_view text, size_t* bad_offset) {
  size_t pos = 0;
  while (pos < text.size()) {
    // ASCII runs are the common case; skip them eight bytes at a time.
    while (pos + 8 <= text.size()) {
      uint64_t word = 0;
      for (int i = 0; i < 8; ++i) {
        word |= static_cast<uint64_t>(static_cast<uint8_t>(text[pos + i]))
                << (8 * i);
      }
      if (word & 0x8080808080808080ull) break;
      pos += 8;
    }
    if (pos >= text.size()) break;
    const size_t length = ValidSequenceLength(text, pos);
    if (length == 0) {
      *bad_offset = pos;
      return false;
    }
    pos += length;
  }
  return true;
}

char32_t NextCodePoint(std::string_view text, size_t* pos) {
  const auto b = [&](size_t i) {
    return static_cast<char32_t>(static_cast<uint8_t>(text[*pos + i]));
  };
  const char32_t b0 = b(0);
  char32_t c;
  if (b0 < 0x80) {
    c = b0;
    *pos += 1;
  } else if (b0 < 0xE0) {
    c = ((b0 & 0x1F) << 6) | (b(1) & 0x3F);
    *pos += 2;
  } else if (b0 < 0xF0) {
    c = ((b0 & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    *pos += 3;
  } else {
    c = ((b0 & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) |
        (b(3) & 0x3F);
    *pos += 4;
  }
  return c;
}

char32_t PreviousCodePoint(std::string_view text, size_t end, size_t* start) {
  size_t pos = end - 1;
  while (pos > 0 && (static_cast<uint8_t>(text[pos]) & 0xC0) == 0x80) --pos;
  *start = pos;
  return NextCodePoint(text, &pos);
}

void AppendUtf8(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

std::string Utf8Lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    const size_t length = ValidSequenceLength(bytes, pos);
    if (length > 0) {
      out.append(bytes.substr(pos, length));
      pos += length;
      continue;
    }
    // A maximal invalid subpart: a lead byte followed by as many
    // continuation bytes as could still have been valid.
    const uint8_t b0 = static_cast<uint8_t>(bytes[pos]);
    size_t skip = 1;
    size_t expected = b0 >= 0xF0 && b0 <= 0xF4   ? 4
                      : b0 >= 0xE0 && b0 <= 0xEF ? 3
                      : b0 >= 0xC2 && b0 <= 0xDF ? 2
                                                 : 1;
    for (size_t i = 1; i < expected && pos + i < bytes.size(); ++i) {
      const uint8_t b = static_cast<uint8_t>(bytes[pos + i]);
      uint8_t low = 0x80, high = 0xBF;
      if (i == 1) {
        if (b0 == 0xE0) low = 0xA0;
        if (b0 == 0xED) high = 0x9F;
        if (b0 == 0xF0) low = 0x90;
        if (b0 == 0xF4) high = 0x8F;
      }
      if (b < low || b > high) break;
      skip = i + 1;
    }
    out.append("\xEF\xBF\xBD");
    pos += skip;
  }
  return out;
}

bool NfcNormalize(std::string_view text, std::string* out, std::string* error) {
  bool ascii = true;
  for (char c : text) {
    if (static_cast<uint8_t>(c) >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) {
    out->assign(text);
    return true;
  }
  utf8proc_uint8_t* mapped = nullptr;
  const utf8proc_ssize_t length = utf8proc_map(
      reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
      static_cast<utf8proc_ssize_t>(text.size()), &mapped,
      static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (length < 0) {
    *error = std::string("NFC: ") + utf8proc_errmsg(length);
    return false;
  }
  out->assign(reinterpret_cast<const char*>(mapped),
              static_cast<size_t>(length));
  std::free(mapped);
  return true;
}

char32_t ByteToChar(uint8_t byte) { return Tables().byte_to_char[byte]; }

int CharToByte(char32_t c) {
  return c < Tables().char_to_byte.size() ? Tables().char_to_byte[c] : -1;
}

bool IsWhitespace(char32_t c) {
  switch (c) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x20:
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

bool IsAlphanumeric(char32_t c) {
  if (c < 0x80) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
           (c >= 'A' && c <= 'Z');
  }
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      return false;
  }
}

int JsonDepth(std::string_view text, int limit) {
  int depth = 0;
  int deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size() && deepest <= limit; ++i) {
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

}  // namespace halftime::tokenizer
