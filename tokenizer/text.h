// Text helpers for the tokenizer: UTF-8 checks, NFC (utf8proc), the GPT-2
// byte-to-character table of the ByteLevel pre-tokenizer and decoder, and
// the Unicode classes the added-token rules need.
//
// Thread safety: pure functions over constant tables; safe from any thread.

#ifndef HALFTIME_TOKENIZER_TEXT_H_
#define HALFTIME_TOKENIZER_TEXT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace halftime::tokenizer {

// True when `text` is valid UTF-8 (no overlong forms, surrogates or code
// points past U+10FFFF). Otherwise false with *bad_offset set to the first
// byte that is not part of a valid sequence.
bool IsValidUtf8(std::string_view text, size_t* bad_offset);

// Decodes the code point at text[*pos] of valid UTF-8 and moves *pos past it.
char32_t NextCodePoint(std::string_view text, size_t* pos);
// Decodes the code point that ends at text[end - 1] of valid UTF-8 and sets
// *start to where it begins.
char32_t PreviousCodePoint(std::string_view text, size_t end, size_t* start);
void AppendUtf8(char32_t code_point, std::string* out);

// How deep `text` nests JSON arrays and objects (brackets inside strings
// not counted), scanning until past `limit`: a cheap bound checked before a
// recursive JSON parser sees the text.
int JsonDepth(std::string_view text, int limit);

// `bytes` as text, each maximal invalid sequence replaced by U+FFFD (as
// Rust's String::from_utf8_lossy does).
std::string Utf8Lossy(std::string_view bytes);

// `text` (valid UTF-8) in Normalization Form C. False with *error on
// failure (utf8proc's message).
bool NfcNormalize(std::string_view text, std::string* out, std::string* error);

// The character GPT-2's bytes_to_unicode maps `byte` to.
char32_t ByteToChar(uint8_t byte);
// The byte a ByteLevel character stands for; -1 for a character that is not
// one of the 256.
int CharToByte(char32_t c);

// Rust's char::is_whitespace (Unicode White_Space).
bool IsWhitespace(char32_t c);
// Rust's char::is_alphanumeric, as near as utf8proc's categories allow
// (letters, numbers).
bool IsAlphanumeric(char32_t c);

}  // namespace halftime::tokenizer

#endif  // HALFTIME_TOKENIZER_TEXT_H_
