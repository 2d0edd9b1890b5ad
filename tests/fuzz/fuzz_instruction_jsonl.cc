// libFuzzer target: instruction JSONL (tokenizer/instruction_data.h) on
// arbitrary bytes, tokenized with the byte-level tokenizer of
// tests/tokenizer/byte_tokenizer.h (every byte a token, a few merges, the
// templates' special tokens).
//
// The first input byte picks what is fuzzed:
//   bit 7 clear: ParseInstructionJsonl on the rest, with the template of
//     bits 0-1 (none, llama3, chatml, mistral), add_bos from bit 2 and
//     eos_id </s> when bit 3 is set;
//   bit 7 set: EncodeSegments on the rest cut at each \x01 byte into
//     segments, trained flags alternating from bit 6.
//
// Beyond "no crash, no hang, no sanitizer report": an error names the input
// (and for a row, its line); a success gives examples that tile the ids,
// each with a trained token and an untrained first token, every id a token
// of the tokenizer; EncodeSegments gives exactly Encode's ids of the joined
// text and one 0/1 flag per id.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "tests/tokenizer/byte_tokenizer.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/instruction_data.h"
#include "tokenizer/tokenizer.h"

namespace {

using halftime::tokenizer::ChatTemplate;
using halftime::tokenizer::InstructionFormat;
using halftime::tokenizer::TextSegment;
using halftime::tokenizer::TokenizedExamples;
using halftime::tokenizer::Tokenizer;

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_instruction_jsonl: %s\n", what.c_str());
  std::abort();
}

const Tokenizer& ByteTokenizer() {
  static const Tokenizer* tokenizer = [] {
    std::string error;
    auto t =
        Tokenizer::Parse(halftime::tokenizer::testdata::ByteTokenizerJson(),
                         "byte.json", &error);
    if (!t) Fail("the byte tokenizer does not load: " + error);
    return t.release();
  }();
  return *tokenizer;
}

void FuzzJsonl(uint8_t mode, std::string_view text) {
  const Tokenizer& tok = ByteTokenizer();
  InstructionFormat format;
  switch (mode & 3) {
    case 1:
      format.chat_template = ChatTemplate::kLlama3;
      break;
    case 2:
      format.chat_template = ChatTemplate::kChatml;
      break;
    case 3:
      format.chat_template = ChatTemplate::kMistral;
      break;
  }
  format.add_bos = (mode & 4) != 0;
  if (mode & 8) {
    format.eos_id = halftime::tokenizer::testdata::ByteTokenizerAddedId("</s>");
  }
  TokenizedExamples out;
  std::string error;
  if (!halftime::tokenizer::ParseInstructionJsonl(text, "fuzz.jsonl", tok,
                                                  format, &out, &error)) {
    if (error.rfind("fuzz.jsonl: ", 0) != 0 &&
        error.rfind("fuzz.jsonl line ", 0) != 0) {
      Fail("error does not name the input: " + error);
    }
    return;
  }
  const size_t n = out.ids.size();
  if (out.trained.size() != n) Fail("mask and ids differ in size");
  if (out.starts.empty() || out.starts[0] != 0) Fail("starts[0] is not 0");
  for (size_t i = 0; i < out.starts.size(); ++i) {
    const int64_t begin = out.starts[i];
    const int64_t end =
        i + 1 < out.starts.size() ? out.starts[i + 1] : static_cast<int64_t>(n);
    if (begin >= end || end > static_cast<int64_t>(n)) {
      Fail("example " + std::to_string(i) + " is empty or out of range");
    }
    if (out.trained[begin] != 0) Fail("an example's first token is trained");
    bool any = false;
    for (int64_t j = begin; j < end; ++j) {
      if (out.trained[j] > 1) Fail("a mask value is not 0 or 1");
      any = any || out.trained[j] == 1;
    }
    if (!any) Fail("example " + std::to_string(i) + " has no trained token");
  }
  for (int32_t id : out.ids) {
    if (id < 0 || id >= tok.id_limit() || tok.IdToToken(id).empty()) {
      Fail("id " + std::to_string(id) + " names no token");
    }
  }
}

void FuzzSegments(uint8_t mode, std::string_view text) {
  const Tokenizer& tok = ByteTokenizer();
  std::vector<TextSegment> segments;
  bool trained = (mode & 0x40) != 0;
  std::string joined;
  for (size_t pos = 0; pos <= text.size();) {
    size_t cut = text.find('\x01', pos);
    if (cut == std::string_view::npos) cut = text.size();
    segments.push_back({std::string(text.substr(pos, cut - pos)), trained});
    joined += segments.back().text;
    trained = !trained;
    pos = cut + 1;
  }
  std::vector<int32_t> ids, expected;
  std::vector<uint8_t> mask;
  std::string error;
  const bool encoded = tok.Encode(joined, false, &expected, &error);
  if (!halftime::tokenizer::EncodeSegments(tok, segments, &ids, &mask,
                                           &error)) {
    if (error.empty()) Fail("EncodeSegments failed without an error");
    return;
  }
  if (!encoded) Fail("EncodeSegments took text that Encode refuses");
  if (ids != expected) Fail("EncodeSegments' ids are not Encode's");
  if (mask.size() != ids.size()) Fail("mask and ids differ in size");
  for (uint8_t m : mask) {
    if (m > 1) Fail("a mask value is not 0 or 1");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1,
                              size - 1);
  if (data[0] & 0x80) {
    FuzzSegments(data[0], text);
  } else {
    FuzzJsonl(data[0], text);
  }
  return 0;
}
