#include "worker/capabilities.h"

#include <nlohmann/json.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/enum_names.h"
#include "worker/trainer_process.h"

namespace halftime {
namespace {

void AddRate(v1::WorkerCapabilities* caps, const char* dtype, double flops,
             bool native) {
  v1::DtypeRate* rate = caps->add_rates();
  rate->set_dtype(dtype);
  rate->set_flops_per_second(flops);
  rate->set_native(native);
}

// Whether some mode the worker runs natively computes in `compute`.
bool ComputesNatively(const v1::WorkerCapabilities& caps,
                      precision::Compute compute) {
  for (const precision::Rules& r : precision::AllModes()) {
    if (r.compute == compute && RunsNatively(caps, r.mode)) return true;
  }
  return false;
}

// What the device probe's callbacks, on the probe's own thread, hand over.
struct DeviceProbeState {
  absl::Mutex mu;
  absl::CondVar cv;  // signalled when `done` is set
  std::string answer ABSL_GUARDED_BY(mu);
  bool done ABSL_GUARDED_BY(mu) = false;
  ExitInfo exit_info ABSL_GUARDED_BY(mu);
};

}  // namespace

absl::StatusOr<v1::WorkerCapabilities> CapabilitiesFromProbeJson(
    const std::string& json, int slots, int threads_per_job) {
  nlohmann::json j = nlohmann::json::parse(json, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("native_precisions")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "device probe answered something unreadable: ", json.substr(0, 200)));
  }
  v1::WorkerCapabilities caps;
  caps.set_device_kind(j.value("kind", "cpu") == "cuda" ? v1::DEVICE_KIND_CUDA
                                                        : v1::DEVICE_KIND_CPU);
  caps.set_device_name(j.value("name", ""));
  caps.set_compute_capability(j.value("compute_capability", ""));
  caps.set_memory_bytes(j.value("memory_bytes", int64_t{0}));
  auto precisions = [&j](const char* key) {
    std::vector<v1::Precision> list;
    if (!j.contains(key) || !j[key].is_array()) return list;
    for (const auto& name : j[key]) {
      if (!name.is_string()) continue;
      absl::StatusOr<v1::Precision> p = ParsePrecision(name.get<std::string>());
      if (p.ok() && *p != v1::PRECISION_AUTO) list.push_back(*p);
    }
    return list;
  };
  for (v1::Precision p : precisions("native_precisions")) {
    caps.add_native_precisions(p);
  }
  for (v1::Precision p : precisions("emulated_precisions")) {
    caps.add_emulated_precisions(p);
  }
  AddRate(&caps, "fp32", j.value("fp32_flops", 0.0), true);
  AddRate(&caps, "tf32", j.value("tf32_flops", 0.0),
          ComputesNatively(caps, precision::Compute::kTf32));
  AddRate(&caps, "fp16", j.value("fp16_flops", 0.0),
          ComputesNatively(caps, precision::Compute::kFp16));
  AddRate(&caps, "bf16", j.value("bf16_flops", 0.0),
          ComputesNatively(caps, precision::Compute::kBf16) &&
              !j.value("bf16_emulated", false));
  caps.set_slots(slots);
  caps.set_threads_per_job(threads_per_job);
  caps.set_torch_version(j.value("torch_version", ""));
  caps.set_blas(j.value("blas", ""));
  if (j.contains("baseline_degraded") && j["baseline_degraded"].is_array()) {
    for (const auto& reason : j["baseline_degraded"]) {
      if (reason.is_string()) {
        caps.add_baseline_degradations(reason.get<std::string>());
      }
    }
  }
  return caps;
}

absl::StatusOr<v1::WorkerCapabilities> ProbeWithTrainer(
    const std::string& trainer_binary, const std::string& work_dir, int slots,
    int threads_per_job) {
  DeviceProbeState state;
  TrainerProcess::Options options;
  options.binary = trainer_binary;
  options.args = {"--probe-device", "--threads",
                  std::to_string(threads_per_job)};
  options.work_dir = work_dir;
  options.stderr_log = work_dir + "/probe-device.log";
  TrainerProcess::Callbacks callbacks;
  callbacks.on_event = [&](const std::string& line) {
    absl::MutexLock lock(&state.mu);
    state.answer = line;
  };
  callbacks.on_exit = [&](const ExitInfo& exit) {
    absl::MutexLock lock(&state.mu);
    state.exit_info = exit;
    state.done = true;
    state.cv.SignalAll();
  };
  auto process = TrainerProcess::Start(options, callbacks);
  if (!process.ok()) return process.status();
  (*process)->Wait();
  absl::MutexLock lock(&state.mu);
  while (!state.done) state.cv.Wait(&state.mu);
  if (state.exit_info.exit_code != 0 || state.answer.empty()) {
    return absl::UnavailableError(
        absl::StrCat("device probe failed (", state.exit_info.Describe(),
                     "): ", absl::StrJoin((*process)->StderrTail(), "\n")));
  }
  return CapabilitiesFromProbeJson(state.answer, slots, threads_per_job);
}

}  // namespace halftime
