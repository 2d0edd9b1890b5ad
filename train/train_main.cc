// halftime-train: runs one job from a spec file. Logic in train_command.cc.
#include <iostream>
#include <string>
#include <vector>

#include "train/blas_env.h"
#include "train/train_command.h"

int main(int argc, char** argv) {
  halftime::EnsureOpenBlasCoreType(argv);
  return halftime::RunTrainCommand(std::vector<std::string>(argv, argv + argc),
                                   std::cout, std::cerr);
}
