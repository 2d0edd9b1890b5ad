// WorkerMetrics: the Prometheus series a halftime-worker exports on its own
// port: the per-job training metrics of docs/design.md (labels job,
// precision; removed when the job ends) and worker-level gauges.
//
// Built once at start-up and passed to whoever records (no singletons).
// Thread-safety: all methods are thread-safe.
#ifndef HALFTIME_WORKER_WORKER_METRICS_H_
#define HALFTIME_WORKER_WORKER_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "halftime/v1/job.pb.h"

namespace halftime {

class WorkerMetrics {
 public:
  // Serves /metrics on `address` ("127.0.0.1:9465"; port 0 picks one).
  // UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<WorkerMetrics>> Create(
      const std::string& address);

  // The port /metrics is served on.
  int port() const { return port_; }

  // Records one training report of `job` (creates its series on first use).
  void RecordReport(const std::string& job, const std::string& precision,
                    const v1::TrainingReport& report) ABSL_LOCKS_EXCLUDED(mu_);
  // Removes every series of `job`.
  void RemoveJob(const std::string& job) ABSL_LOCKS_EXCLUDED(mu_);
  // Worker-level gauges.
  void SetSlots(int total, int busy);
  void SetDeviceMemory(int64_t bytes);
  // 1 when this worker's fp32 baseline is degraded (its savings are left
  // out of fleet totals), else 0.
  void SetBaselineDegraded(bool degraded);
  // The probed matmul rate of `dtype` (fp32, tf32, fp16, bf16), FLOP/s.
  void SetGemmRate(const std::string& dtype, double flops_per_second)
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  WorkerMetrics() = default;

  struct JobSeries {
    prometheus::Gauge* loss;
    prometheus::Gauge* loss_scale;
    prometheus::Counter* overflow_steps;
    prometheus::Counter* steps;
    prometheus::Gauge* tokens_per_second;
    prometheus::Gauge* samples_per_second;
    prometheus::Histogram* step_duration;
    prometheus::Gauge* peak_memory;
    prometheus::Gauge* grad_norm;
    prometheus::Gauge* parameters;
    prometheus::Gauge* trainable_parameters;
  };

  std::unique_ptr<prometheus::Exposer> exposer_;
  std::shared_ptr<prometheus::Registry> registry_;
  int port_ = 0;

  prometheus::Family<prometheus::Gauge>* loss_;
  prometheus::Family<prometheus::Gauge>* loss_scale_;
  prometheus::Family<prometheus::Counter>* overflow_steps_;
  prometheus::Family<prometheus::Counter>* steps_;
  prometheus::Family<prometheus::Gauge>* tokens_per_second_;
  prometheus::Family<prometheus::Gauge>* samples_per_second_;
  prometheus::Family<prometheus::Histogram>* step_duration_;
  prometheus::Family<prometheus::Gauge>* peak_memory_;
  prometheus::Family<prometheus::Gauge>* grad_norm_;
  prometheus::Family<prometheus::Gauge>* parameters_;
  prometheus::Family<prometheus::Gauge>* trainable_parameters_;
  prometheus::Gauge* slots_total_;
  prometheus::Gauge* slots_busy_;
  prometheus::Gauge* device_memory_;
  prometheus::Gauge* baseline_degraded_;
  prometheus::Family<prometheus::Gauge>* gemm_rate_;

  // Also serializes the series' creation and removal in the families.
  absl::Mutex mu_;
  std::map<std::string, JobSeries> jobs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace halftime

#endif  // HALFTIME_WORKER_WORKER_METRICS_H_
