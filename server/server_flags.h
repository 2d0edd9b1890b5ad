// The halftime-scheduler command line. main.cc wires the result to a
// SchedulerServer.
//
// Thread-safety: pure functions, thread-safe.
#ifndef HALFTIME_SERVER_SERVER_FLAGS_H_
#define HALFTIME_SERVER_SERVER_FLAGS_H_

#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "server/server.h"

namespace halftime::server {

// Parses `args` (args[0] is the program name) into the server's options,
// durations ("15s", "500ms" or plain seconds) and device prices included.
// Returns the options, or sets `*exit_code` (0 for --help, 2 for bad
// flags, with the message naming the flag written to `err`; help to `out`)
// and returns nullopt.
std::optional<ServerOptions> ParseServerFlags(
    const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
    int* exit_code);

}  // namespace halftime::server

#endif  // HALFTIME_SERVER_SERVER_FLAGS_H_
