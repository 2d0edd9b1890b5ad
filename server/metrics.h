// The scheduler's Prometheus metrics. One SchedulerMetrics is built at
// start-up and handed to every component that records something; families
// are created once; labels take bounded values only (states, precisions,
// message kinds). Base units: seconds, bytes.
//
// Names (docs/design.md):
//   halftime_jobs{state}                         gauge, jobs per state
//   halftime_jobs_submitted_total                counter
//   halftime_job_queue_wait_seconds              histogram, QUEUED->ASSIGNED
//   halftime_workers{state}                      gauge, ready|draining|lost
//   halftime_savings_device_seconds_total{precision}  counter
//   halftime_savings_memory_bytes{precision}     gauge, sum over measured
//                                                jobs of memory_saved_bytes
//   halftime_savings_cost_total                  counter, currency units
//   halftime_savings_degraded_jobs_total{precision}  counter, jobs measured
//                                                against a degraded fp32
//                                                baseline: in none of the
//                                                savings figures above
//   halftime_savings_emulated_jobs_total{precision}  counter, jobs that ran
//                                                on a device that only
//                                                emulates the precision: in
//                                                none of the figures above
//   halftime_savings_emulated_memory_bytes{precision}  gauge, their
//                                                memory_saved_bytes summed
//   halftime_savings_adapter_memory_bytes{precision}  gauge, adapter jobs'
//                                                memory_saved_bytes (against
//                                                the same adapter on an fp32
//                                                base), emulated included
//   halftime_savings_adapter_vs_full_finetune_estimated_bytes{precision}
//                                                gauge, adapter jobs'
//                                                full_finetune_estimated_bytes
//                                                - peak_memory_bytes summed
// and the scheduler's own:
//   halftime_stale_messages_total{kind}          counter, messages of a
//                                                superseded attempt rejected
//                                                (kind: started|report|
//                                                result|upload|running)
//   halftime_jobs_unplaceable{precision}         gauge, QUEUED jobs no
//                                                current worker can run
//                                                (precision as requested,
//                                                auto included)
//   halftime_job_restarts_total                  counter
//   halftime_store_commit_seconds                histogram, group commits
//   halftime_store_batch_mutations               histogram, mutations per
//                                                commit
#ifndef HALFTIME_SERVER_METRICS_H_
#define HALFTIME_SERVER_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "halftime/v1/job.pb.h"
#include "halftime/v1/worker.pb.h"

namespace prometheus {
class Exposer;
}

namespace halftime::server {

// Holds the registry, the families and (optionally) the HTTP exposer.
//
// Thread-safety: thread-safe (prometheus-cpp metrics are atomic; the
// per-precision maps are built once in the constructor).
class SchedulerMetrics {
 public:
  // Builds the families. When `listen` is non-empty ("127.0.0.1:9464", port
  // 0 picks one) also serves them at /metrics there. Errors: UNAVAILABLE
  // when the port cannot be bound.
  static absl::StatusOr<std::unique_ptr<SchedulerMetrics>> Create(
      const std::string& listen);

  ~SchedulerMetrics();

  // Port /metrics is served on; 0 when not served.
  int port() const { return port_; }

  // The registry (e.g. for serializing in tests). Never null.
  const std::shared_ptr<prometheus::Registry>& registry() const {
    return registry_;
  }

  // Renders every metric in the text exposition format.
  std::string Render() const;

  // Moves one job from state `from` (UNSPECIFIED for a new job) to `to`.
  void JobStateChanged(v1::JobState from, v1::JobState to);
  // Adds `count` jobs in `state` (start-up counts of finished jobs).
  void AddJobs(v1::JobState state, int64_t count);
  prometheus::Gauge& workers(v1::WorkerState state);
  prometheus::Counter& jobs_submitted() { return *jobs_submitted_; }
  prometheus::Histogram& queue_wait() { return *queue_wait_; }
  prometheus::Counter& job_restarts() { return *job_restarts_; }
  // Zeroes the job-state, worker-state and unplaceable gauges (before the
  // job manager recounts them from the store).
  void ResetJobAndWorkerGauges();
  // Gauge of queued jobs requesting `precision` that no worker can run.
  prometheus::Gauge& jobs_unplaceable(v1::Precision precision);
  // `kind` must be one of started, report, result, upload, running.
  void StaleMessage(const std::string& kind);
  // Adds one job's savings.
  void AddSavings(const v1::Savings& savings);
  prometheus::Histogram& store_commit_seconds() {
    return *store_commit_seconds_;
  }
  prometheus::Histogram& store_batch_mutations() {
    return *store_batch_mutations_;
  }

 private:
  SchedulerMetrics();

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;

  std::map<int, prometheus::Gauge*> jobs_;         // by v1::JobState
  std::map<int, prometheus::Gauge*> workers_;      // by v1::WorkerState
  std::map<int, prometheus::Gauge*> unplaceable_;  // by v1::Precision
  prometheus::Counter* jobs_submitted_;
  prometheus::Histogram* queue_wait_;
  prometheus::Counter* job_restarts_;
  std::map<std::string, prometheus::Counter*> stale_;     // by kind
  std::map<int, prometheus::Counter*> savings_seconds_;   // by v1::Precision
  std::map<int, prometheus::Gauge*> savings_memory_;      // by v1::Precision
  std::map<int, prometheus::Counter*> savings_degraded_;  // by v1::Precision
  std::map<int, prometheus::Counter*> savings_emulated_;  // by v1::Precision
  std::map<int, prometheus::Gauge*> savings_emulated_memory_;  // by precision
  std::map<int, prometheus::Gauge*> savings_adapter_memory_;   // by precision
  std::map<int, prometheus::Gauge*> savings_adapter_full_;     // by precision
  prometheus::Counter* savings_cost_;
  prometheus::Histogram* store_commit_seconds_;
  prometheus::Histogram* store_batch_mutations_;
};

}  // namespace halftime::server

#endif  // HALFTIME_SERVER_METRICS_H_
