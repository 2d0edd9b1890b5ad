#include "tokenizer/chat_template.h"

#include <utility>

namespace halftime::tokenizer {
namespace {

// The UTF-8 encodings of the characters Python's str.isspace() accepts
// (bidirectional class WS, B or S, or category Zs), which Jinja's `trim`
// filter (str.strip()) removes.
constexpr const char* kPythonSpaces[] = {
    "\t",           "\n",
    "\v",           "\f",
    "\r",           "\x1C",
    "\x1D",         "\x1E",
    "\x1F",         " ",
    "\xC2\x85",     "\xC2\xA0",
    "\xE1\x9A\x80", "\xE2\x80\x80",
    "\xE2\x80\x81", "\xE2\x80\x82",
    "\xE2\x80\x83", "\xE2\x80\x84",
    "\xE2\x80\x85", "\xE2\x80\x86",
    "\xE2\x80\x87", "\xE2\x80\x88",
    "\xE2\x80\x89", "\xE2\x80\x8A",
    "\xE2\x80\xA8", "\xE2\x80\xA9",
    "\xE2\x80\xAF", "\xE2\x81\x9F",
    "\xE3\x80\x80",
};

// The byte length of the whitespace character `text` starts with (at_end
// false) or ends with (at_end true); 0 when there is none. Works on bytes,
// so text that is not valid UTF-8 is simply not trimmed past the bad bytes.
size_t SpaceLength(std::string_view text, bool at_end) {
  for (const char* space : kPythonSpaces) {
    const std::string_view s(space);
    if (text.size() < s.size()) continue;
    const std::string_view part =
        at_end ? text.substr(text.size() - s.size()) : text.substr(0, s.size());
    if (part == s) return s.size();
  }
  return 0;
}

// Jinja's `trim` filter: Python's str.strip() with no argument.
std::string_view PythonStrip(std::string_view text) {
  while (size_t n = SpaceLength(text, /*at_end=*/false)) text.remove_prefix(n);
  while (size_t n = SpaceLength(text, /*at_end=*/true)) text.remove_suffix(n);
  return text;
}

// Collects the rendered pieces, joining neighbours with the same flag.
class Pieces {
 public:
  explicit Pieces(std::vector<TextSegment>* out) : out_(out) { out_->clear(); }
  void Add(std::string_view text, bool trained) {
    if (text.empty()) return;
    if (out_->empty() || out_->back().trained != trained) {
      out_->push_back(TextSegment{std::string(), trained});
    }
    out_->back().text.append(text);
  }

 private:
  std::vector<TextSegment>* out_;
};

// `text` in double quotes, at most 40 bytes of it, control characters,
// quotes and backslashes escaped: for naming a value in an error.
std::string Quoted(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (size_t i = 0; i < text.size() && i < 40; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7F) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > 40) out += "...";
  return out + "\"";
}

std::string At(size_t index) {
  return "messages[" + std::to_string(index) + "]";
}

// Checks what every template needs: a non-empty conversation of known
// roles that ends with an assistant message unless a generation prompt is
// asked for.
bool CheckConversation(ChatTemplate t, const std::vector<ChatMessage>& messages,
                       bool add_generation_prompt, std::string* error) {
  const std::string name = ChatTemplateName(t);
  if (messages.empty()) {
    *error = name + ": empty conversation (no messages)";
    return false;
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant") {
      *error = name + ": " + At(i) + ": unknown role " + Quoted(role) +
               " (system, user or assistant)";
      return false;
    }
  }
  if (!add_generation_prompt && messages.back().role != "assistant") {
    *error = name + ": " + At(messages.size() - 1) +
             ": the conversation ends " + "with a " + messages.back().role +
             " message, not an assistant one: nothing to train on";
    return false;
  }
  return true;
}

void RenderLlama3(const std::vector<ChatMessage>& messages,
                  bool add_generation_prompt, Pieces* pieces) {
  pieces->Add("<|begin_of_text|>", false);
  for (const ChatMessage& m : messages) {
    const bool assistant = m.role == "assistant";
    pieces->Add("<|start_header_id|>", false);
    pieces->Add(m.role, false);
    pieces->Add("<|end_header_id|>\n\n", false);
    pieces->Add(PythonStrip(m.content), assistant);
    pieces->Add(EndOfTurnToken(ChatTemplate::kLlama3), assistant);
  }
  if (add_generation_prompt) {
    pieces->Add("<|start_header_id|>assistant<|end_header_id|>\n\n", false);
  }
}

void RenderChatml(const std::vector<ChatMessage>& messages,
                  bool add_generation_prompt, Pieces* pieces) {
  for (const ChatMessage& m : messages) {
    const bool assistant = m.role == "assistant";
    pieces->Add("<|im_start|>", false);
    pieces->Add(m.role, false);
    pieces->Add("\n", false);
    pieces->Add(m.content, assistant);
    pieces->Add(EndOfTurnToken(ChatTemplate::kChatml), assistant);
    pieces->Add("\n", false);
  }
  if (add_generation_prompt) pieces->Add("<|im_start|>assistant\n", false);
}

bool RenderMistral(const std::vector<ChatMessage>& messages, Pieces* pieces,
                   std::string* error) {
  // An optional first system message, merged into the first user message.
  const bool has_system = messages[0].role == "system";
  const size_t first = has_system ? 1 : 0;
  if (has_system && messages.size() == 1) {
    *error = "mistral: " + At(0) +
             ": a system message must be followed by a user message";
    return false;
  }
  for (size_t i = first; i < messages.size(); ++i) {
    const std::string& expected = (i - first) % 2 == 0 ? "user" : "assistant";
    if (messages[i].role != expected) {
      *error = "mistral: " + At(i) + ": role " + messages[i].role +
               " where the template needs " + expected + " (" +
               (messages[i].role == "system"
                    ? std::string("a system message may only come first")
                    : std::string("after an optional system message, roles "
                                  "alternate user/assistant")) +
               ")";
      return false;
    }
  }
  pieces->Add("<s>", false);
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user") {
      pieces->Add("[INST] ", false);
      if (has_system && i == first) {
        pieces->Add(messages[0].content, false);
        pieces->Add("\n\n", false);
      }
      pieces->Add(m.content, false);
      pieces->Add(" [/INST]", false);
    } else {
      pieces->Add(m.content, true);
      pieces->Add(EndOfTurnToken(ChatTemplate::kMistral), true);
    }
  }
  return true;
}

}  // namespace

bool ParseChatTemplate(std::string_view name, ChatTemplate* out) {
  for (ChatTemplate t :
       {ChatTemplate::kLlama3, ChatTemplate::kChatml, ChatTemplate::kMistral}) {
    if (name == ChatTemplateName(t)) {
      *out = t;
      return true;
    }
  }
  return false;
}

const char* EndOfTurnToken(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::kLlama3:
      return "<|eot_id|>";
    case ChatTemplate::kChatml:
      return "<|im_end|>";
    case ChatTemplate::kMistral:
      return "</s>";
  }
  return "";
}

const char* ChatTemplateName(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::kLlama3:
      return "llama3";
    case ChatTemplate::kChatml:
      return "chatml";
    case ChatTemplate::kMistral:
      return "mistral";
  }
  return "unknown";
}

bool RenderChat(ChatTemplate t, const std::vector<ChatMessage>& messages,
                bool add_generation_prompt, std::vector<TextSegment>* out,
                std::string* error) {
  out->clear();
  if (!CheckConversation(t, messages, add_generation_prompt, error)) {
    return false;
  }
  std::vector<TextSegment> rendered;
  Pieces pieces(&rendered);
  switch (t) {
    case ChatTemplate::kLlama3:
      RenderLlama3(messages, add_generation_prompt, &pieces);
      break;
    case ChatTemplate::kChatml:
      RenderChatml(messages, add_generation_prompt, &pieces);
      break;
    case ChatTemplate::kMistral:
      if (!RenderMistral(messages, &pieces, error)) return false;
      break;
  }
  *out = std::move(rendered);
  return true;
}

}  // namespace halftime::tokenizer
