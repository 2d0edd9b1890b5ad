// halftime-train's side of text: the tokenizer a job's text or jsonl data is
// read with, the data tokenized into the engine's options, its eval prompts
// as ids, and completions turned back into text. The engine links no
// tokenizer; this is where text meets ids.
//
// Thread safety: a JobText is immutable after Prepare; Decode may be called
// from any thread.

#ifndef HALFTIME_TRAIN_TEXT_DATA_H_
#define HALFTIME_TRAIN_TEXT_DATA_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/options.h"
#include "halftime/v1/job_spec.pb.h"
#include "tokenizer/tokenizer.h"

namespace halftime {

// The ids that end a generation for a model folder: config.json's
// eos_token_id (a number or a list), plus generation_config.json's when
// present. Empty when neither file says.
std::vector<int32_t> FolderStopIds(const std::string& folder);

// The tokenizer file a model folder carries (tokenizer.json, else a
// SentencePiece tokenizer.model); empty when it has none.
std::string FolderTokenizerPath(const std::string& folder);

class JobText {
 public:
  // Reads and tokenizes `options`' data (text with a tokenizer, jsonl) into
  // options->data.tokenized, and its eval prompts into options->eval. The
  // tokenizer is data.tokenizer, else the pretrained folder's; byte-level
  // text needs none. Paths in `options` are already confined. Errors
  // (InvalidArgument) name the field or file and the cause: a missing
  // tokenizer, a bad row with its line number.
  static absl::StatusOr<std::unique_ptr<JobText>> Prepare(
      const v1::JobSpec& spec, engine::TrainOptions* options);

  // The text of generated `ids` (special tokens left out); bytes as UTF-8
  // for byte-level text, invalid sequences replaced.
  std::string Decode(const std::vector<int32_t>& ids) const;

  // The spec's eval prompts, in order.
  const std::vector<std::string>& prompts() const { return prompts_; }

 private:
  JobText() = default;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;  // null: bytes
  std::vector<std::string> prompts_;
};

}  // namespace halftime

#endif  // HALFTIME_TRAIN_TEXT_DATA_H_
