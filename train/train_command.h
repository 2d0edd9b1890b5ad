// `halftime-train SPEC [--out DIR] [--metrics-jsonl FILE] [--resume CKPT]`:
// runs one job from a spec file, standalone or under halftime-worker.
// `halftime-train tokenize ...` is tokenize_command.h's.
//
// Exit codes: 0 success; 2 bad spec, bad data or a precision this device
// cannot run; 1 training failure (reason on stderr); 130/143 stopped by
// SIGINT/SIGTERM after writing a checkpoint (resume with --resume).
//
// Thread-safety: RunTrainCommand installs process-wide signal handlers and
// trains on the calling thread; run one per process.
#ifndef HALFTIME_TRAIN_TRAIN_COMMAND_H_
#define HALFTIME_TRAIN_TRAIN_COMMAND_H_

#include <ostream>
#include <string>
#include <vector>

namespace halftime {

// Runs the command; args[0] is the program name.
int RunTrainCommand(const std::vector<std::string>& args, std::ostream& out,
                    std::ostream& err);

}  // namespace halftime

#endif  // HALFTIME_TRAIN_TRAIN_COMMAND_H_
