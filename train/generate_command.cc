#include "train/generate_command.h"

#include <ATen/Parallel.h>

#include <CLI/CLI.hpp>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/adapter.h"
#include "engine/events.h"
#include "engine/generate.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/instruction_data.h"
#include "tokenizer/tokenizer.h"
#include "train/command_line.h"
#include "train/text_data.h"

namespace halftime {

using engine::events::kExitBadInput;
using engine::events::kExitFailure;
using engine::events::kExitOk;

int RunGenerateCommand(const std::vector<std::string>& args, std::ostream& out,
                       std::ostream& err) {
  CLI::App app{"halftime-train generate: continue a prompt with a model folder",
               "halftime-train generate"};
  std::string model_dir, adapter_dir, prompt, prompt_ids_text,
      chat_template_name;
  std::string output = "text";
  engine::GenerateOptions g;
  int threads = 0;
  app.add_option("--model", model_dir,
                 "A Hugging Face model folder (or a job's hf/ output)")
      ->required();
  app.add_option("--adapter", adapter_dir,
                 "A PEFT LoRA adapter folder (a job's adapter/ output) to "
                 "apply to --model");
  auto* prompt_opt = app.add_option("--prompt", prompt, "Prompt text");
  auto* ids_opt = app.add_option("--prompt-ids", prompt_ids_text,
                                 "Prompt as comma-separated token ids");
  prompt_opt->excludes(ids_opt);
  app.add_option("--max-new-tokens", g.max_new_tokens, "Tokens to generate")
      ->check(CLI::Range(1, 1 << 16));
  app.add_option("--temperature", g.temperature,
                 "0 = greedy (default); above 0 samples")
      ->check(CLI::Range(0.0, 100.0));
  app.add_option("--top-p", g.top_p, "Nucleus sampling mass (default 1)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--seed", g.seed, "Sampling seed (default 0)");
  app.add_option("--chat-template", chat_template_name,
                 "Write the prompt as a user turn: llama3, chatml or mistral")
      ->check(CLI::IsMember({"llama3", "chatml", "mistral"}));
  app.add_option("--threads", threads, "Intra-op threads (default: all cores)")
      ->check(CLI::Range(0, 1024));
  app.add_option("-o,--output", output, "text (default) or json")
      ->check(CLI::IsMember({"text", "json"}));
  if (auto done =
          ParseCommandLine(app, args, 1, "halftime-train generate", out, err)) {
    return *done;
  }
  if (prompt.empty() && prompt_ids_text.empty()) {
    err << "halftime-train generate: give --prompt or --prompt-ids\n";
    return kExitBadInput;
  }

  std::unique_ptr<tokenizer::Tokenizer> tok;
  const std::string tokenizer_path = FolderTokenizerPath(model_dir);
  if (!tokenizer_path.empty()) {
    std::string error;
    tok = tokenizer::Tokenizer::Load(tokenizer_path, &error);
    if (tok == nullptr) {
      err << "halftime-train generate: " << error << "\n";
      return kExitBadInput;
    }
  }
  std::vector<int32_t> ids;
  if (!prompt_ids_text.empty()) {
    for (absl::string_view part : absl::StrSplit(prompt_ids_text, ',')) {
      int32_t id = 0;
      if (!absl::SimpleAtoi(part, &id) || id < 0) {
        err << "halftime-train generate: --prompt-ids: \"" << part
            << "\" is not a token id\n";
        return kExitBadInput;
      }
      ids.push_back(id);
    }
  } else {
    if (tok == nullptr) {
      err << "halftime-train generate: " << model_dir
          << " has no tokenizer.json; give --prompt-ids\n";
      return kExitBadInput;
    }
    std::optional<tokenizer::ChatTemplate> chat_template;
    tokenizer::ChatTemplate parsed;
    if (tokenizer::ParseChatTemplate(chat_template_name, &parsed)) {
      chat_template = parsed;
      if (const int32_t end = tokenizer::EndOfTurnId(*tok, parsed); end >= 0) {
        g.stop_ids.push_back(end);
      }
    }
    // A template writes its own BOS; plain text gets the tokenizer's.
    std::string error;
    if (!tokenizer::EncodePrompt(*tok, chat_template, prompt,
                                 /*add_special_tokens=*/true, &ids, &error)) {
      err << "halftime-train generate: --prompt: " << error << "\n";
      return kExitBadInput;
    }
  }
  for (int32_t id : FolderStopIds(model_dir)) g.stop_ids.push_back(id);

  at::set_num_threads(threads > 0
                          ? threads
                          : static_cast<int>(std::max(
                                1u, std::thread::hardware_concurrency())));
  std::unique_ptr<engine::TrainModel> model;
  engine::TrainStatus st =
      engine::LoadPretrainedModel(model_dir, at::kFloat, &model, nullptr);
  if (!st.ok()) {
    err << "halftime-train generate: " << st.message << "\n";
    return kExitBadInput;
  }
  if (!adapter_dir.empty()) {
    std::unique_ptr<engine::AdaptedModel> adapted;
    st = engine::AdaptedModel::LoadPeft(adapter_dir, at::kFloat,
                                        std::move(model), &adapted);
    if (!st.ok()) {
      err << "halftime-train generate: --adapter " << st.message << "\n";
      return kExitBadInput;
    }
    adapted->To(at::kCPU, at::kFloat);
    model = std::move(adapted);
  }
  std::vector<int32_t> generated;
  st = engine::Generate(*model, ids, g, at::kCPU, &generated);
  if (!st.ok()) {
    err << "halftime-train generate: " << st.message << "\n";
    return st.code == engine::TrainStatus::kInvalidInput ? kExitBadInput
                                                         : kExitFailure;
  }
  std::string text, error;
  const bool has_text =
      tok != nullptr && tok->Decode(generated, true, &text, &error);
  if (output == "json") {
    nlohmann::ordered_json j;
    j["ids"] = generated;
    j["text"] = has_text ? nlohmann::ordered_json(text) : nullptr;
    out << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
        << "\n";
  } else if (has_text) {
    out << text << "\n";
  } else {
    for (size_t i = 0; i < generated.size(); ++i) {
      out << (i ? "," : "") << generated[i];
    }
    out << "\n";
  }
  return kExitOk;
}

}  // namespace halftime
