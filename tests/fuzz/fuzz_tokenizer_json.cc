// libFuzzer target: a tokenizer.json on arbitrary bytes, and whatever parses
// encoding a short fixed text (ASCII, CJK, an emoji, NFD accents, a special
// token) and decoding the ids back.
//
// Beyond "no crash, no hang, no sanitizer report": a refused file's error
// names the file, and every id Encode gives decodes.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace {

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_tokenizer_json: %s\n", what.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using halftime::tokenizer::Tokenizer;
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  std::string error;
  auto tokenizer = Tokenizer::Parse(json, "tokenizer.json", &error);
  if (!tokenizer) {
    if (error.rfind("tokenizer.json: ", 0) != 0) {
      Fail("error does not name the file: " + error);
    }
    return 0;
  }
  static const std::string_view kText =
      "Hello world's  \t\n<|end|> 1234 caf\xC3\xA9 cafe\xCC\x81 "
      "\xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x98\x80 [m] <s>";
  for (bool special : {false, true}) {
    std::vector<int32_t> ids;
    if (!tokenizer->Encode(kText, special, &ids, &error)) continue;
    std::string text;
    if (!tokenizer->Decode(ids, false, &text, &error)) {
      Fail("an encoded id does not decode: " + error);
    }
  }
  return 0;
}
