// Whether this process's fp32 is the fastest the machine runs, so that a
// saving measured against it is honest. The arrangements known to cripple
// fp32 on a CPU are: the reference BLAS; a BLAS that runs threads of its own
// beside libtorch's OpenMP threads (OpenBLAS's or BLIS's pthreads builds:
// both pools spin on the same cores); more intra-op threads than the CPUs
// this process may use; and a measured GEMM rate far below what the CPU's
// vector units allow. No libtorch includes: the checks are plain functions of
// facts read once, so tests feed them recorded facts.
//
// Thread safety: DetectBlas and ReadCpuFacts read process-wide state and are
// thread-safe; the rest are pure functions.

#ifndef HALFTIME_ENGINE_BASELINE_CHECK_H_
#define HALFTIME_ENGINE_BASELINE_CHECK_H_

#include <string>
#include <vector>

namespace halftime::engine {

// How a BLAS runs its threads.
enum class BlasThreading { kUnknown, kSequential, kPthreads, kOpenMP };

// The BLAS that libtorch's fp32 GEMMs run on in this process.
struct BlasLibrary {
  // "OpenBLAS", "BLIS", "MKL", "ATLAS", "reference BLAS" or "unknown".
  std::string family;
  // Version and build details when the library says (OpenBLAS's config).
  std::string details;
  // Path of the shared object mapped into this process ("" when none).
  std::string path;
  BlasThreading threading = BlasThreading::kUnknown;
  // The BLAS's own thread count (0: not known).
  int threads = 0;

  // One line for users, e.g. "OpenBLAS 0.3.21 (OpenMP, 2 threads)
  // /usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3".
  std::string Describe() const;
};

// Facts about the CPU this process may run on.
struct CpuFacts {
  // /proc/cpuinfo `flags` of the first CPU.
  std::string flags;
  // /proc/cpuinfo `cpu MHz` of the first CPU (0: not known).
  double mhz = 0;
  // CPUs this process may use: its affinity mask, capped by a cgroup v2
  // `cpu.max` quota (0: not known).
  int allowed_cpus = 0;
};

// Names the BLAS mapped into this process from its symbols and path.
BlasLibrary DetectBlas();

// The family and threading of a BLAS from its shared object's path alone
// (e.g. ".../openblas-pthread/libblas.so.3"): DetectBlas's fallback, and
// what tests check. Leaves `threads` and `details` empty.
BlasLibrary ClassifyBlasPath(const std::string& path);

// The CPU facts, with the flags capped by HALFTIME_CPU_ISA (CappedCpuFlags).
CpuFacts ReadCpuFacts();

// A lower bound of the fp32 FMA peak of `threads` cores of this CPU, FLOP/s:
// the widest vector FMA its flags name (AVX-512: 32 FLOP/cycle, counting one
// 512-bit or two 256-bit FMA pipes; AVX2+FMA: 16; AVX: 8; else 4) times
// /proc/cpuinfo's clock, often the base clock. 0 when the clock is not known.
double Fp32PeakFlops(const CpuFacts& cpu, int threads);

// A measured fp32 GEMM rate under this fraction of Fp32PeakFlops is far
// below what the CPU allows. Measured on a 2-core AMD EPYC VM (bound 134
// GFLOP/s, so 13.4 here): OpenMP OpenBLAS 290-310 GFLOP/s idle, 13-80 with
// a two-job build running beside it; the reference BLAS 4.6.
inline constexpr double kMinFp32PeakFraction = 0.1;

// Why an fp32 baseline measured in this arrangement would not be the fastest
// fp32 this machine runs: one sentence per cause, naming what to change;
// empty when none is found. `threads` is libtorch's intra-op thread count,
// `fp32_flops` the probe's measured fp32 GEMM rate at that count (0: not
// measured, which skips that check).
std::vector<std::string> BaselineDegradations(const BlasLibrary& blas,
                                              const CpuFacts& cpu, int threads,
                                              double fp32_flops);

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_BASELINE_CHECK_H_
