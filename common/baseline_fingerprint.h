// BaselineFingerprint: what an fp32 savings baseline depends on, so that a
// baseline measured once can be reused (`savings.baseline: cached`) by
// every later job that would measure the same thing.
//
// The fingerprint covers the model (builtin preset or TorchScript file,
// loss), the batch shape (data kind and file, sequence length, vocabulary,
// batch size, gradient accumulation), the optimizer, the device (name and
// kind), the intra-op threads the trainer runs with and the libtorch
// version and the BLAS its fp32 GEMMs run on. It deliberately leaves out what
// does not change an fp32 step's time or memory: precision, learning rate,
// schedule, step count, seed. Worker and scheduler compute it with this one
// function, so they agree.
//
// Thread-safety: pure function, thread-safe.
#ifndef HALFTIME_COMMON_BASELINE_FINGERPRINT_H_
#define HALFTIME_COMMON_BASELINE_FINGERPRINT_H_

#include <string>

#include "halftime/v1/job_spec.pb.h"
#include "halftime/v1/worker.pb.h"

namespace halftime {

// Returns a 16-hex-digit fingerprint of the fp32 baseline `spec` (defaults
// applied) would measure on a worker with `caps`. Threads are the spec's
// when set, else the worker's threads_per_job (what the trainer gets).
std::string BaselineFingerprint(const v1::JobSpec& spec,
                                const v1::WorkerCapabilities& caps);

}  // namespace halftime

#endif  // HALFTIME_COMMON_BASELINE_FINGERPRINT_H_
