// halftime: the command-line client. All logic lives in client/cli.cc.
#include <grpc/support/log.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "client/cli.h"
#include "client/terminal.h"

namespace {

// Drops gRPC's own log lines ("E1129 ... Handshake failed ..."): the CLI
// explains every failed call in one sentence instead.
void DropGrpcLog(gpr_log_func_args* /*args*/) {}

}  // namespace

int main(int argc, char** argv) {
  // GRPC_VERBOSITY or GRPC_TRACE in the environment keep them, to debug.
  if (std::getenv("GRPC_VERBOSITY") == nullptr &&
      std::getenv("GRPC_TRACE") == nullptr) {
    gpr_set_log_function(DropGrpcLog);
  }
  std::vector<std::string> args(argv, argv + argc);
  return halftime::RunCli(args, std::cout, std::cerr,
                          halftime::DetectTerminal(STDOUT_FILENO));
}
