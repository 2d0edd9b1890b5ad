// `halftime-train generate --model DIR (--prompt TEXT | --prompt-ids 1,2,3)
// [--max-new-tokens N] [--temperature T] [--top-p P] [--seed S]
// [--chat-template NAME] [--threads N] [-o text|json]`: continues a prompt
// with a Hugging Face model folder (a pretrained one, or a job's hf/
// output), using the folder's tokenizer.json. Greedy at temperature 0 (the
// default), seeded sampling above it; generation stops at the folder's
// eos_token_id (and the template's end-of-turn token) or after N tokens.
// With --chat-template the prompt is written as a user turn of that
// template, as instruction training writes it. `-o json` prints
// {"ids": [new ids], "text": "their text"}; text mode prints the text.
//
// Exit codes (engine/events.h): 0 generated; 2 a bad flag, a folder that
// does not load, a prompt the tokenizer refuses or an id outside the
// vocabulary; 1 generation failed.
//
// Thread-safety: runs on the calling thread; no shared state.
#ifndef HALFTIME_TRAIN_GENERATE_COMMAND_H_
#define HALFTIME_TRAIN_GENERATE_COMMAND_H_

#include <ostream>
#include <string>
#include <vector>

namespace halftime {

// Runs the command; args[0] is the program name, args[1] "generate".
int RunGenerateCommand(const std::vector<std::string>& args, std::ostream& out,
                       std::ostream& err);

}  // namespace halftime

#endif  // HALFTIME_TRAIN_GENERATE_COMMAND_H_
