// UTF-8 validation (RFC 3629: no overlong forms, no surrogates, nothing above
// U+10FFFF), shared by spec loading, the engine's text data and the worker's
// log relay. The standard library only, so the engine can link it.
//
// Thread safety: pure functions; safe from any thread.

#ifndef HALFTIME_BASE_UTF8_H_
#define HALFTIME_BASE_UTF8_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace halftime::utf8 {

// The length (1-4) of the valid UTF-8 sequence that starts at text[pos], or
// 0 when the bytes there are not one (or pos is past the end).
std::size_t SequenceLength(std::string_view text, std::size_t pos);

// The offset of the first byte that does not start a valid sequence, or
// std::string_view::npos when all of `text` is valid UTF-8.
std::size_t FindInvalid(std::string_view text);

// `text` made valid: each invalid byte becomes U+FFFD. The result is cut,
// at a sequence boundary, to at most `max_bytes` bytes.
std::string ToValid(std::string_view text, std::size_t max_bytes);

}  // namespace halftime::utf8

#endif  // HALFTIME_BASE_UTF8_H_
