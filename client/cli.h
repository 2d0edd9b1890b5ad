// The `halftime` command line: parses arguments, runs one verb and returns
// the process exit code (0 success, 2 bad input, 1 any other failure; for
// `watch` and `submit --watch` the job's outcome, 130 on Ctrl-C).
// Output goes to `out`, errors to `err`, so tests run it in-process.
//
// Verbs: validate, submit, get, list, watch, cancel, workers, savings, logs.
// Global flags: --server (HALFTIME_SERVER), --token-file
// (HALFTIME_TOKEN_FILE), --tls-ca, --tls-cert, --tls-key, --timeout.
//
// Thread-safety: RunCli may run concurrently with other calls; it keeps no
// global state, except that `watch` handles SIGINT while it runs.
#ifndef HALFTIME_CLIENT_CLI_H_
#define HALFTIME_CLIENT_CLI_H_

#include <ostream>
#include <string>
#include <vector>

#include "client/terminal.h"

namespace halftime {

// Exit codes of the CLI (documented in docs/design.md).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitBadInput = 2;

// Runs the CLI on `args` (args[0] is the program name). `terminal`
// describes `out`: main() passes DetectTerminal(STDOUT_FILENO); the
// overload without it treats `out` as a pipe (no redrawn progress line,
// tables 120 columns wide).
int RunCli(const std::vector<std::string>& args, std::ostream& out,
           std::ostream& err, const TerminalInfo& terminal);
int RunCli(const std::vector<std::string>& args, std::ostream& out,
           std::ostream& err);

}  // namespace halftime

#endif  // HALFTIME_CLIENT_CLI_H_
