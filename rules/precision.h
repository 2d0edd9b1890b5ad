// The precision rules: one table that says, for every precision mode, its
// spec name, what its GEMMs compute in, how it holds the weights, what a
// device needs to run it natively, its default loss scaling and which
// loss-scaling modes it accepts; plus the order in which `auto` picks a mode
// and the loss-scaling defaults.
//
// This is the only place these facts are written. The engine
// (engine), spec validation (common/spec.cc), placement
// (server/placement.cc) and the CLI read them from here. The header depends
// on the standard library alone, so the engine still builds with libtorch
// alone and the scheduler links no libtorch.
//
// Adding a mode (fp8 on Hopper, say) means: a row in kModes (precision.cc),
// its value in proto/halftime/v1/job_spec.proto's Precision, the engine's
// implementation, and tests. tests/rules/precision_rules_test.cc walks the
// table and fails until every layer agrees.
//
// Thread safety: constants and pure functions; safe from any thread.

#ifndef HALFTIME_RULES_PRECISION_H_
#define HALFTIME_RULES_PRECISION_H_

#include <string>
#include <vector>

namespace halftime::precision {

// Every precision a spec may name. kAuto is a request, not a mode: it is
// resolved to one of the others (AutoOrder) before training.
enum class Mode {
  kFp32,
  kTf32,
  kFp16Mixed,
  kBf16Mixed,
  kFp16Master,
  kBf16Master,
  kBf16Pure,
  kAuto,
};

// What the GEMMs of forward and backward compute in.
enum class Compute { kFp32, kTf32, kFp16, kBf16 };

// How the trained weights are held.
enum class Weights {
  kFp32,            // fp32 weights; 16-bit compute, if any, under autocast
  kHalfFp32Master,  // 16-bit model weights, fp32 master copy in the optimizer
  kHalfOnly,        // 16-bit weights and optimizer state, no fp32 copy
};

// What a device needs to run a mode natively (not emulated).
enum class Needs {
  kAnyDevice,
  kCuda,        // libtorch has no CPU fp16 matmul
  kCudaAmpere,  // compute capability 8.0 or newer
  kNativeBf16,  // avx512_bf16/amx_bf16 on a CPU, or CUDA Ampere
};

// The rules of one mode (not kAuto).
struct Rules {
  Mode mode;
  // The spec, CLI and metrics-label name ("bf16-mixed"); it equals the short
  // name of the proto's PRECISION_* value.
  const char* name;
  Compute compute;
  Weights weights;
  Needs needs;
  // Whether `loss_scaling.mode` defaults to dynamic (else to none).
  bool default_dynamic_scaling;
  // Why this mode takes no loss scaling ("" when it accepts any mode): the
  // spec's loss_scaling.mode must then be none.
  const char* no_loss_scaling_reason;
  // Whether loss_scaling.on_min_scale: fallback may switch a job to it.
  bool fallback_target;
};

// The name of the auto request.
inline constexpr const char kAutoName[] = "auto";

// Every mode's rules, in the proto's declaration order; kAuto has none.
const std::vector<Rules>& AllModes();

// The rules of `mode`; nullptr for kAuto.
const Rules* RulesOf(Mode mode);

// The spec name of `mode` ("auto" for kAuto).
const char* ModeName(Mode mode);

// Parses a spec name, "auto" included. Returns false (leaving *out alone)
// when `name` names no mode.
bool ParseMode(const std::string& name, Mode* out);

// The names of every mode, then "auto": for error messages.
std::string AllModeNames();

// The modes auto tries, best first. The first one a device runs natively is
// chosen; fp32, last, runs everywhere.
const std::vector<Mode>& AutoOrder();

// The facts about a device that decide what it runs natively.
struct DeviceTraits {
  bool cuda = false;
  // CUDA compute capability major (8 = Ampere); ignored on a CPU.
  int cuda_major = 0;
  // The CPU has avx512_bf16 or amx_bf16 (and bf16 GEMMs run); ignored on CUDA.
  bool cpu_bf16 = false;
};

// Whether a device with `traits` runs `mode` natively. kAuto: true.
bool RunsNatively(Mode mode, const DeviceTraits& traits);

// The modes a device with `traits` runs natively, in table order.
std::vector<Mode> NativeModes(const DeviceTraits& traits);

// Whether a device with `traits` runs `mode` only by emulation: a CPU
// without native bf16 computes the bf16 modes' GEMMs (and its slow bf16
// kernels) in fp32 and rounds to bf16, with bf16 weights, activations and
// saved tensors, so such a job saves memory but not time. A job runs
// emulated only when its spec allows it (resources.emulation: allow;
// docs/design.md). False where the mode runs natively, and for every mode
// a CUDA device lacks.
bool RunsEmulated(Mode mode, const DeviceTraits& traits);

// The modes a device with `traits` runs only by emulation, in table order.
std::vector<Mode> EmulatedModes(const DeviceTraits& traits);

// What a device needs to run `mode` natively, for messages that say what
// would let a job run, e.g. "native bf16 (a CPU with avx512_bf16 or
// amx_bf16, or a CUDA GPU of compute capability 8.0 or newer)".
std::string NativeNeedDescription(Mode mode);

// Whether `mode` runs only on CUDA devices (fp16 modes, tf32): a CPU worker
// that reports it is not believed.
bool NeedsCuda(Mode mode);

// The mode `auto` resolves to, given which modes a device runs natively.
template <typename Native>
Mode ResolveAuto(const Native& native) {
  for (Mode m : AutoOrder()) {
    if (native(m)) return m;
  }
  return Mode::kFp32;
}

// Loss-scaling defaults (spec `loss_scaling:` keys; docs/design.md). The
// initial scale and the growth/backoff policy are PyTorch GradScaler's.
namespace loss_scaling {
inline constexpr double kInitScale = 65536.0;  // 2^16
inline constexpr double kGrowthFactor = 2.0;
inline constexpr double kBackoffFactor = 0.5;
inline constexpr int kGrowthInterval = 2000;
// 1 = GradScaler; more = Megatron's DynamicGradScaler hysteresis.
inline constexpr int kHysteresis = 1;
inline constexpr double kMinScale = 1.0;
inline constexpr double kMaxScale = 16777216.0;  // 2^24
inline constexpr int kMinScalePatience = 10;
inline constexpr Mode kFallbackPrecision = Mode::kBf16Mixed;
}  // namespace loss_scaling

}  // namespace halftime::precision

#endif  // HALFTIME_RULES_PRECISION_H_
