#include "base/cpu_info.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace halftime::cpu {

std::string InfoField(const std::string& key) {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key, 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string v = line.substr(colon + 1);
    v.erase(0, v.find_first_not_of(" \t"));
    return v;
  }
  return "";
}

std::string IsaCapError() {
  const char* value = std::getenv(kIsaVariable);
  if (value == nullptr) return "";
  const std::string v = value;
  if (v.empty() || v == "native" || v == "avx2") return "";
  return std::string(kIsaVariable) + "=" + v +
         " is not a CPU cap this build knows; use avx2 (behave as a CPU "
         "without AVX-512 or native bf16) or native";
}

std::string IsaCap() {
  const char* value = std::getenv(kIsaVariable);
  return value != nullptr && std::string(value) == "avx2" ? "avx2" : "";
}

std::string CappedFlags(const std::string& flags) {
  if (IsaCap().empty()) return flags;
  std::istringstream in(flags);
  std::string kept;
  for (std::string f; in >> f;) {
    if (f.rfind("avx512", 0) == 0 || f.rfind("amx", 0) == 0) continue;
    if (!kept.empty()) kept += ' ';
    kept += f;
  }
  return kept;
}

std::string Flags() { return CappedFlags(InfoField("flags")); }

bool HasFlag(const std::string& flags, const char* flag) {
  std::istringstream in(flags);
  for (std::string f; in >> f;) {
    if (f == flag) return true;
  }
  return false;
}

bool HasNativeBf16(const std::string& flags) {
  return HasFlag(flags, "avx512_bf16") || HasFlag(flags, "amx_bf16");
}

}  // namespace halftime::cpu
