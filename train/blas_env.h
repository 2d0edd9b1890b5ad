// OpenBLAS picks its kernels from the CPU model. Inside VMs it often fails to
// identify the CPU ("Prescott") and runs fp32 matmuls with generic kernels,
// ~10x slower, and machine images often pin OPENBLAS_CORETYPE to an older
// core (seen here: "Haswell" on an AVX-512 CPU, 25% slower fp32 GEMMs than
// SKYLAKEX): every fp32 baseline, and so every savings figure, would be
// inflated. These helpers choose the core type from the CPU's feature flags
// instead, before OpenBLAS is loaded.
//
// Thread-safety: call from main() before starting threads.
#ifndef HALFTIME_TRAIN_BLAS_ENV_H_
#define HALFTIME_TRAIN_BLAS_ENV_H_

#include <string>
#include <utility>
#include <vector>

namespace halftime {

// The OpenBLAS core type for a CPU with these /proc/cpuinfo `flags`
// (space-separated): SKYLAKEX with AVX-512 (F, BW, DQ, VL), HASWELL with
// AVX2 and FMA, else "" (let OpenBLAS decide).
std::string OpenBlasCoreTypeForFlags(const std::string& flags);

// The core type to run with when OPENBLAS_CORETYPE is `preset` (nullptr:
// unset) on a CPU whose flags call for `best` (OpenBlasCoreTypeForFlags):
// `best` when unset or when `preset` names an older x86 core whose kernels
// use narrower vectors than `best`'s (Prescott ... Haswell, Zen under
// SKYLAKEX), else "" (nothing to change, or a choice of the user's that is
// not an older x86 core: it stands). Case-insensitive.
std::string OpenBlasCoreTypeToSet(const char* preset, const std::string& best);

// The variables that make libtorch and oneDNN honour a HALFTIME_CPU_ISA cap
// (trainer/baseline_check.h): for "avx2", ATEN_CPU_CAPABILITY=avx2 and
// ONEDNN_MAX_CPU_ISA=AVX2; none for "".
std::vector<std::pair<std::string, std::string>> CpuCapEnvironment(
    const std::string& cap);

// Sets OPENBLAS_CORETYPE per OpenBlasCoreTypeToSet (from the CPU's flags as
// HALFTIME_CPU_ISA caps them, so a cap of avx2 picks HASWELL kernels) and the
// CpuCapEnvironment of the cap, then re-executes /proc/self/exe with the
// same `argv`, since the libraries read them only when they load (the BLAS
// description in the device probe names the core in use). Returns when
// nothing needed doing (or exec failed: the program then runs with the
// libraries' own choices).
void EnsureOpenBlasCoreType(char** argv);

}  // namespace halftime

#endif  // HALFTIME_TRAIN_BLAS_ENV_H_
