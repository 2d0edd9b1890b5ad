// Parsing one of halftime-train's command lines with CLI11, the same way
// for every verb: --help prints the usage (exit 0); a bad or missing flag
// is named on stderr (exit 2).
//
// Thread-safety: a pure function of its arguments.
#ifndef HALFTIME_TRAIN_COMMAND_LINE_H_
#define HALFTIME_TRAIN_COMMAND_LINE_H_

#include <CLI/CLI.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "engine/events.h"

namespace halftime {

// Parses args[first..] (args[first] stands as the program name) into `app`.
// Returns the exit code when the command ends here (help shown, or a parse
// error reported as "`program`: what"); nullopt when it goes on.
inline std::optional<int> ParseCommandLine(CLI::App& app,
                                           const std::vector<std::string>& args,
                                           size_t first, const char* program,
                                           std::ostream& out,
                                           std::ostream& err) {
  std::vector<const char*> argv;
  for (size_t i = first; i < args.size(); ++i) argv.push_back(args[i].c_str());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::CallForHelp&) {
    out << app.help();
    return engine::events::kExitOk;
  } catch (const CLI::ParseError& e) {
    err << program << ": " << e.what() << "\n";
    return engine::events::kExitBadInput;
  }
  return std::nullopt;
}

}  // namespace halftime

#endif  // HALFTIME_TRAIN_COMMAND_LINE_H_
