// This CPU's facts from /proc/cpuinfo, as every layer reads them (the
// engine's device probe, halftime-train's environment, `halftime estimate`):
// one reader, one HALFTIME_CPU_ISA cap.
//
// Thread safety: functions of the file and the environment; safe from any
// thread.

#ifndef HALFTIME_BASE_CPU_INFO_H_
#define HALFTIME_BASE_CPU_INFO_H_

#include <string>

namespace halftime::cpu {

// The first /proc/cpuinfo line's value for `key` ("model name", "flags",
// "cpu MHz"); "" when there is none.
std::string InfoField(const std::string& key);

// HALFTIME_CPU_ISA caps what this process believes, and (set before the
// libraries load: EnsureCpuEnvironment in train/blas_env.h) what
// libtorch, oneDNN and OpenBLAS use, so that a CPU with AVX-512 and native
// bf16 behaves as one without: the suite runs the emulated-bf16 path on
// either kind of machine. Values: unset, "" or "native" (no cap), "avx2".
inline constexpr const char kIsaVariable[] = "HALFTIME_CPU_ISA";

// The cap in effect: "" or "avx2". Any other value of HALFTIME_CPU_ISA is
// an error, reported by IsaCapError.
std::string IsaCap();
// "" when HALFTIME_CPU_ISA is valid, else one sentence naming the value.
std::string IsaCapError();

// `flags` (space-separated /proc/cpuinfo flags) as the cap leaves them:
// under "avx2", without any avx512* or amx* flag.
std::string CappedFlags(const std::string& flags);

// This CPU's flags, capped.
std::string Flags();

// Whether `flags` include `flag`.
bool HasFlag(const std::string& flags, const char* flag);

// Whether `flags` name native bf16 compute (avx512_bf16 or amx_bf16).
bool HasNativeBf16(const std::string& flags);

}  // namespace halftime::cpu

#endif  // HALFTIME_BASE_CPU_INFO_H_
