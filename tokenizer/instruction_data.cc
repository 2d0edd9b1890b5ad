#include "tokenizer/instruction_data.h"

#include <algorithm>
#include <fstream>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <utility>

#include "tokenizer/text.h"

namespace halftime::tokenizer {
namespace {

using Json = nlohmann::json;

// EncodeSegments encodes the text before each boundary: past this many
// bytes in all (some 10 s of encoding) a conversation is refused rather
// than tie up the reader. A 100-turn conversation of 1 MB needs ~100 MB.
constexpr size_t kMaxPrefixBytes = size_t{256} << 20;

// A row is three levels deep ({"messages": [{...}]}); anything much deeper
// is refused before the recursive parts of the JSON library see it.
constexpr int kMaxJsonDepth = 16;

// At most the first 40 bytes of `text`, as a JSON string (quoted, escaped,
// invalid UTF-8 replaced), for naming a value in an error.
std::string Quote(std::string_view text) {
  std::string shown(text.substr(0, 40));
  if (text.size() > 40) shown += "...";
  return Json(shown).dump(-1, ' ', false, Json::error_handler_t::replace);
}

size_t CommonPrefix(const std::vector<int32_t>& a,
                    const std::vector<int32_t>& b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

// A string field of a JSON object: false with *error when it is missing or
// not a string.
bool StringField(const Json& object, const char* key, std::string* value,
                 std::string* error) {
  const auto it = object.find(key);
  if (it == object.end()) {
    *error = std::string("missing \"") + key + "\"";
    return false;
  }
  if (!it->is_string()) {
    *error =
        std::string("\"") + key + "\" must be a string, not " + it->type_name();
    return false;
  }
  *value = it->get<std::string>();
  return true;
}

// The first key of `object` that is not one of `allowed`; none when all are.
std::optional<std::string> UnknownKey(
    const Json& object, std::initializer_list<const char*> allowed) {
  for (auto it = object.begin(); it != object.end(); ++it) {
    const std::string& key = it.key();
    if (std::none_of(allowed.begin(), allowed.end(),
                     [&](const char* a) { return key == a; })) {
      return key;
    }
  }
  return std::nullopt;
}

// Reads a "messages" array into *messages.
bool ReadMessages(const Json& value, std::vector<ChatMessage>* messages,
                  std::string* error) {
  if (!value.is_array()) {
    *error =
        std::string("\"messages\" must be an array, not ") + value.type_name();
    return false;
  }
  if (value.empty()) {
    *error = "\"messages\" is empty";
    return false;
  }
  messages->clear();
  for (size_t i = 0; i < value.size(); ++i) {
    const Json& m = value[i];
    const std::string at = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) {
      *error = at + " must be an object with \"role\" and \"content\", not " +
               m.type_name();
      return false;
    }
    ChatMessage message;
    std::string cause;
    if (!StringField(m, "role", &message.role, &cause) ||
        !StringField(m, "content", &message.content, &cause)) {
      *error = at + ": " + cause;
      return false;
    }
    if (const auto key = UnknownKey(m, {"role", "content"})) {
      *error = at + ": unknown field " + Quote(*key) +
               " (a message has \"role\" and \"content\")";
      return false;
    }
    messages->push_back(std::move(message));
  }
  return true;
}

// One row, parsed and tokenized; appended to *out. *error is the cause
// alone (the caller adds the file and line).
bool TokenizeRow(const Json& row, const Tokenizer& tok,
                 const InstructionFormat& format, TokenizedExamples* out,
                 std::string* error) {
  if (!row.is_object()) {
    *error = std::string("a row must be a JSON object, not ") + row.type_name();
    return false;
  }
  const bool has_messages = row.contains("messages");
  const bool has_prompt = row.contains("prompt") || row.contains("completion");
  if (has_messages && has_prompt) {
    *error =
        "a row has either \"prompt\" and \"completion\" or \"messages\", "
        "not both";
    return false;
  }
  if (!has_messages && !has_prompt) {
    *error = row.empty() ? std::string(
                               "empty object: a row needs \"prompt\" and "
                               "\"completion\", or \"messages\"")
                         : "unknown field " + Quote(row.begin().key()) +
                               " (a row has \"prompt\" and \"completion\", or "
                               "\"messages\")";
    return false;
  }
  if (const auto key = has_messages
                           ? UnknownKey(row, {"messages"})
                           : UnknownKey(row, {"prompt", "completion"})) {
    *error = "unknown field " + Quote(*key) +
             (has_messages ? " (a chat row has only \"messages\")"
                           : " (this row has only \"prompt\" and "
                             "\"completion\")");
    return false;
  }

  std::vector<int32_t> ids;
  std::vector<uint8_t> trained;
  const bool templated = has_messages || format.chat_template.has_value();
  if (templated) {
    if (!format.chat_template) {
      *error =
          "\"messages\" rows need a chat template (llama3, chatml or "
          "mistral)";
      return false;
    }
    std::vector<ChatMessage> messages;
    if (has_messages) {
      if (!ReadMessages(row.at("messages"), &messages, error)) return false;
    } else {
      ChatMessage prompt{"user", ""}, completion{"assistant", ""};
      if (!StringField(row, "prompt", &prompt.content, error) ||
          !StringField(row, "completion", &completion.content, error)) {
        return false;
      }
      messages = {std::move(prompt), std::move(completion)};
    }
    std::vector<TextSegment> segments;
    if (!RenderChat(*format.chat_template, messages,
                    /*add_generation_prompt=*/false, &segments, error) ||
        !EncodeSegments(tok, segments, &ids, &trained, error)) {
      return false;
    }
  } else {
    std::string prompt, completion;
    if (!StringField(row, "prompt", &prompt, error) ||
        !StringField(row, "completion", &completion, error)) {
      return false;
    }
    std::vector<int32_t> completion_ids;
    std::string cause;
    if (!tok.Encode(prompt, format.add_bos, &ids, &cause)) {
      *error = "\"prompt\": " + cause;
      return false;
    }
    if (!tok.Encode(completion, false, &completion_ids, &cause)) {
      *error = "\"completion\": " + cause;
      return false;
    }
    trained.assign(ids.size(), 0);
    ids.insert(ids.end(), completion_ids.begin(), completion_ids.end());
    if (format.eos_id >= 0) ids.push_back(format.eos_id);
    trained.resize(ids.size(), 1);
  }
  // Nothing in the example comes before its first token to predict it.
  const bool first_trained = !trained.empty() && trained[0] != 0;
  if (first_trained) trained[0] = 0;
  if (std::find(trained.begin(), trained.end(), 1) == trained.end()) {
    if (first_trained) {
      *error =
          "no trained token: the only one is the example's first, which "
          "nothing before it predicts (the prompt encodes to no tokens)";
    } else if (templated) {
      *error =
          "no trained token: the assistant's text and end-of-turn token "
          "encode to no tokens (does the tokenizer lack the template's "
          "special tokens?)";
    } else {
      *error =
          "no trained token: the completion encodes to no tokens and there "
          "is no eos_id";
    }
    return false;
  }
  out->starts.push_back(static_cast<int64_t>(out->ids.size()));
  out->ids.insert(out->ids.end(), ids.begin(), ids.end());
  out->trained.insert(out->trained.end(), trained.begin(), trained.end());
  return true;
}

}  // namespace

bool EncodeSegments(const Tokenizer& tok,
                    const std::vector<TextSegment>& segments,
                    std::vector<int32_t>* ids, std::vector<uint8_t>* trained,
                    std::string* error) {
  ids->clear();
  trained->clear();
  // Runs of text with one flag: where each starts, and its flag.
  std::string text;
  std::vector<size_t> run_starts;
  std::vector<uint8_t> run_flags;
  for (const TextSegment& segment : segments) {
    if (segment.text.empty()) continue;
    if (run_flags.empty() || run_flags.back() != segment.trained) {
      run_starts.push_back(text.size());
      run_flags.push_back(segment.trained ? 1 : 0);
    }
    text += segment.text;
  }
  size_t prefix_bytes = 0;
  for (size_t start : run_starts) prefix_bytes += start;
  if (prefix_bytes > kMaxPrefixBytes) {
    *error = "too long to align: " + std::to_string(run_starts.size()) +
             " trained and untrained runs over " + std::to_string(text.size()) +
             " bytes need " + std::to_string(prefix_bytes >> 20) +
             " MiB of prefixes encoded (at most " +
             std::to_string(kMaxPrefixBytes >> 20) + ")";
    return false;
  }
  std::string cause;
  if (!tok.Encode(text, false, ids, &cause)) {
    *error = "encoding the rendered text: " + cause;
    return false;
  }
  trained->assign(ids->size(), 0);
  // first_token[r]: the index of the first token that counts with run r.
  std::vector<size_t> first_token(run_starts.size(), 0);
  std::vector<int32_t> prefix_ids;
  for (size_t r = 1; r < run_starts.size(); ++r) {
    const std::string_view prefix =
        std::string_view(text).substr(0, run_starts[r]);
    if (!tok.Encode(prefix, false, &prefix_ids, &cause)) {
      *error = "encoding the text before byte " +
               std::to_string(run_starts[r]) +
               " (a segment boundary): " + cause;
      return false;
    }
    size_t index = CommonPrefix(prefix_ids, *ids);
    // The first token the two disagree on starts before the boundary.
    if (index < prefix_ids.size()) ++index;
    first_token[r] = std::clamp(index, first_token[r - 1], ids->size());
  }
  for (size_t r = 0; r < run_starts.size(); ++r) {
    const size_t end =
        r + 1 < run_starts.size() ? first_token[r + 1] : ids->size();
    std::fill(trained->begin() + first_token[r], trained->begin() + end,
              run_flags[r]);
  }
  return true;
}

bool ParseInstructionJsonl(std::string_view text, std::string_view name,
                           const Tokenizer& tok,
                           const InstructionFormat& format,
                           TokenizedExamples* out, std::string* error) {
  const std::string file(name);
  if (format.eos_id < -1 || format.eos_id >= tok.id_limit() ||
      (format.eos_id >= 0 && tok.IdToToken(format.eos_id).empty())) {
    *error = file + ": eos_id " + std::to_string(format.eos_id) +
             " names no token of the tokenizer";
    return false;
  }
  TokenizedExamples examples;
  size_t line_number = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t newline = text.find('\n', pos);
    const size_t end =
        newline == std::string_view::npos ? text.size() : newline;
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;

    const std::string where = file + " line " + std::to_string(line_number);
    size_t bad_offset = 0;
    if (!IsValidUtf8(line, &bad_offset)) {
      *error = where + ": invalid UTF-8 at byte " + std::to_string(bad_offset) +
               " of the line";
      return false;
    }
    if (JsonDepth(line, kMaxJsonDepth) > kMaxJsonDepth) {
      *error = where + ": JSON nested deeper than " +
               std::to_string(kMaxJsonDepth) + " levels";
      return false;
    }
    std::string cause;
    try {
      Json row = Json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (row.is_discarded()) {
        // Parse again with exceptions only to get the position and reason.
        cause = "invalid JSON";
        try {
          Json again = Json::parse(line);
        } catch (const Json::exception& e) {
          cause += std::string(": ") + e.what();
        }
      } else if (TokenizeRow(row, tok, format, &examples, &cause)) {
        continue;
      }
    } catch (const std::exception& e) {
      // The checks above should leave nothing to throw; this keeps a missed
      // case an error rather than a crash.
      cause = e.what();
    }
    *error = where + ": " + cause;
    return false;
  }
  if (examples.starts.empty()) {
    *error = file + ": no rows (the file is empty or has only blank lines)";
    return false;
  }
  *out = std::move(examples);
  return true;
}

bool ReadInstructionJsonl(const std::string& path, const Tokenizer& tok,
                          const InstructionFormat& format,
                          TokenizedExamples* out, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = path + ": cannot open";
    return false;
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) {
    *error = path + ": read failed";
    return false;
  }
  return ParseInstructionJsonl(contents.str(), path, tok, format, out, error);
}

bool EncodePrompt(const Tokenizer& tok,
                  const std::optional<ChatTemplate>& chat_template,
                  std::string_view prompt, bool add_special_tokens,
                  std::vector<int32_t>* ids, std::string* error) {
  if (!chat_template) return tok.Encode(prompt, add_special_tokens, ids, error);
  std::vector<TextSegment> segments;
  if (!RenderChat(*chat_template, {{"user", std::string(prompt)}},
                  /*add_generation_prompt=*/true, &segments, error)) {
    return false;
  }
  std::string text;
  for (const TextSegment& segment : segments) text += segment.text;
  return tok.Encode(text, /*add_special_tokens=*/false, ids, error);
}

int32_t EndOfTurnId(const Tokenizer& tok, ChatTemplate t) {
  const std::string token = EndOfTurnToken(t);
  std::vector<int32_t> ids;
  std::string error;
  if (!tok.Encode(token, false, &ids, &error) || ids.size() != 1) return -1;
  return tok.IdToToken(ids[0]) == token ? ids[0] : -1;
}

}  // namespace halftime::tokenizer
