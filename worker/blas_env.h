// OpenBLAS picks its kernels from the CPU model. Inside VMs it often fails to
// identify the CPU ("Prescott") and runs fp32 matmuls with generic kernels,
// ~10x slower: every fp32 baseline, and so every savings figure, would be
// inflated. These helpers choose the core type from the CPU's feature flags
// instead, before OpenBLAS is loaded.
//
// Thread-safety: call from main() before starting threads.
#ifndef HALFTIME_WORKER_BLAS_ENV_H_
#define HALFTIME_WORKER_BLAS_ENV_H_

#include <string>

namespace halftime {

// The OpenBLAS core type for a CPU with these /proc/cpuinfo `flags`
// (space-separated): SKYLAKEX with AVX-512 (F, BW, DQ, VL), HASWELL with
// AVX2 and FMA, else "" (let OpenBLAS decide).
std::string OpenBlasCoreTypeForFlags(const std::string& flags);

// When OPENBLAS_CORETYPE is unset and this CPU's type is known, sets it and
// re-executes /proc/self/exe with the same `argv`, since OpenBLAS reads it
// only when it is loaded. Returns when nothing needed doing (or exec failed:
// the program then runs with OpenBLAS's own choice).
void EnsureOpenBlasCoreType(char** argv);

}  // namespace halftime

#endif  // HALFTIME_WORKER_BLAS_ENV_H_
