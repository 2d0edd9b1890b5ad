#include "train/tokenize_command.h"

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>

#include "engine/events.h"
#include "tokenizer/tokenizer.h"
#include "train/command_line.h"

namespace halftime {
namespace {

using engine::events::kExitBadInput;
using engine::events::kExitFailure;
using engine::events::kExitOk;

// The ids as little-endian integers of `bytes` bytes each.
std::string Serialize(const std::vector<int32_t>& ids, int bytes) {
  std::string out;
  out.reserve(ids.size() * static_cast<size_t>(bytes));
  for (int32_t id : ids) {
    const uint32_t v = static_cast<uint32_t>(id);
    for (int i = 0; i < bytes; ++i) {
      out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
    }
  }
  return out;
}

}  // namespace

int RunTokenizeCommand(const std::vector<std::string>& args, std::ostream& out,
                       std::ostream& err) {
  CLI::App app{
      "halftime-train tokenize: text to token ids for data.kind tokens",
      "halftime-train tokenize"};
  std::string tokenizer_path, in_path, out_path, dtype;
  bool add_special_tokens = false;
  app.add_option("--tokenizer", tokenizer_path,
                 "A Hugging Face tokenizer.json or a SentencePiece "
                 "tokenizer.model")
      ->required();
  app.add_option("--in", in_path, "UTF-8 text file")->required();
  app.add_option("--out", out_path, "Raw little-endian ids (TOKENS.bin)")
      ->required();
  app.add_option("--dtype", dtype,
                 "uint16 or uint32 (default: uint16 when every id fits)")
      ->check(CLI::IsMember({"uint16", "uint32"}));
  app.add_flag("--add-special-tokens", add_special_tokens,
               "Add the tokenizer's post-processor tokens (e.g. Llama 3's "
               "<|begin_of_text|>; a tokenizer.model's BOS, <s>)");
  if (auto done =
          ParseCommandLine(app, args, 1, "halftime-train tokenize", out, err)) {
    return *done;
  }

  std::string error;
  std::unique_ptr<tokenizer::Tokenizer> tok =
      tokenizer::Tokenizer::Load(tokenizer_path, &error);
  if (tok == nullptr) {
    err << "halftime-train tokenize: " << error << "\n";
    return kExitBadInput;
  }
  std::ifstream in(in_path, std::ios::binary);
  if (!in) {
    err << "halftime-train tokenize: --in " << in_path
        << ": cannot be opened\n";
    return kExitBadInput;
  }
  const std::string text((std::istreambuf_iterator<char>(in)),
                         std::istreambuf_iterator<char>());
  const auto start = std::chrono::steady_clock::now();
  std::vector<int32_t> ids;
  if (!tok->Encode(text, add_special_tokens, &ids, &error)) {
    err << "halftime-train tokenize: " << in_path << ": " << error << "\n";
    return kExitBadInput;
  }
  const std::chrono::duration<double> took =
      std::chrono::steady_clock::now() - start;
  const bool fits16 = tok->id_limit() <= 65536;
  if (dtype.empty()) dtype = fits16 ? "uint16" : "uint32";
  if (dtype == "uint16" && !fits16) {
    err << "halftime-train tokenize: --dtype uint16: the vocabulary has "
        << tok->id_limit() << " ids, past 65536; use uint32\n";
    return kExitBadInput;
  }
  const std::string bytes = Serialize(ids, dtype == "uint16" ? 2 : 4);
  const std::string tmp = out_path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!f.flush()) {
      std::remove(tmp.c_str());
      err << "halftime-train tokenize: --out " << out_path
          << ": cannot be written\n";
      return kExitFailure;
    }
  }
  if (std::rename(tmp.c_str(), out_path.c_str()) != 0) {
    std::remove(tmp.c_str());
    err << "halftime-train tokenize: --out " << out_path
        << ": cannot be written\n";
    return kExitFailure;
  }
  out << "wrote " << ids.size() << " tokens (" << dtype << ") to " << out_path
      << " from " << text.size() << " bytes";
  if (took.count() > 0) {
    out << ", " << static_cast<double>(text.size()) / took.count() / 1e6
        << " MB/s";
  }
  out << "\n";
  return kExitOk;
}

}  // namespace halftime
