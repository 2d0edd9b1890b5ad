// The worker's capability probe: runs `halftime-train --probe-device` (the
// same binary that trains, so the probe sees the same libtorch and BLAS)
// and turns its answer into the WorkerCapabilities advertised to the
// scheduler. Keeps libtorch out of the daemon itself.
//
// Thread-safety: thread-safe; ProbeWithTrainer blocks while the probe runs.
#ifndef HALFTIME_WORKER_CAPABILITIES_H_
#define HALFTIME_WORKER_CAPABILITIES_H_

#include <string>

#include "absl/status/statusor.h"
#include "halftime/v1/worker.pb.h"

namespace halftime {

// Parses the probe's JSON object. INVALID_ARGUMENT when it is malformed.
absl::StatusOr<v1::WorkerCapabilities> CapabilitiesFromProbeJson(
    const std::string& json, int slots, int threads_per_job);

// Runs `trainer_binary --probe-device --threads N` in `work_dir` and parses
// its answer. UNAVAILABLE when the probe fails (its stderr in the message).
absl::StatusOr<v1::WorkerCapabilities> ProbeWithTrainer(
    const std::string& trainer_binary, const std::string& work_dir, int slots,
    int threads_per_job);

}  // namespace halftime

#endif  // HALFTIME_WORKER_CAPABILITIES_H_
