// The `halftime` command line: parses arguments, runs one verb and returns
// the process exit code (0 success, 2 bad input, 1 any other failure).
// Output goes to `out`, errors to `err`, so tests run it in-process.
//
// Thread-safety: RunCli may run concurrently with other calls; it keeps no
// global state.
#ifndef HALFTIME_CLIENT_CLI_H_
#define HALFTIME_CLIENT_CLI_H_

#include <ostream>
#include <string>
#include <vector>

namespace halftime {

// Exit codes of the CLI (documented in DESIGN.md).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitBadInput = 2;

// Runs the CLI on `args` (args[0] is the program name).
int RunCli(const std::vector<std::string>& args, std::ostream& out,
           std::ostream& err);

}  // namespace halftime

#endif  // HALFTIME_CLIENT_CLI_H_
