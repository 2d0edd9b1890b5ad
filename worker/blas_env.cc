#include "worker/blas_env.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

namespace halftime {

std::string OpenBlasCoreTypeForFlags(const std::string& flags) {
  std::set<std::string> have;
  std::istringstream in(flags);
  for (std::string flag; in >> flag;) have.insert(flag);
  auto all = [&](std::initializer_list<const char*> wanted) {
    for (const char* f : wanted) {
      if (!have.count(f)) return false;
    }
    return true;
  };
  if (all({"avx512f", "avx512bw", "avx512dq", "avx512vl"})) return "SKYLAKEX";
  if (all({"avx2", "fma"})) return "HASWELL";
  return "";
}

void EnsureOpenBlasCoreType(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, flags;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) == 0) {
      flags = line.substr(line.find(':') + 1);
      break;
    }
  }
  const std::string core = OpenBlasCoreTypeForFlags(flags);
  if (core.empty()) return;
  setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
  execv("/proc/self/exe", argv);
}

}  // namespace halftime
