// The step events of one trainer run, a job's or its fp32 probe's, and the
// savings arithmetic on them: what the worker daemon reads from a trainer's
// events (engine/events.h) and sends the scheduler.
//
// Thread-safety: StepRecord is thread-compatible (its owner locks around
// it); the free functions are pure and thread-safe.
#ifndef HALFTIME_WORKER_STEP_RECORD_H_
#define HALFTIME_WORKER_STEP_RECORD_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "halftime/v1/job.pb.h"
#include "halftime/v1/worker.pb.h"

namespace halftime {

// The number at `key` of an event; `fallback` when absent or not a number.
double EventNumber(const nlohmann::json& event, const char* key,
                   double fallback = 0.0);

// A step event as the API's TrainingReport. Missing or non-numeric fields
// read as 0 (loss_scale as 1; a null grad_norm, an overflowed step's, as
// NaN); an unknown precision name is left unset.
v1::TrainingReport ReportFromEvent(const nlohmann::json& event, int attempt);

// The steps one run reported.
class StepRecord {
 public:
  void Add(const v1::TrainingReport& report);

  bool empty() const { return step_seconds_.empty(); }
  int64_t size() const { return static_cast<int64_t>(step_seconds_.size()); }
  // Medians after the warm-up steps (engine::SteadyMedian), as the
  // engine's summary and the probe both measure; 0 when empty.
  double SteadyStepSeconds() const;
  double SteadyTokensPerSecond() const;
  // The steps after the warm-up and their summed time: how much a median
  // stands on.
  int64_t SteadyCount() const;
  double SteadySeconds() const;
  // The largest peak any step reported.
  int64_t peak_memory_bytes() const { return peak_memory_bytes_; }

 private:
  std::vector<double> step_seconds_;
  std::vector<double> tokens_per_second_;
  int64_t peak_memory_bytes_ = 0;
};

// An fp32 baseline: probed for this job, or reused from the scheduler's
// cache of probes with the same fingerprint.
struct Baseline {
  double step_seconds = 0;
  double tokens_per_second = 0;
  int64_t peak_memory_bytes = 0;
  double probe_seconds = 0;  // 0 when reused from the cache
  v1::BaselineMode source = v1::BASELINE_MODE_PROBE;
  std::string fingerprint;
};

// The baseline an fp32 probe's steps measured; its run took `probe_seconds`.
Baseline BaselineFromProbe(const StepRecord& probe, double probe_seconds,
                           const std::string& fingerprint);

// The savings of a job that ran in `precision` with steps `job`, against
// `baseline`, on a worker with `caps`: marked degraded, with the reasons,
// when the worker's fp32 is not the fastest this machine runs.
v1::Savings ComputeSavings(v1::Precision precision, const Baseline& baseline,
                           const StepRecord& job,
                           const v1::WorkerCapabilities& caps);

}  // namespace halftime

#endif  // HALFTIME_WORKER_STEP_RECORD_H_
