// halftime: the command-line client. All logic lives in client/cli.cc.
#include <unistd.h>

#include <iostream>
#include <string>
#include <vector>

#include "client/cli.h"
#include "client/terminal.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  return halftime::RunCli(args, std::cout, std::cerr,
                          halftime::DetectTerminal(STDOUT_FILENO));
}
