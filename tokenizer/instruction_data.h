// Instruction data: prompt/completion and chat ("messages") examples
// tokenized with a per-token loss mask, without Python or libtorch.
//
// A JSONL file holds one example per line, either
//   {"prompt": "...", "completion": "..."}
// or
//   {"messages": [{"role": "system"|"user"|"assistant", "content": "..."},
//                 ...]}
// (one kind or the other per row; blank lines are skipped). Chat rows are
// rendered with a chat template (tokenizer/chat_template.h) and encoded so
// that the ids are exactly the tokenizer's encoding of the rendered text,
// with the assistant's tokens marked as trained.

#ifndef HALFTIME_TOKENIZER_INSTRUCTION_DATA_H_
#define HALFTIME_TOKENIZER_INSTRUCTION_DATA_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace halftime::tokenizer {

// Token ids of one or more examples laid end to end, with a per-token loss
// mask. All three vectors are plain data (no invariants beyond those below).
struct TokenizedExamples {
  std::vector<int32_t> ids;
  // Same size as `ids`: 1 where the loss counts the token as a target (the
  // token is predicted from those before it), 0 where it does not.
  std::vector<uint8_t> trained;
  // Example i spans [starts[i], i + 1 < starts.size() ? starts[i + 1] :
  // ids.size()). Increasing; starts[0] == 0.
  std::vector<int64_t> starts;
};

// Encodes `segments` with `tok` (add_special_tokens false: the templates
// write BOS themselves) into *ids and *trained (both replaced, same size) so
// that *ids equals tok.Encode(concatenation of all segment texts) exactly,
// and a token is trained when the text it starts in is a trained segment.
//
// BPE can merge across a segment boundary (and a pre-tokenizer can split
// differently once it sees what follows), so token boundaries are found by
// encoding: for each boundary between a run of trained and a run of
// untrained text, the text before it is encoded alone and compared with the
// full encoding. The tokens the two agree on lie wholly before the
// boundary. When the prefix's encoding is itself a prefix of the full one,
// the boundary falls between two tokens. Otherwise the first token the two
// disagree on starts before the boundary and reaches past it (a straddling
// token, e.g. "\n\n" from a ChatML header's "\n" and an answer starting with
// "\n"): it counts with the text it starts in, the one before the boundary;
// the tokens after it count with the text after. (In the rare case where a
// pre-tokenizer's lookahead re-splits more than one token before the
// boundary, such as spaces before a word, only the first of them counts
// with the text before.) This costs one encoding of the text before each
// boundary (each trained run's start and end): O(boundaries x length).
//
// False with *error on text the tokenizer refuses (invalid UTF-8, with the
// byte offset in the concatenation), a boundary that splits a UTF-8
// character, or text whose prefixes to encode add up to more than 256 MiB
// (thousands of turns over megabytes; 100 turns over 1 MB need ~100 MB).
//
// Thread safety: safe from any thread (Tokenizer::Encode is).
bool EncodeSegments(const Tokenizer& tok,
                    const std::vector<TextSegment>& segments,
                    std::vector<int32_t>* ids, std::vector<uint8_t>* trained,
                    std::string* error);

// How instruction rows become tokens.
struct InstructionFormat {
  // Required for "messages" rows. When set, prompt/completion rows are
  // rendered as the conversation [user: prompt, assistant: completion] and
  // eos_id and add_bos are not used (the template writes BOS and the
  // end-of-turn token).
  std::optional<ChatTemplate> chat_template;
  // Without a template: appended after each completion, trained; -1 = none.
  int32_t eos_id = -1;
  // Without a template: the prompt is Encode(prompt, add_special_tokens =
  // add_bos), i.e. whatever the tokenizer's post-processor adds (Llama 3's
  // official tokenizer.json adds <|begin_of_text|>; Qwen's adds nothing).
  bool add_bos = true;
};

// Reads the JSONL file at `path` (rows as described at the top of this
// file). On success *out is replaced by the tokenized examples, one per
// non-blank row in file order. On failure *out is left as it was and
// *error names the file, for a row its 1-based line ("data.jsonl line 3:
// ..."), and the cause: invalid UTF-8, invalid JSON, a row that is not an
// object, a missing field, a field of the wrong type, an unknown field, a
// row with both kinds of fields, a "messages" row without a template, an
// unknown role or a role order the template refuses, a row with no trained
// token, an empty file (no rows), or an eos_id that names no token.
//
// Without a template a prompt/completion row is Encode(prompt, add_bos) +
// Encode(completion, false) + [eos_id], the completion and eos trained.
// With one, rows are rendered (add_generation_prompt false) and encoded by
// EncodeSegments. In every example the first token is untrained: nothing in
// the example comes before it to predict it from. Never crashes, whatever
// the bytes.
//
// Thread safety: safe from any thread (Tokenizer::Encode is).
bool ReadInstructionJsonl(const std::string& path, const Tokenizer& tok,
                          const InstructionFormat& format,
                          TokenizedExamples* out, std::string* error);

// The same from a string (for tests and the fuzzer); `name` starts every
// error in place of the file's path.
bool ParseInstructionJsonl(std::string_view text, std::string_view name,
                           const Tokenizer& tok,
                           const InstructionFormat& format,
                           TokenizedExamples* out, std::string* error);

// The ids of a generation prompt, written as training rows write a prompt:
// with a template, a user turn followed by the template's generation prompt
// (no post-processor tokens: the template writes BOS); without one,
// Encode(prompt, add_special_tokens). False with *error on text the
// template or the tokenizer refuses.
bool EncodePrompt(const Tokenizer& tok,
                  const std::optional<ChatTemplate>& chat_template,
                  std::string_view prompt, bool add_special_tokens,
                  std::vector<int32_t>* ids, std::string* error);

// The id of template `t`'s end-of-turn token (EndOfTurnToken) in `tok`, or
// -1 when the tokenizer does not read it as one token.
int32_t EndOfTurnId(const Tokenizer& tok, ChatTemplate t);

}  // namespace halftime::tokenizer

#endif  // HALFTIME_TOKENIZER_INSTRUCTION_DATA_H_
