#include "rules/precision.h"

namespace halftime::precision {
namespace {

constexpr char kNoUnderflow[] = "gradients do not underflow";

}  // namespace

const std::vector<Rules>& AllModes() {
  // mode, name, compute, weights, needs, default dynamic scaling,
  // why no loss scaling, fallback target.
  static const std::vector<Rules> kModes = {
      {Mode::kFp32, "fp32", Compute::kFp32, Weights::kFp32, Needs::kAnyDevice,
       false, kNoUnderflow, true},
      {Mode::kTf32, "tf32", Compute::kTf32, Weights::kFp32, Needs::kCudaAmpere,
       false, kNoUnderflow, false},
      {Mode::kFp16Mixed, "fp16-mixed", Compute::kFp16, Weights::kFp32,
       Needs::kCuda, true, "", false},
      {Mode::kBf16Mixed, "bf16-mixed", Compute::kBf16, Weights::kFp32,
       Needs::kNativeBf16, false, "", true},
      {Mode::kFp16Master, "fp16-master", Compute::kFp16,
       Weights::kHalfFp32Master, Needs::kCuda, true, "", false},
      {Mode::kBf16Master, "bf16-master", Compute::kBf16,
       Weights::kHalfFp32Master, Needs::kNativeBf16, false, "", false},
      {Mode::kBf16Pure, "bf16-pure", Compute::kBf16, Weights::kHalfOnly,
       Needs::kNativeBf16, false, "keeps no fp32 copy to unscale into", false},
  };
  return kModes;
}

const Rules* RulesOf(Mode mode) {
  for (const Rules& r : AllModes()) {
    if (r.mode == mode) return &r;
  }
  return nullptr;
}

const char* ModeName(Mode mode) {
  const Rules* r = RulesOf(mode);
  return r != nullptr ? r->name : kAutoName;
}

bool ParseMode(const std::string& name, Mode* out) {
  if (name == kAutoName) {
    *out = Mode::kAuto;
    return true;
  }
  for (const Rules& r : AllModes()) {
    if (name == r.name) {
      *out = r.mode;
      return true;
    }
  }
  return false;
}

std::string AllModeNames() {
  std::string names;
  for (const Rules& r : AllModes()) {
    names += r.name;
    names += ", ";
  }
  return names + kAutoName;
}

const std::vector<Mode>& AutoOrder() {
  // bf16 first: fp16's narrower range needs loss scaling.
  static const std::vector<Mode> kOrder = {Mode::kBf16Mixed, Mode::kFp16Mixed,
                                           Mode::kFp32};
  return kOrder;
}

bool RunsNatively(Mode mode, const DeviceTraits& traits) {
  const Rules* r = RulesOf(mode);
  if (r == nullptr) return true;
  const bool ampere = traits.cuda && traits.cuda_major >= 8;
  switch (r->needs) {
    case Needs::kAnyDevice:
      return true;
    case Needs::kCuda:
      return traits.cuda;
    case Needs::kCudaAmpere:
      return ampere;
    case Needs::kNativeBf16:
      return traits.cuda ? ampere : traits.cpu_bf16;
  }
  return false;
}

std::vector<Mode> NativeModes(const DeviceTraits& traits) {
  std::vector<Mode> modes;
  for (const Rules& r : AllModes()) {
    if (RunsNatively(r.mode, traits)) modes.push_back(r.mode);
  }
  return modes;
}

bool RunsEmulated(Mode mode, const DeviceTraits& traits) {
  const Rules* r = RulesOf(mode);
  if (r == nullptr || traits.cuda) return false;
  return r->needs == Needs::kNativeBf16 && !traits.cpu_bf16;
}

std::vector<Mode> EmulatedModes(const DeviceTraits& traits) {
  std::vector<Mode> modes;
  for (const Rules& r : AllModes()) {
    if (RunsEmulated(r.mode, traits)) modes.push_back(r.mode);
  }
  return modes;
}

std::string NativeNeedDescription(Mode mode) {
  const Rules* r = RulesOf(mode);
  if (r == nullptr) return "any device";
  switch (r->needs) {
    case Needs::kAnyDevice:
      return "any device";
    case Needs::kCuda:
      return "a CUDA GPU";
    case Needs::kCudaAmpere:
      return "a CUDA GPU of compute capability 8.0 or newer";
    case Needs::kNativeBf16:
      return "native bf16 (a CPU with avx512_bf16 or amx_bf16, or a CUDA GPU "
             "of compute capability 8.0 or newer)";
  }
  return "any device";
}

bool NeedsCuda(Mode mode) {
  const Rules* r = RulesOf(mode);
  return r != nullptr &&
         (r->needs == Needs::kCuda || r->needs == Needs::kCudaAmpere);
}

}  // namespace halftime::precision
