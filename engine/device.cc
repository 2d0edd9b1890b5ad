#include "engine/device.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/cuda.h>
#include <torch/version.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <limits>
#include <mutex>
#include <sstream>
#include <thread>

#include "base/cpu_info.h"
#include "engine/baseline_check.h"
#include "engine/bf16_emulation.h"
#include "engine/models/kernels.h"

#ifdef HALFTIME_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace halftime::engine {
namespace {

// ---- CPU memory counter ----------------------------------------------------

std::atomic<int64_t> g_live_bytes{0};
std::atomic<int64_t> g_peak_bytes{0};

void CountAlloc(int64_t n) {
  const int64_t live = g_live_bytes.fetch_add(n, std::memory_order_relaxed) + n;
  int64_t peak = g_peak_bytes.load(std::memory_order_relaxed);
  while (live > peak && !g_peak_bytes.compare_exchange_weak(
                            peak, live, std::memory_order_relaxed)) {
  }
}

// Each block starts with a header holding the bytes requested; the tensor's
// data follows it, still aligned as c10::alloc_cpu aligns.
constexpr size_t kCountHeaderBytes = 64;
static_assert(kCountHeaderBytes % alignof(std::max_align_t) == 0);
static_assert(kCountHeaderBytes >= sizeof(int64_t));

void CountingDelete(void* data) {
  if (data == nullptr) return;
  char* block = static_cast<char*>(data) - kCountHeaderBytes;
  int64_t nbytes = 0;
  std::memcpy(&nbytes, block, sizeof(nbytes));
  g_live_bytes.fetch_sub(nbytes, std::memory_order_relaxed);
  c10::free_cpu(block);
}

// Wraps c10::alloc_cpu and counts the bytes each tensor asked for: what its
// tensors hold, independent of malloc's rounding. (malloc_usable_size is
// not: glibc serves a large block from mmap, rounded up to whole pages, until
// its adaptive threshold rises after the first frees, so the same job
// counted ~0.2 MiB more on gpt-micro when it ran first in a process.) Every
// DataPtr has data == context, as libtorch's raw_allocate requires.
class CountingCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t nbytes) const override {
    if (nbytes == 0) {
      return {nullptr, nullptr, &CountingDelete,
              c10::Device(c10::DeviceType::CPU)};
    }
    char* block =
        static_cast<char*>(c10::alloc_cpu(nbytes + kCountHeaderBytes));
    const int64_t requested = static_cast<int64_t>(nbytes);
    std::memcpy(block, &requested, sizeof(requested));
    CountAlloc(requested);
    void* data = block + kCountHeaderBytes;
    return {data, data, &CountingDelete, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &CountingDelete; }
};

// ---- probing
// -----------------------------------------------------------------

int64_t MemTotalBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  while (in >> key >> kb) {
    if (key == "MemTotal:") return kb * 1024;
    in.ignore(256, '\n');
  }
  return 0;
}

// FLOP/s of an n x n matmul in `dtype` on `device`; 0 if it fails. The
// best of several short windows: what the device sustains, not a moment's
// contention (another library's pool threads still spinning after the
// previous dtype's run cost bf16 a fifth of its rate in one long window).
// A CPU bf16 matmul is timed as the engine runs it: emulated through fp32
// where the CPU lacks native bf16.
double TimeMatmul(at::ScalarType dtype, at::Device device, int64_t n) {
  constexpr int kWindows = 5;
  constexpr double kWindowSeconds = 0.06;
  try {
    at::Tensor a =
        at::randn({n, n}, at::TensorOptions().device(device)).to(dtype);
    at::Tensor b =
        at::randn({n, n}, at::TensorOptions().device(device)).to(dtype);
    at::NoGradGuard no_grad;
    at::Tensor c = Matmul(a, b);  // warm-up (and a host sync below)
    if (!at::isfinite(c.to(at::kFloat)).all().item<bool>()) return 0.0;
    double best = 0.0;
    for (int window = 0; window < kWindows; ++window) {
      int reps = 0;
      const auto start = std::chrono::steady_clock::now();
      double elapsed = 0.0;
      while (elapsed < kWindowSeconds || reps < 2) {
        c = Matmul(a, b);
        ++reps;
#ifdef HALFTIME_WITH_CUDA
        if (device.is_cuda()) at::cuda::getCurrentCUDAStream().synchronize();
#endif
        elapsed = std::chrono::duration<double>(
                      std::chrono::steady_clock::now() - start)
                      .count();
      }
      best = std::max(best, 2.0 * n * n * n * reps / elapsed);
    }
    return best;
  } catch (const std::exception&) {
    return 0.0;
  }
}

}  // namespace

std::string CudaDeviceName() {
  return "cuda:" + std::to_string(kCudaDeviceIndex);
}

bool CpuBf16Native() {
  static const bool native = [] {
    return cpu::HasNativeBf16(ReadCpuFacts().flags);
  }();
  return native;
}

bool CudaAvailable() {
#ifdef HALFTIME_WITH_CUDA
  return torch::cuda::is_available();
#else
  return false;
#endif
}

DeviceCapabilities ProbeDevice(int threads, bool want_cuda, bool measure) {
  DeviceCapabilities caps;
  if (threads <= 0) {
    threads = std::max(1u, std::thread::hardware_concurrency());
  }
  caps.threads = threads;
  at::set_num_threads(threads);
  if (want_cuda && CudaAvailable()) {
#ifdef HALFTIME_WITH_CUDA
    const cudaDeviceProp* prop =
        at::cuda::getDeviceProperties(kCudaDeviceIndex);
    caps.kind = "cuda";
    caps.name = prop->name;
    caps.memory_bytes = static_cast<int64_t>(prop->totalGlobalMem);
    caps.compute_capability =
        std::to_string(prop->major) + "." + std::to_string(prop->minor);
    const bool sm80 = prop->major >= 8;
    precision::DeviceTraits traits;
    traits.cuda = true;
    traits.cuda_major = prop->major;
    caps.native_precisions = precision::NativeModes(traits);
    caps.emulated_precisions = precision::EmulatedModes(traits);
    caps.bf16_emulated =
        !precision::RunsNatively(Precision::kBf16Mixed, traits);
    if (measure) {
      const at::Device dev(at::kCUDA, kCudaDeviceIndex);
      caps.fp32_flops = TimeMatmul(at::kFloat, dev, 4096);
      caps.fp16_flops = TimeMatmul(at::kHalf, dev, 4096);
      if (sm80) {
        caps.bf16_flops = TimeMatmul(at::kBFloat16, dev, 4096);
        at::globalContext().setAllowTF32CuBLAS(true);
        caps.tf32_flops = TimeMatmul(at::kFloat, dev, 4096);
        at::globalContext().setAllowTF32CuBLAS(false);
      }
    }
    return caps;
#endif
  }
  caps.kind = "cpu";
  caps.name = cpu::InfoField("model name");
  if (caps.name.empty()) caps.name = "cpu";
  caps.memory_bytes = MemTotalBytes();
  bool bf16 = CpuBf16Native();
  if (measure) {
    const at::Device dev(at::kCPU);
    caps.fp32_flops = TimeMatmul(at::kFloat, dev, 512);
    caps.bf16_flops = TimeMatmul(at::kBFloat16, dev, 512);
    if (caps.bf16_flops <= 0.0) bf16 = false;
  }
  const BlasLibrary blas = DetectBlas();
  caps.blas = blas.Describe();
  caps.baseline_degradations =
      BaselineDegradations(blas, ReadCpuFacts(), threads, caps.fp32_flops);
  precision::DeviceTraits traits;
  traits.cpu_bf16 = bf16;
  caps.native_precisions = precision::NativeModes(traits);
  caps.emulated_precisions = precision::EmulatedModes(traits);
  caps.bf16_emulated = !precision::RunsNatively(Precision::kBf16Mixed, traits);
  return caps;
}

double GemmCeilingFlops(Precision mode, bool cuda) {
  const precision::Rules* rules = precision::RulesOf(mode);
  const precision::Compute compute =
      rules != nullptr ? rules->compute : precision::Compute::kFp32;
#ifdef HALFTIME_WITH_CUDA
  if (cuda) {
    const at::Device dev(at::kCUDA, kCudaDeviceIndex);
    switch (compute) {
      case precision::Compute::kTf32: {
        const bool before = at::globalContext().allowTF32CuBLAS();
        at::globalContext().setAllowTF32CuBLAS(true);
        const double flops = TimeMatmul(at::kFloat, dev, 4096);
        at::globalContext().setAllowTF32CuBLAS(before);
        return flops;
      }
      case precision::Compute::kFp16:
        return TimeMatmul(at::kHalf, dev, 4096);
      case precision::Compute::kBf16:
        return TimeMatmul(at::kBFloat16, dev, 4096);
      case precision::Compute::kFp32:
        return TimeMatmul(at::kFloat, dev, 4096);
    }
  }
#endif
  (void)cuda;
  const at::Device dev(at::kCPU);
  switch (compute) {
    case precision::Compute::kBf16:
      return TimeMatmul(at::kBFloat16, dev, 512);
    case precision::Compute::kFp32:
      return TimeMatmul(at::kFloat, dev, 512);
    default:
      return 0;  // fp16 and tf32 do not run on a CPU
  }
}

TrainStatus ResolvePrecision(Precision requested,
                             const DeviceCapabilities& caps,
                             bool allow_emulation, Precision* resolved,
                             bool* emulated) {
  *emulated = false;
  if (requested == Precision::kAuto) {
    *resolved = precision::ResolveAuto(
        [&caps](Precision p) { return caps.Supports(p); });
    return TrainStatus::Ok();
  }
  if (caps.Supports(requested)) {
    *resolved = requested;
    return TrainStatus::Ok();
  }
  if (allow_emulation && caps.Emulates(requested)) {
    *resolved = requested;
    *emulated = true;
    return TrainStatus::Ok();
  }
  const std::string name = PrecisionName(requested);
  const bool cuda = caps.kind == "cuda";
  std::string why;
  switch (precision::RulesOf(requested)->needs) {
    case precision::Needs::kCuda:
    case precision::Needs::kAnyDevice:  // (fp32 is always supported)
      why = "needs a CUDA device; this build/device has none";
      break;
    case precision::Needs::kCudaAmpere:
      why = cuda ? "needs a CUDA device of compute capability 8.0 or newer; " +
                       caps.name + " is " + caps.compute_capability
                 : "needs a CUDA device of compute capability 8.0 or newer; "
                   "this build/device has none";
      break;
    case precision::Needs::kNativeBf16:
      why = cuda ? "needs native bf16 (compute capability 8.0 or newer); " +
                       caps.name + " is " + caps.compute_capability
                 : "needs native bf16 (avx512_bf16 or amx_bf16); this CPU (" +
                       caps.name + ") would only emulate it";
      break;
  }
  if (caps.Emulates(requested)) {
    why +=
        " (it saves memory but not time there): allow that with "
        "resources.emulation: allow or --allow-emulation";
  }
  return TrainStatus::Error(TrainStatus::kUnsupported,
                            "precision " + name + " " + why);
}

// libtorch 2.4 replaced the per-backend autocast calls with ones taking the
// device type (the old ones are deprecated, then dropped); 1.13 has only
// the old ones.
#if TORCH_VERSION_MAJOR > 2 || \
    (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define HALFTIME_AUTOCAST_BY_DEVICE 1
#endif

namespace {

bool AutocastEnabled(bool cuda) {
#ifdef HALFTIME_AUTOCAST_BY_DEVICE
  return at::autocast::is_autocast_enabled(cuda ? at::kCUDA : at::kCPU);
#else
  return cuda ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

at::ScalarType AutocastDtype(bool cuda) {
#ifdef HALFTIME_AUTOCAST_BY_DEVICE
  return at::autocast::get_autocast_dtype(cuda ? at::kCUDA : at::kCPU);
#else
  return cuda ? at::autocast::get_autocast_gpu_dtype()
              : at::autocast::get_autocast_cpu_dtype();
#endif
}

void SetAutocast(bool cuda, bool enabled, at::ScalarType dtype) {
#ifdef HALFTIME_AUTOCAST_BY_DEVICE
  const at::DeviceType type = cuda ? at::kCUDA : at::kCPU;
  at::autocast::set_autocast_enabled(type, enabled);
  at::autocast::set_autocast_dtype(type, dtype);
#else
  if (cuda) {
    at::autocast::set_enabled(enabled);
    at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_cpu_enabled(enabled);
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
#endif
}

}  // namespace

AutocastGuard::AutocastGuard(bool enabled, bool cuda, bool bf16)
    : enabled_(enabled), cuda_(cuda) {
  if (!enabled_) return;
  prev_enabled_ = AutocastEnabled(cuda_);
  prev_dtype_ = static_cast<int>(AutocastDtype(cuda_));
  SetAutocast(cuda_, true, bf16 ? at::kBFloat16 : at::kHalf);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!enabled_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  SetAutocast(cuda_, prev_enabled_, static_cast<at::ScalarType>(prev_dtype_));
}

void InstallMemoryCounter() {
  static CountingCpuAllocator* allocator = [] {
    auto* a = new CountingCpuAllocator();  // lives for the process
    c10::SetCPUAllocator(a, /*priority=*/100);
    return a;
  }();
  (void)allocator;
}

void KeepFreedHostMemory() {
#if defined(__GLIBC__)
  static const bool done = [] {
    // Blocks up to glibc's largest mmap threshold (32 MiB on 64-bit) come
    // from the heap, and the heap is never trimmed. Setting either disables
    // glibc's adaptive threshold, so both are set: the trim alone would
    // leave every block over 128 KiB to mmap (measured 8.3 s/step).
    constexpr int kLargestMmapThreshold = 32 << 20;
    mallopt(M_MMAP_THRESHOLD, kLargestMmapThreshold);
    mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
    return true;
  }();
  (void)done;
#endif
}

#ifdef HALFTIME_WITH_CUDA
namespace {

// StatType::AGGREGATE, the index of the all-pools statistic: 0 in every
// libtorch, while the enum moved namespaces in 2.x.
constexpr size_t kAggregateStat = 0;

// The caching allocator exists only after CUDA's lazy init; before the
// first CUDA tensor its statistics calls fail "Invalid device argument".
// One tiny tensor initializes it in every libtorch (1.13's
// Context::lazyInitCUDA became lazyInitDevice in 2.x); it is freed at once,
// so no later peak counts it.
void EnsureCudaInitialized() {
  static std::once_flag once;
  std::call_once(once, [] {
    (void)at::empty({1},
                    at::TensorOptions().device(at::kCUDA, kCudaDeviceIndex));
  });
}

}  // namespace
#endif

void ResetPeakMemory(bool cuda) {
#ifdef HALFTIME_WITH_CUDA
  if (cuda) {
    EnsureCudaInitialized();
    c10::cuda::CUDACachingAllocator::resetPeakStats(at::cuda::current_device());
    return;
  }
#endif
  (void)cuda;
  g_peak_bytes.store(g_live_bytes.load());
}

int64_t PeakMemoryBytes(bool cuda) {
#ifdef HALFTIME_WITH_CUDA
  if (cuda) {
    EnsureCudaInitialized();
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(
        at::cuda::current_device());
    return stats.allocated_bytes[kAggregateStat].peak;
  }
#endif
  (void)cuda;
  return g_peak_bytes.load();
}

int64_t LiveMemoryBytes(bool cuda) {
#ifdef HALFTIME_WITH_CUDA
  if (cuda) {
    EnsureCudaInitialized();
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(
        at::cuda::current_device());
    return stats.allocated_bytes[kAggregateStat].current;
  }
#endif
  (void)cuda;
  return g_live_bytes.load();
}

}  // namespace halftime::engine
