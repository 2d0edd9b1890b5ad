#include "train/text_data.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/instruction_data.h"
#include "tokenizer/text.h"

namespace halftime {
namespace {

namespace fs = std::filesystem;

absl::Status Invalid(const std::string& message) {
  return absl::InvalidArgumentError(message);
}

// Adds the eos_token_id of the JSON file at `path` (a number or a list of
// numbers) to *ids; a missing or unreadable file adds nothing.
void AddEosIds(const fs::path& path, std::vector<int32_t>* ids) {
  std::ifstream in(path);
  if (!in) return;
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (!j.is_object() || !j.contains("eos_token_id")) return;
  const nlohmann::json& eos = j["eos_token_id"];
  auto add = [&](const nlohmann::json& v) {
    if (!v.is_number_integer()) return;
    const int64_t id = v.get<int64_t>();
    if (id < 0 || id > INT32_MAX) return;
    if (std::find(ids->begin(), ids->end(), id) == ids->end()) {
      ids->push_back(static_cast<int32_t>(id));
    }
  };
  if (eos.is_array()) {
    for (const auto& v : eos) add(v);
  } else {
    add(eos);
  }
}

std::optional<tokenizer::ChatTemplate> TemplateOf(v1::ChatTemplate t) {
  switch (t) {
    case v1::CHAT_TEMPLATE_LLAMA3:
      return tokenizer::ChatTemplate::kLlama3;
    case v1::CHAT_TEMPLATE_CHATML:
      return tokenizer::ChatTemplate::kChatml;
    case v1::CHAT_TEMPLATE_MISTRAL:
      return tokenizer::ChatTemplate::kMistral;
    default:
      return std::nullopt;
  }
}

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Invalid(
        absl::StrCat("data file ", path, " cannot be opened (missing?)"));
  }
  std::string text((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  if (in.bad())
    return Invalid(absl::StrCat("data file ", path, ": read error"));
  if (text.empty())
    return Invalid(absl::StrCat("data file ", path, " is empty"));
  return text;
}

}  // namespace

std::vector<int32_t> FolderStopIds(const std::string& folder) {
  std::vector<int32_t> ids;
  AddEosIds(fs::path(folder) / "config.json", &ids);
  AddEosIds(fs::path(folder) / "generation_config.json", &ids);
  return ids;
}

std::string FolderTokenizerPath(const std::string& folder) {
  std::error_code ec;
  for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
    const fs::path path = fs::path(folder) / name;
    if (fs::is_regular_file(path, ec)) return path.string();
  }
  return "";
}

absl::StatusOr<std::unique_ptr<JobText>> JobText::Prepare(
    const v1::JobSpec& spec, engine::TrainOptions* options) {
  std::unique_ptr<JobText> job(new JobText());
  engine::DataOptions& data = options->data;
  const bool text = data.kind == engine::DataKind::kText;
  const bool jsonl = data.kind == engine::DataKind::kJsonl;
  for (const std::string& prompt : spec.eval().prompts()) {
    job->prompts_.push_back(prompt);
  }
  const std::string& folder = options->model.pretrained;
  if ((text || jsonl || !job->prompts_.empty()) && data.tokenizer.empty() &&
      !folder.empty()) {
    data.tokenizer = FolderTokenizerPath(folder);
    if (data.tokenizer.empty() && (jsonl || !job->prompts_.empty())) {
      return Invalid(
          absl::StrCat("model.pretrained ", folder,
                       " has no tokenizer.json; set data.tokenizer to one"));
    }
  }
  if (!data.tokenizer.empty()) {
    std::string error;
    job->tokenizer_ = tokenizer::Tokenizer::Load(data.tokenizer, &error);
    if (job->tokenizer_ == nullptr) {
      return Invalid(absl::StrCat("data.tokenizer: ", error));
    }
  } else if (jsonl) {
    return Invalid("data.tokenizer: jsonl data needs a tokenizer");
  }
  const std::optional<tokenizer::ChatTemplate> chat_template =
      TemplateOf(spec.data().chat_template());
  if (chat_template) data.chat_template = ChatTemplateName(*chat_template);
  std::vector<int32_t> stop_ids =
      folder.empty() ? std::vector<int32_t>() : FolderStopIds(folder);
  const tokenizer::Tokenizer* tok = job->tokenizer_.get();

  if (jsonl) {
    tokenizer::InstructionFormat format;
    format.chat_template = chat_template;
    format.eos_id = stop_ids.empty() ? -1 : stop_ids[0];
    tokenizer::TokenizedExamples examples;
    std::string error;
    if (!tokenizer::ReadInstructionJsonl(data.path, *tok, format, &examples,
                                         &error)) {
      return Invalid(error);
    }
    auto tokenized = std::make_shared<engine::TokenizedData>();
    tokenized->ids = std::move(examples.ids);
    tokenized->trained = std::move(examples.trained);
    tokenized->starts = std::move(examples.starts);
    tokenized->vocab_size = tok->id_limit();
    data.tokenized = std::move(tokenized);
  } else if (text && tok != nullptr) {
    absl::StatusOr<std::string> content = ReadText(data.path);
    if (!content.ok()) return content.status();
    auto tokenized = std::make_shared<engine::TokenizedData>();
    std::string error;
    if (!tok->Encode(*content, false, &tokenized->ids, &error)) {
      return Invalid(absl::StrCat("data file ", data.path, ": ", error));
    }
    tokenized->vocab_size = tok->id_limit();
    data.tokenized = std::move(tokenized);
  }

  // Eval prompts, written as the training rows write a prompt.
  if (chat_template && tok != nullptr) {
    const int32_t end = tokenizer::EndOfTurnId(*tok, *chat_template);
    if (end >= 0 &&
        std::find(stop_ids.begin(), stop_ids.end(), end) == stop_ids.end()) {
      stop_ids.push_back(end);
    }
  }
  for (size_t i = 0; i < job->prompts_.size(); ++i) {
    const std::string& prompt = job->prompts_[i];
    const std::string field = absl::StrCat("eval.prompts[", i, "]");
    std::vector<int32_t> ids;
    std::string error;
    if (tok == nullptr) {
      size_t bad = 0;
      if (!tokenizer::IsValidUtf8(prompt, &bad)) {
        return Invalid(absl::StrCat(field, ": invalid UTF-8 at byte ", bad));
      }
      for (unsigned char c : prompt) ids.push_back(c);
    } else if (!tokenizer::EncodePrompt(*tok, chat_template, prompt,
                                        /*add_special_tokens=*/jsonl, &ids,
                                        &error)) {
      return Invalid(absl::StrCat(field, ": ", error));
    }
    if (ids.empty()) return Invalid(absl::StrCat(field, ": has no tokens"));
    options->eval.prompt_ids.push_back(std::move(ids));
  }
  options->eval.stop_ids = std::move(stop_ids);
  return job;
}

std::string JobText::Decode(const std::vector<int32_t>& ids) const {
  if (tokenizer_ == nullptr) {
    std::string bytes;
    for (int32_t id : ids) bytes.push_back(static_cast<char>(id & 0xFF));
    return tokenizer::Utf8Lossy(bytes);
  }
  std::string text, error;
  if (!tokenizer_->Decode(ids, /*skip_special_tokens=*/true, &text, &error)) {
    return absl::StrCat("<", error, ">");
  }
  return text;
}

}  // namespace halftime
