// The halftime-worker command line, and the start-up lines it logs about
// the probed device. worker_main.cc wires these to the Worker.
//
// Thread-safety: pure functions, thread-safe.
#ifndef HALFTIME_WORKER_WORKER_FLAGS_H_
#define HALFTIME_WORKER_WORKER_FLAGS_H_

#include <optional>
#include <string>
#include <vector>

#include "common/channel.h"
#include "halftime/v1/worker.pb.h"
#include "worker/worker.h"

namespace halftime {

struct WorkerFlags {
  // Scheduler target and /metrics address.
  std::string scheduler;
  std::string metrics_address;
  int slots = 1;
  // Intra-op threads per job; cores / slots when not given.
  int threads_per_job = 0;
  // Everything but the capabilities, which the device probe fills in.
  WorkerOptions options;
  // How to reach the scheduler (target set from `scheduler`).
  ChannelOptions channel;
};

// Parses argv. Returns the flags, or sets `*exit_code` (0 for --help,
// else CLI11's usage error code, the message already printed) and returns
// nullopt.
std::optional<WorkerFlags> ParseWorkerFlags(int argc, char** argv,
                                            int* exit_code);

// What the probe found, one log line each: the native modes and GEMM
// rates, the BLAS, and each reason the fp32 baseline is degraded.
std::vector<std::string> DescribeCapabilities(
    const v1::WorkerCapabilities& capabilities);

}  // namespace halftime

#endif  // HALFTIME_WORKER_WORKER_FLAGS_H_
