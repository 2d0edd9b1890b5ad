// The fp32 baseline a job's savings are measured against: reused from the
// scheduler's cache when the assignment carries one with this worker's
// fingerprint, else probed by running the job's own spec in fp32.
//
// Thread-safety: the functions are thread-safe; RunBaselineProbe blocks
// its caller for the probe's run.
#ifndef HALFTIME_WORKER_BASELINE_PROBE_H_
#define HALFTIME_WORKER_BASELINE_PROBE_H_

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "halftime/v1/worker_gateway.pb.h"
#include "worker/step_record.h"
#include "worker/trainer_launcher.h"

namespace halftime {

// Whether a job is measured against an fp32 baseline at all: not when its
// spec says `savings.baseline: none`, nor when it runs in fp32 itself (an
// adapter job on a base stored in other than fp32 still is).
bool WantsBaseline(const v1::JobSpec& spec);

// The cached baseline `assignment` carries, when its spec asks for the
// cache and the entry was measured with `fingerprint` (a worker never
// trusts figures measured under another arrangement); nullopt otherwise.
std::optional<Baseline> CachedBaseline(const v1::Assignment& assignment,
                                       const std::string& fingerprint);

// The shortest steady time a probe measures before it stops: a median of
// ten 50 ms steps moves by tens of percent on a busy host, one of sixty
// far less.
inline constexpr std::chrono::milliseconds kProbeMinSteadyTime{3000};
// Probes stop by this many times probe_steps even if still short of
// kProbeMinSteadyTime (tiny models on fast devices).
inline constexpr int kProbeMaxStepsFactor = 50;

struct ProbeOptions {
  std::string trainer_binary;
  // The job's spec (JSON) and the directory the probe runs in; its stderr
  // goes to probe-stderr.log there. Nothing else is written.
  std::string spec_path;
  std::string work_dir;
  // Passed on as the trainer's --data-root when set.
  std::string data_root;
  int threads = 1;
  // At least this many steady steps (after the warm-up) are measured, and
  // at least `min_steady_time` of them, up to min_steps·kProbeMaxStepsFactor
  // steps in all.
  int min_steps = 10;
  std::chrono::milliseconds min_steady_time = kProbeMinSteadyTime;
  std::chrono::milliseconds stall_timeout{0};
  // Stamped on the baseline (see common/baseline_fingerprint.h).
  std::string fingerprint;
  // An adapter job: the probe trains the same adapter on an fp32 base.
  bool adapter = false;
};

// Runs the job's spec in fp32 (no loss scaling, warm-up, eval or outputs;
// same model, batch, data, device and threads) until it has measured
// enough steps, and returns their baseline; its probe_seconds is the whole
// run's cost, measured on `clock`. `should_stop` is polled every 100 ms
// and kills the probe when true (CANCELLED). UNAVAILABLE when the probe
// failed or measured nothing.
absl::StatusOr<Baseline> RunBaselineProbe(
    TrainerLauncher& launcher, const Clock& clock, const ProbeOptions& options,
    const std::function<bool()>& should_stop);

}  // namespace halftime

#endif  // HALFTIME_WORKER_BASELINE_PROBE_H_
