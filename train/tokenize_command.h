// `halftime-train tokenize --tokenizer FILE --in TEXT --out TOKENS.bin
// [--dtype uint16|uint32] [--add-special-tokens]`: encodes a UTF-8 text file
// with a Hugging Face tokenizer.json and writes the ids as raw
// little-endian integers, the format of `data: {kind: tokens}`. The default
// dtype is uint16 when every id fits, else uint32. Special tokens are
// added only with --add-special-tokens.
//
// Exit codes (engine/events.h): 0 written; 2 a bad flag, an unreadable or
// unsupported tokenizer.json, text that is not UTF-8 (the byte offset is
// named), or ids that do not fit --dtype uint16; 1 the output cannot be
// written. The output is written beside and renamed into place, so a
// failed run leaves no partial file.
//
// Thread-safety: runs on the calling thread; no shared state.
#ifndef HALFTIME_TRAIN_TOKENIZE_COMMAND_H_
#define HALFTIME_TRAIN_TOKENIZE_COMMAND_H_

#include <ostream>
#include <string>
#include <vector>

namespace halftime {

// Runs the command; args[0] is the program name, args[1] "tokenize".
int RunTokenizeCommand(const std::vector<std::string>& args, std::ostream& out,
                       std::ostream& err);

}  // namespace halftime

#endif  // HALFTIME_TRAIN_TOKENIZE_COMMAND_H_
