#include "server/placement.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/enum_names.h"
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
    PlacementDecision& decision = decisions[j];
    int best = -1;
    bool any_capable = false;
    if (free_total > 0) {
      for (size_t w = 0; w < workers.size(); ++w) {
        if (!matches[w].ok) continue;
        any_capable = true;
        if (!workers[w].accepting || workers[w].free_slots <= 0) continue;
        // A worker that runs the precision natively beats one that
        // emulates it; then the most free slots.
        if (best < 0 ||
            std::make_tuple(!matches[w].emulated, workers[w].free_slots) >
                std::make_tuple(!matches[best].emulated,
                                workers[best].free_slots)) {
          best = static_cast<int>(w);
        }
      }
    }
    if (best >= 0) {
      decision.worker = best;
      decision.precision = matches[best].precision;
      decision.emulated = matches[best].emulated;
      --workers[best].free_slots;
      --free_total;
      continue;
    }
    if (!any_capable) {
      for (const DeviceMatch& m : matches) any_capable |= m.ok;
    }
    decision.unplaceable = !any_capable;
    if (workers.empty()) {
      decision.queue_reason = "no worker connected";
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
