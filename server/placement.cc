#include "server/placement.h"

#include <algorithm>
#include <map>
#include <optional>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/enum_names.h"
#include "common/format.h"
#include "common/memory_estimate.h"
#include "common/spec.h"
#include "rules/precision.h"

namespace halftime::server {
namespace {

// Parses "8.0" into (8, 0); false on anything else.
bool ParseCapability(const std::string& text, int* major, int* minor) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, '.');
  if (parts.size() != 2) return false;
  return absl::SimpleAtoi(parts[0], major) && absl::SimpleAtoi(parts[1], minor);
}

std::string DeviceName(v1::DeviceKind kind) {
  return EnumShortName(v1::DeviceKind_descriptor(), kind);
}

// Key of the requirements that decide device matching, so jobs with equal
// requirements are matched against the fleet once per Place call.
using RequirementKey = std::tuple<int, std::string, int64_t, int, int>;

RequirementKey KeyOf(const v1::JobSpec& spec) {
  return {spec.resources().device(), spec.resources().min_compute_capability(),
          spec.resources().memory_bytes(), spec.precision(),
          spec.resources().emulation()};
}

bool AllowsEmulation(const v1::JobSpec& spec) {
  return spec.resources().emulation() == v1::EMULATION_ALLOW;
}

}  // namespace

DeviceMatch MatchDevice(const v1::JobSpec& spec,
                        const v1::WorkerCapabilities& caps) {
  DeviceMatch match;
  const v1::ResourceSpec& res = spec.resources();
  // 1. Device kind.
  if (res.device() != v1::DEVICE_KIND_UNSPECIFIED &&
      res.device() != v1::DEVICE_KIND_ANY &&
      res.device() != caps.device_kind()) {
    match.reason =
        absl::StrCat("no worker has a ", DeviceName(res.device()), " device");
    return match;
  }
  ++match.checks_passed;
  // 2. Compute capability.
  if (!res.min_compute_capability().empty()) {
    int need_major = 0, need_minor = 0, have_major = 0, have_minor = 0;
    bool have =
        caps.device_kind() == v1::DEVICE_KIND_CUDA &&
        ParseCapability(caps.compute_capability(), &have_major, &have_minor);
    if (!ParseCapability(res.min_compute_capability(), &need_major,
                         &need_minor) ||
        !have ||
        std::tie(have_major, have_minor) < std::tie(need_major, need_minor)) {
      match.reason = absl::StrCat("no worker has compute capability >= ",
                                  res.min_compute_capability());
      return match;
    }
  }
  ++match.checks_passed;
  // 3. Memory.
  if (res.memory_bytes() > 0 && caps.memory_bytes() < res.memory_bytes()) {
    match.reason = absl::StrCat("no worker has ", res.memory_bytes(),
                                " bytes of device memory");
    return match;
  }
  ++match.checks_passed;
  // 4. Precision, natively (or emulated, where the job allows it).
  v1::Precision precision = spec.precision();
  auto runs = [&caps](precision::Mode mode) {
    return RunsNatively(caps, mode);
  };
  if (precision == v1::PRECISION_AUTO ||
      precision == v1::PRECISION_UNSPECIFIED) {
    // fp32, last in the order, is chosen even unreported: every device runs
    // it.
    precision = ToProto(precision::ResolveAuto(runs));
  } else if (!runs(ToMode(precision))) {
    const precision::Mode mode = ToMode(precision);
    if (!RunsEmulated(caps, mode)) {
      match.reason = absl::StrCat("no worker runs ", PrecisionName(precision),
                                  " natively; it needs a worker with ",
                                  precision::NativeNeedDescription(mode));
      return match;
    }
    if (!AllowsEmulation(spec)) {
      // Passes one more check than a worker that cannot run it at all, so
      // that this reason, which names the remedy, explains the queue.
      ++match.checks_passed;
      match.reason = absl::StrCat(
          "no worker runs ", PrecisionName(precision),
          " natively; a worker emulates it (memory saved, not time): set "
          "resources.emulation: allow to run there, or add a worker with ",
          precision::NativeNeedDescription(mode));
      return match;
    }
    match.emulated = true;
  }
  match.checks_passed += 2;
  match.ok = true;
  match.precision = precision;
  return match;
}

namespace {

// Where a job fits on one worker, memory-wise.
struct MemoryFit {
  // Fits in the worker's unpromised memory now (in `precision`).
  bool now = false;
  // Would fit on the worker with nothing else running.
  bool empty = false;
  v1::Precision precision = v1::PRECISION_UNSPECIFIED;
  // For `precision` when it fits now; else the least-memory candidate's.
  std::optional<v1::MemoryEstimate> estimate;
};

// The modes to try for `spec` on a worker whose device match is `match`,
// best first: the matched precision alone, or for auto the 16-bit modes
// of auto's order the device runs natively, then its other native modes
// by least memory, then auto's last resort (fp32).
std::vector<v1::MemoryEstimate> Candidates(const v1::JobSpec& spec,
                                           const DeviceMatch& match,
                                           const v1::WorkerCapabilities& caps,
                                           const v1::ModelShape& shape) {
  EstimateDevice device;
  device.cuda = caps.device_kind() == v1::DEVICE_KIND_CUDA;
  device.bf16_emulated =
      !device.cuda && !RunsNatively(caps, precision::Mode::kBf16Mixed);
  auto estimate = [&](v1::Precision p) {
    return EstimateMemory(spec, shape, p, spec.adapter().base_dtype(), device);
  };
  const bool automatic = spec.precision() == v1::PRECISION_AUTO ||
                         spec.precision() == v1::PRECISION_UNSPECIFIED;
  if (!automatic) return {estimate(match.precision)};
  const std::vector<precision::Mode>& order = precision::AutoOrder();
  std::vector<v1::MemoryEstimate> first, others;
  for (size_t i = 0; i + 1 < order.size(); ++i) {
    if (RunsNatively(caps, order[i]))
      first.push_back(estimate(ToProto(order[i])));
  }
  for (const precision::Rules& rules : precision::AllModes()) {
    if (rules.mode == order.back() ||
        std::find(order.begin(), order.end(), rules.mode) != order.end() ||
        !RunsNatively(caps, rules.mode)) {
      continue;
    }
    others.push_back(estimate(ToProto(rules.mode)));
  }
  std::stable_sort(
      others.begin(), others.end(),
      [](const v1::MemoryEstimate& a, const v1::MemoryEstimate& b) {
        return a.total_bytes() < b.total_bytes();
      });
  first.insert(first.end(), others.begin(), others.end());
  first.push_back(estimate(ToProto(order.back())));
  return first;
}

MemoryFit FitMemory(const v1::JobSpec& spec,
                    const absl::StatusOr<v1::ModelShape>& shape,
                    const DeviceMatch& match, const PlacementWorker& worker) {
  MemoryFit fit;
  fit.precision = match.precision;
  const v1::WorkerCapabilities& caps = *worker.caps;
  if (!shape.ok() || caps.memory_bytes() <= 0) {
    fit.now = fit.empty = true;  // nothing to check against
    return fit;
  }
  const int64_t free = worker.free_memory_bytes >= 0 ? worker.free_memory_bytes
                                                     : caps.memory_bytes();
  const std::vector<v1::MemoryEstimate> tried =
      Candidates(spec, match, caps, *shape);
  for (const v1::MemoryEstimate& e : tried) {
    fit.empty |= e.total_bytes() <= caps.memory_bytes();
    if (!fit.estimate || e.total_bytes() < fit.estimate->total_bytes()) {
      fit.estimate = e;
      fit.precision = e.precision();
    }
  }
  for (const v1::MemoryEstimate& e : tried) {
    if (e.total_bytes() <= free) {
      fit.now = true;
      fit.estimate = e;
      fit.precision = e.precision();
      break;
    }
  }
  return fit;
}

std::string DescribeEstimate(const v1::MemoryEstimate& e) {
  return absl::StrCat("an estimated ", FormatBytes(e.total_bytes()), " in ",
                      PrecisionName(e.precision()), " (weights ",
                      FormatBytes(e.weight_bytes()), ", gradients ",
                      FormatBytes(e.gradient_bytes()), ", optimizer ",
                      FormatBytes(e.optimizer_state_bytes()), ", activations ",
                      FormatBytes(e.activation_bytes()), ", workspace ",
                      FormatBytes(e.workspace_bytes()), ")");
}

}  // namespace

std::vector<PlacementDecision> Place(
    const std::vector<const v1::JobSpec*>& jobs,
    std::vector<PlacementWorker> workers) {
  std::vector<PlacementDecision> decisions(jobs.size());
  // Per distinct requirement: the match against every worker.
  std::map<RequirementKey, std::vector<DeviceMatch>> memo;
  int free_total = 0;
  for (const PlacementWorker& w : workers) {
    if (w.accepting) free_total += std::max(0, w.free_slots);
  }
  for (size_t j = 0; j < jobs.size(); ++j) {
    const v1::JobSpec& spec = *jobs[j];
    auto [it, inserted] = memo.try_emplace(KeyOf(spec));
    std::vector<DeviceMatch>& matches = it->second;
    if (inserted) {
      matches.reserve(workers.size());
      for (const PlacementWorker& w : workers) {
        matches.push_back(MatchDevice(spec, *w.caps));
      }
    }
    const absl::StatusOr<v1::ModelShape> shape =
        ModelShapeOf(spec, /*read_folder=*/false);
    PlacementDecision& decision = decisions[j];
    int best = -1;
    MemoryFit best_fit;
    bool any_capable = false, any_fits_empty = false,
         slot_lacked_memory = false;
    // For the queue reason: the least memory the job needs on a capable
    // worker, the largest such worker, and the most memory one has free.
    std::optional<v1::MemoryEstimate> least;
    int64_t largest = 0, most_free = 0;
    for (size_t w = 0; w < workers.size(); ++w) {
      if (!matches[w].ok) continue;
      any_capable = true;
      const MemoryFit fit = FitMemory(spec, shape, matches[w], workers[w]);
      any_fits_empty |= fit.empty;
      if (fit.estimate &&
          (!least || fit.estimate->total_bytes() < least->total_bytes())) {
        least = fit.estimate;
      }
      largest = std::max(largest, workers[w].caps->memory_bytes());
      most_free = std::max(most_free, workers[w].free_memory_bytes);
      if (free_total <= 0 || !workers[w].accepting ||
          workers[w].free_slots <= 0) {
        continue;
      }
      if (!fit.now) {
        slot_lacked_memory = true;
        continue;
      }
      // A worker that runs the precision natively beats one that
      // emulates it; then the most free slots.
      if (best < 0 ||
          std::make_tuple(!matches[w].emulated, workers[w].free_slots) >
              std::make_tuple(!matches[best].emulated,
                              workers[best].free_slots)) {
        best = static_cast<int>(w);
        best_fit = fit;
      }
    }
    if (best >= 0) {
      decision.worker = best;
      decision.precision = best_fit.precision;
      decision.emulated = matches[best].emulated;
      decision.estimate = best_fit.estimate;
      --workers[best].free_slots;
      if (best_fit.estimate && workers[best].free_memory_bytes >= 0) {
        workers[best].free_memory_bytes -= best_fit.estimate->total_bytes();
      }
      --free_total;
      continue;
    }
    decision.estimate = least;
    decision.unplaceable = !any_capable || !any_fits_empty;
    if (workers.empty()) {
      decision.queue_reason = "no worker connected";
    } else if (any_capable && !any_fits_empty && least) {
      decision.queue_reason = absl::StrCat(
          "needs ", DescribeEstimate(*least),
          "; the largest capable worker has ", FormatBytes(largest),
          ": lower batch_size or data.seq_len, train an adapter "
          "(adapter.kind: lora) on a smaller base_dtype, or add a worker "
          "with more memory");
    } else if (any_capable && slot_lacked_memory && least) {
      decision.queue_reason = absl::StrCat(
          "waiting for memory: needs ", DescribeEstimate(*least), "; ",
          FormatBytes(most_free), " is free on the roomiest capable worker");
    } else if (any_capable) {
      decision.queue_reason = "waiting for a free slot";
    } else {
      const DeviceMatch* furthest = &matches[0];
      for (const DeviceMatch& m : matches) {
        if (m.checks_passed > furthest->checks_passed) furthest = &m;
      }
      decision.queue_reason = furthest->reason;
    }
  }
  return decisions;
}

}  // namespace halftime::server
