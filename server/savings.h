// The savings ledger: completes the savings a worker measured with the
// derived figures and keeps per-job records and fleet totals by precision.
//
// Derived fields (from the measured ones):
//   speedup              = baseline_step_seconds / step_seconds
//   memory_saved_bytes   = baseline_peak_memory_bytes - peak_memory_bytes
//   memory_saved_ratio   = memory_saved_bytes / baseline_peak_memory_bytes
//   device_seconds_saved = steps_run * (baseline_step_seconds -
//                          step_seconds) - probe_seconds
//   cost_saved           = device_seconds_saved / 3600 * price
// where price is the device-hour price of the device the figures were
// measured on (PriceTable). Negative savings (a slower run) are recorded
// as measured; Prometheus counters only add positive amounts. Measured
// fields that are NaN, infinite or negative are taken as 0 (they come from
// workers), and a derived figure that would be infinite is 0, so no
// worker can make a fleet total or a counter NaN or infinite.
#ifndef HALFTIME_SERVER_SAVINGS_H_
#define HALFTIME_SERVER_SAVINGS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "halftime/v1/job.pb.h"
#include "halftime/v1/scheduler.pb.h"
#include "server/metrics.h"

namespace halftime::server {

// Device-hour prices.
struct PriceTable {
  // Price per device name pattern. A device takes the price of the entry
  // whose name equals its name, else of the longest entry that occurs in
  // its name (case-insensitive), else `default_price`.
  std::map<std::string, double> by_device;
  // Price of devices no entry matches.
  double default_price = 0;
  // Currency of every price, e.g. "USD".
  std::string currency = "USD";

  // Parses one `--device-price NAME=PRICE` flag value into by_device.
  // INVALID_ARGUMENT names the problem.
  absl::Status AddFlag(const std::string& flag);

  // Price per device hour of `device_name`.
  double PriceFor(const std::string& device_name) const;
};

// Marks `savings` of a job run from `spec` as an adapter job's (measured
// against the same adapter on an fp32 base) and sets the estimated peak of
// a full fp32 fine-tune of its model on the job's device kind (`cuda`),
// when the model's dimensions are known. Pure; a no-op for other jobs.
void AddAdapterFigures(const v1::JobSpec& spec, bool cuda,
                       v1::Savings* savings);

// Per-job savings and fleet totals.
//
// Thread-safety: thread-safe.
class SavingsLedger {
 public:
  // `metrics` is not owned and must outlive the ledger.
  SavingsLedger(PriceTable prices, SchedulerMetrics* metrics);

  // Returns `measured` with the derived fields filled, for a job that ran
  // `steps_run` optimizer steps. Pure; never fails.
  v1::Savings Derive(const v1::Savings& measured, int64_t steps_run) const;

  // Records `savings` (already derived) for `job_id`, replacing an earlier
  // record of the same job, and adds it to the metrics. At start-up the
  // stored records are recorded again, which re-seeds the counters with
  // the stored totals.
  void Record(const std::string& job_id, const v1::Savings& savings)
      ABSL_LOCKS_EXCLUDED(mu_);

  // The latest measured (probe) fp32 baseline with `fingerprint`, as an
  // Assignment's cached_baseline: baseline_* fields, fingerprint,
  // device_name, baseline = CACHED. nullopt when none was recorded.
  std::optional<v1::Savings> CachedBaseline(
      const std::string& fingerprint) const ABSL_LOCKS_EXCLUDED(mu_);

  // Savings of `job_id`; NOT_FOUND when none were recorded.
  absl::StatusOr<v1::Savings> ForJob(const std::string& job_id) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // Every measured job (in recording order) and totals by precision.
  v1::GetSavingsResponse Fleet() const ABSL_LOCKS_EXCLUDED(mu_);

  // Totals by precision only; jobs with a degraded baseline are counted in
  // degraded_jobs and left out of every other figure.
  std::vector<v1::PrecisionSavings> Totals() const ABSL_LOCKS_EXCLUDED(mu_);

  const std::string& currency() const { return prices_.currency; }

 private:
  const PriceTable prices_;
  SchedulerMetrics* const metrics_;

  std::vector<v1::PrecisionSavings> TotalsLocked() const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::vector<std::string> order_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, v1::Savings> by_job_ ABSL_GUARDED_BY(mu_);
  // Latest probe baseline by fingerprint.
  std::map<std::string, v1::Savings> baselines_ ABSL_GUARDED_BY(mu_);
};

}  // namespace halftime::server

#endif  // HALFTIME_SERVER_SAVINGS_H_
