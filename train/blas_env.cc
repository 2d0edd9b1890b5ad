#include "train/blas_env.h"

#include <strings.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include "base/cpu_info.h"
#include "engine/baseline_check.h"

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

std::vector<std::pair<std::string, std::string>> CpuCapEnvironment(
    const std::string& cap) {
  if (cap != "avx2") return {};
  return {{"ATEN_CPU_CAPABILITY", "avx2"}, {"ONEDNN_MAX_CPU_ISA", "AVX2"}};
}

void EnsureOpenBlasCoreType(char** argv) {
  bool changed = false;
  for (const auto& [name, value] : CpuCapEnvironment(cpu::IsaCap())) {
    const char* now = std::getenv(name.c_str());
    if (now != nullptr && value == now) continue;
    setenv(name.c_str(), value.c_str(), 1);
    changed = true;
  }
  const char* preset = std::getenv("OPENBLAS_CORETYPE");
  const std::string core = OpenBlasCoreTypeToSet(
      preset, OpenBlasCoreTypeForFlags(engine::ReadCpuFacts().flags));
  if (!core.empty()) {
    setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
    changed = true;
  }
  if (changed) execv("/proc/self/exe", argv);
}

}  // namespace halftime
