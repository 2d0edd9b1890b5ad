// Device facts the engine and the worker's capability probe need: what the
// device runs natively, precision resolution, autocast, and tensor-memory
// accounting. This header has no libtorch includes.
//
// Thread safety: ProbeDevice and ResolvePrecision are thread-compatible (they
// set torch's global thread count while measuring). The memory counters are
// thread-safe. AutocastGuard affects the calling thread only.

#ifndef HALFTIME_ENGINE_DEVICE_H_
#define HALFTIME_ENGINE_DEVICE_H_

#include <cstdint>
#include <string>

#include "engine/options.h"
#include "engine/report.h"
#include "engine/status.h"

namespace halftime::engine {

// Describes the device a job would run on: CUDA device 0 when `want_cuda`
// and this build and machine have one, else the CPU. With `measure`, times a
// small matmul in each dtype (about a second in all) to fill the *_flops
// fields and to confirm bf16 runs; without, only static facts are used.
// bf16 is native on a CPU only with CpuBf16Native() (and, when measured, a
// successful bf16 matmul); otherwise bf16_emulated is set, no bf16 mode is
// listed as native, the bf16 modes are listed as emulated, and bf16_flops
// is the rate of the engine's emulated bf16 matmul. `threads` <= 0 means all
// hardware threads.
DeviceCapabilities ProbeDevice(int threads, bool want_cuda = true,
                               bool measure = true);

// The probed GEMM ceiling a job in `precision` computes against, FLOP/s:
// the matmul rate of its compute dtype (fp32; tf32 on CUDA; bf16 for the
// bf16 modes; fp16 for the fp16 modes), timed as ProbeDevice times it (a
// fraction of a second). MFU is a job's model FLOP/s over this. 0 when the
// dtype does not run here.
double GemmCeilingFlops(Precision precision, bool cuda);

// Resolves kAuto (the first of bf16-mixed, fp16-mixed, fp32 that `caps` runs
// natively) and checks that `caps` runs `requested` natively, or by
// emulation when `allow_emulation` (then *emulated is set). Errors
// (kUnsupported) name the mode and the missing capability, e.g. "precision
// fp16-mixed needs a CUDA device; this build/device has none", and how to
// allow emulation where the device offers it.
TrainStatus ResolvePrecision(Precision requested,
                             const DeviceCapabilities& caps,
                             bool allow_emulation, Precision* resolved,
                             bool* emulated);

// Whether this CPU computes bf16 natively: avx512_bf16 or amx_bf16 among
// its flags, as capped by HALFTIME_CPU_ISA (baseline_check.h). Read once.
bool CpuBf16Native();

// The CUDA device a job runs on (a rank will choose it), and its name in
// summaries ("cuda:0").
inline constexpr int kCudaDeviceIndex = 0;
std::string CudaDeviceName();

// True when this binary was built against a CUDA libtorch and a GPU is
// visible.
bool CudaAvailable();

// Enables autocast for the calling thread for its lifetime (no-op when
// `enabled` is false) and restores the previous state, clearing the autocast
// weight-cast cache, on destruction.
class AutocastGuard {
 public:
  // `cuda` selects the CUDA autocast, `bf16` its dtype (else fp16).
  AutocastGuard(bool enabled, bool cuda, bool bf16);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool enabled_;
  bool cuda_;
  bool prev_enabled_ = false;
  int prev_dtype_ = 0;
};

// Tensor-memory accounting. On the CPU a counting allocator (installed by
// InstallMemoryCounter, idempotent, process-wide) tracks live bytes and the
// peak; on CUDA the caching allocator's statistics are used.
void InstallMemoryCounter();
// Makes glibc malloc keep freed tensor memory for reuse instead of handing
// it back to the kernel (process-wide; idempotent; a no-op elsewhere than
// glibc). A training step frees and reallocates the same large activations
// every step; by default glibc returns them (munmap, heap trimming) and
// every step faults them in again, page by page: measured 1.9M page faults
// and 2.6 s/step on gpt-micro fp32 (2 threads) against 0.4M and 1.2 s with
// this. The resident set stays at the step's high-water mark, which a
// training process reaches every step anyway.
void KeepFreedHostMemory();
// Sets the peak to the bytes live now.
void ResetPeakMemory(bool cuda);
int64_t PeakMemoryBytes(bool cuda);
int64_t LiveMemoryBytes(bool cuda);

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_DEVICE_H_
