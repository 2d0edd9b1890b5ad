// Placement: which queued job goes to which worker.
//
// Jobs are considered highest priority first and FIFO within a priority; a
// job goes only to a worker that accepts work (connected, not draining),
// has a free slot and can run it: device kind, minimum compute capability,
// device memory and a precision its device runs natively, or one it only
// emulates when the job says resources.emulation: allow. `auto` resolves
// to bf16-mixed when native, else fp16-mixed, else fp32 (never emulated).
// Among capable workers one that runs the precision natively wins, then the
// one with the most free slots (ties: first listed), which spreads load. A
// job that cannot be placed gets a queue reason naming what is missing and
// what would let it run, e.g. "no worker runs bf16-mixed natively; a worker
// emulates it ...: set resources.emulation: allow ..." or "waiting for a
// free slot".
//
// Memory: where the job's model dimensions are known
// (common/memory_estimate.h), a job goes only to a worker whose memory not
// promised to running jobs holds its estimated peak; `auto` then takes the
// first that fits of: auto's 16-bit modes the device runs natively, its
// other native modes by least memory, fp32. A job whose estimate exceeds every
// capable worker's whole memory is unplaceable, with the numbers in its queue
// reason.
//
// Thread-safety: pure functions, thread-safe.
#ifndef HALFTIME_SERVER_PLACEMENT_H_
#define HALFTIME_SERVER_PLACEMENT_H_

#include <optional>
#include <string>
#include <vector>

#include "halftime/v1/job.pb.h"
#include "halftime/v1/job_spec.pb.h"
#include "halftime/v1/worker.pb.h"

namespace halftime::server {

// Outcome of matching one job against one worker's device.
struct DeviceMatch {
  // True when the worker's device can run the job.
  bool ok = false;
  // The precision the job would run in (auto resolved); set when ok.
  v1::Precision precision = v1::PRECISION_UNSPECIFIED;
  // The device only emulates that precision (the job allows it).
  bool emulated = false;
  // How many of the checks (device kind, compute capability, memory,
  // precision emulated, precision allowed) passed; the furthest mismatch
  // explains a queue best.
  int checks_passed = 0;
  // Fleet-level explanation when !ok, e.g. "no worker runs fp16-mixed
  // natively".
  std::string reason;
};

// Matches `spec` (defaults applied) against a device. Never fails.
DeviceMatch MatchDevice(const v1::JobSpec& spec,
                        const v1::WorkerCapabilities& caps);

// A worker as placement sees it.
struct PlacementWorker {
  // Capabilities (not owned; must outlive the Place call).
  const v1::WorkerCapabilities* caps = nullptr;
  // Slots not taken by a job.
  int free_slots = 0;
  // False while the worker drains or is disconnected: it keeps its jobs but
  // gets no new ones.
  bool accepting = false;
  // Device memory not promised to its running jobs (their estimates); -1
  // when unknown (the worker reports no memory), which places by slots
  // alone.
  int64_t free_memory_bytes = -1;
};

// Placement of one queued job.
struct PlacementDecision {
  // Index into the workers vector, or -1 when the job stays queued.
  int worker = -1;
  // Precision to run in (auto resolved) when placed.
  v1::Precision precision = v1::PRECISION_UNSPECIFIED;
  // The worker only emulates it (the job allows that).
  bool emulated = false;
  // Why the job stays queued; empty when placed.
  std::string queue_reason;
  // True when no current worker could ever run it (none connected, or none
  // with the device, precision or memory): it waits for a worker to join,
  // not for a slot.
  bool unplaceable = false;
  // The predicted peak memory in `precision` (placed) or in the precision
  // it needs least memory in (queued); unset when the model's dimensions
  // are unknown.
  std::optional<v1::MemoryEstimate> estimate;
};

// Places `jobs` (already in priority/FIFO order; specs not owned) on
// `workers`, consuming free slots as it goes. Returns one decision per job,
// index by index. Never fails.
std::vector<PlacementDecision> Place(
    const std::vector<const v1::JobSpec*>& jobs,
    std::vector<PlacementWorker> workers);

}  // namespace halftime::server

#endif  // HALFTIME_SERVER_PLACEMENT_H_
