#include "worker/blas_env.h"

#include <strings.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

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

std::string OpenBlasCoreTypeToSet(const char* preset, const std::string& best) {
  if (best.empty()) return "";
  if (preset == nullptr || *preset == '\0') return best;
  // x86 core types by the widest vector FMA their kernels use.
  static const std::pair<const char*, int> kRank[] = {
      {"PRESCOTT", 1},      {"CORE2", 1},     {"PENRYN", 1},
      {"DUNNINGTON", 1},    {"NEHALEM", 1},   {"ATOM", 1},
      {"SANDYBRIDGE", 2},   {"BULLDOZER", 2}, {"PILEDRIVER", 2},
      {"STEAMROLLER", 2},   {"EXCAVATOR", 2}, {"HASWELL", 3},
      {"ZEN", 3},           {"SKYLAKEX", 4},  {"COOPERLAKE", 4},
      {"SAPPHIRERAPIDS", 4}};
  auto rank = [](const char* core) {
    for (const auto& [name, r] : kRank) {
      if (strcasecmp(name, core) == 0) return r;
    }
    return 0;  // not a known x86 core: the user's choice stands
  };
  const int have = rank(preset);
  return have > 0 && have < rank(best.c_str()) ? best : "";
}

void EnsureOpenBlasCoreType(char** argv) {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, flags;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) == 0) {
      flags = line.substr(line.find(':') + 1);
      break;
    }
  }
  const char* preset = std::getenv("OPENBLAS_CORETYPE");
  const std::string core =
      OpenBlasCoreTypeToSet(preset, OpenBlasCoreTypeForFlags(flags));
  if (core.empty()) return;
  setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
  execv("/proc/self/exe", argv);
}

}  // namespace halftime
