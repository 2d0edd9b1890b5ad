#include "engine/baseline_check.h"

#include <dlfcn.h>
#include <sched.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "base/cpu_info.h"

namespace halftime::engine {
namespace {

bool Contains(const std::string& s, const char* part) {
  return s.find(part) != std::string::npos;
}

// CPUs a cgroup v2 `cpu.max` quota allows ("max 100000": no limit, 0).
int CgroupCpuLimit() {
  std::ifstream in("/sys/fs/cgroup/cpu.max");
  std::string quota;
  double period = 0;
  if (!(in >> quota >> period) || quota == "max" || period <= 0) return 0;
  try {
    return std::max(1, static_cast<int>(std::ceil(std::stod(quota) / period)));
  } catch (const std::exception&) {
    return 0;
  }
}

const char* ThreadingName(BlasThreading t) {
  switch (t) {
    case BlasThreading::kSequential:
      return "sequential";
    case BlasThreading::kPthreads:
      return "pthreads";
    case BlasThreading::kOpenMP:
      return "OpenMP";
    case BlasThreading::kUnknown:
      break;
  }
  return "threading unknown";
}

template <typename Fn>
Fn Symbol(void* handle, const char* name) {
  return reinterpret_cast<Fn>(dlsym(handle, name));
}

}  // namespace

std::string BlasLibrary::Describe() const {
  std::string out = family;
  if (!details.empty()) out += " " + details;
  out += " (";
  out += ThreadingName(threading);
  if (threads > 0) out += ", " + std::to_string(threads) + " threads";
  out += ")";
  if (!path.empty()) out += " " + path;
  return out;
}

BlasLibrary ClassifyBlasPath(const std::string& path) {
  BlasLibrary b;
  b.path = path;
  if (Contains(path, "openblas")) {
    b.family = "OpenBLAS";
  } else if (Contains(path, "blis")) {
    b.family = "BLIS";
  } else if (Contains(path, "mkl")) {
    b.family = "MKL";
  } else if (Contains(path, "atlas")) {
    b.family = "ATLAS";
  } else if (Contains(path, "/blas/") || Contains(path, "libblas.so")) {
    // Debian's netlib reference lives in .../blas/; a bare libblas.so that
    // is none of the above is the reference too.
    b.family = "reference BLAS";
    b.threading = BlasThreading::kSequential;
  } else {
    b.family = "unknown";
  }
  if (b.family != "reference BLAS") {
    if (Contains(path, "openmp")) {
      b.threading = BlasThreading::kOpenMP;
    } else if (Contains(path, "pthread") || Contains(path, "openblasp-")) {
      b.threading = BlasThreading::kPthreads;
    } else if (Contains(path, "serial")) {
      b.threading = BlasThreading::kSequential;
    }
  }
  return b;
}

BlasLibrary DetectBlas() {
  // The library that provides sgemm_ to the global scope is the one
  // libtorch's fp32 GEMMs bind to (libtorch_cpu links libblas.so.3 before
  // libopenblas.so.0; the first in load order wins).
  void* sgemm = dlsym(RTLD_DEFAULT, "sgemm_");
  Dl_info info{};
  if (sgemm == nullptr || dladdr(sgemm, &info) == 0 ||
      info.dli_fname == nullptr) {
    BlasLibrary none;
    none.family = "none";
    return none;
  }
  char resolved[4096];
  const std::string path = realpath(info.dli_fname, resolved) != nullptr
                               ? std::string(resolved)
                               : std::string(info.dli_fname);
  BlasLibrary b = ClassifyBlasPath(path);
  void* handle = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
  if (handle == nullptr) return b;
  if (auto config = Symbol<char* (*)()>(handle, "openblas_get_config")) {
    b.family = "OpenBLAS";
    std::string details = config();
    // "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64"
    if (details.rfind("OpenBLAS ", 0) == 0) details = details.substr(9);
    b.details = details;
    if (auto parallel = Symbol<int (*)()>(handle, "openblas_get_parallel")) {
      switch (parallel()) {
        case 0:
          b.threading = BlasThreading::kSequential;
          break;
        case 1:
          b.threading = BlasThreading::kPthreads;
          break;
        case 2:
          b.threading = BlasThreading::kOpenMP;
          break;
        default:
          break;
      }
    }
    if (auto n = Symbol<int (*)()>(handle, "openblas_get_num_threads")) {
      b.threads = n();
    }
  } else if (auto version = Symbol<const char* (*)()>(
                 handle, "bli_info_get_version_str")) {
    b.family = "BLIS";
    b.details = version();
  } else if (Symbol<int (*)()>(handle, "mkl_get_max_threads") != nullptr) {
    b.family = "MKL";
  }
  dlclose(handle);
  return b;
}

CpuFacts ReadCpuFacts() {
  CpuFacts cpu;
  cpu.flags = cpu::Flags();
  try {
    const std::string mhz = cpu::InfoField("cpu MHz");
    if (!mhz.empty()) cpu.mhz = std::stod(mhz);
  } catch (const std::exception&) {
    cpu.mhz = 0;
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    cpu.allowed_cpus = CPU_COUNT(&set);
  }
  const int limit = CgroupCpuLimit();
  if (limit > 0 && (cpu.allowed_cpus == 0 || limit < cpu.allowed_cpus)) {
    cpu.allowed_cpus = limit;
  }
  return cpu;
}

double Fp32PeakFlops(const CpuFacts& cpu, int threads) {
  if (cpu.mhz <= 0 || threads <= 0) return 0;
  double per_cycle = 4;  // SSE: one 4-wide multiply and add
  if (cpu::HasFlag(cpu.flags, "avx512f")) {
    per_cycle = 32;
  } else if (cpu::HasFlag(cpu.flags, "avx2") &&
             cpu::HasFlag(cpu.flags, "fma")) {
    per_cycle = 16;
  } else if (cpu::HasFlag(cpu.flags, "avx")) {
    per_cycle = 8;
  }
  const int cores =
      cpu.allowed_cpus > 0 ? std::min(threads, cpu.allowed_cpus) : threads;
  return per_cycle * cpu.mhz * 1e6 * cores;
}

std::vector<std::string> BaselineDegradations(const BlasLibrary& blas,
                                              const CpuFacts& cpu, int threads,
                                              double fp32_flops) {
  std::vector<std::string> reasons;
  if (blas.family == "reference BLAS" || blas.family == "none") {
    reasons.push_back(
        "fp32 GEMMs run on the " +
        (blas.family == "none" ? std::string("no BLAS at all")
                               : "reference BLAS (" + blas.path + ")") +
        ", not an optimized one: install libopenblas0-openmp and point "
        "libblas.so.3 at it");
  }
  if (blas.threading == BlasThreading::kPthreads && threads > 1 &&
      blas.threads != 1) {
    reasons.push_back(
        blas.family + "'s pthreads build (" + blas.path + ") runs " +
        (blas.threads > 0 ? std::to_string(blas.threads) : std::string("its")) +
        " threads of its own beside libtorch's " + std::to_string(threads) +
        " OpenMP threads, which spin against each other: use the OpenMP "
        "build (libopenblas0-openmp)");
  }
  if (cpu.allowed_cpus > 0 && threads > cpu.allowed_cpus) {
    reasons.push_back(std::to_string(threads) + " intra-op threads on " +
                      std::to_string(cpu.allowed_cpus) +
                      " usable CPUs: lower --threads-per-job to at most " +
                      std::to_string(cpu.allowed_cpus));
  }
  const double peak = Fp32PeakFlops(cpu, threads);
  if (fp32_flops > 0 && peak > 0 && fp32_flops < kMinFp32PeakFraction * peak) {
    char line[256];
    std::snprintf(line, sizeof(line),
                  "fp32 GEMM ran at %.1f GFLOP/s, under %.0f%% of the %.0f "
                  "GFLOP/s this CPU's vector units allow at %d threads",
                  fp32_flops / 1e9, kMinFp32PeakFraction * 100, peak / 1e9,
                  threads);
    reasons.push_back(line);
  }
  return reasons;
}

}  // namespace halftime::engine
