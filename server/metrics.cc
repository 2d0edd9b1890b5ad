#include "server/metrics.h"

#include <prometheus/exposer.h>
#include <prometheus/text_serializer.h>

#include <cmath>
#include <exception>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/enum_names.h"

namespace halftime::server {

SchedulerMetrics::SchedulerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()) {
  auto& jobs = prometheus::BuildGauge()
                   .Name("halftime_jobs")
                   .Help("Jobs by state.")
                   .Register(*registry_);
  for (int s = v1::JOB_STATE_QUEUED; s <= v1::JOB_STATE_CANCELLED; ++s) {
    jobs_[s] =
        &jobs.Add({{"state", JobStateName(static_cast<v1::JobState>(s))}});
  }
  auto& workers = prometheus::BuildGauge()
                      .Name("halftime_workers")
                      .Help("Workers by state.")
                      .Register(*registry_);
  for (int s = v1::WORKER_STATE_READY; s <= v1::WORKER_STATE_LOST; ++s) {
    workers_[s] = &workers.Add(
        {{"state", EnumShortName(v1::WorkerState_descriptor(), s)}});
  }
  auto& unplaceable =
      prometheus::BuildGauge()
          .Name("halftime_jobs_unplaceable")
          .Help(
              "Queued jobs that no current worker can run (device, compute "
              "capability, memory or precision), by requested precision.")
          .Register(*registry_);
  for (int p = v1::PRECISION_FP32; p <= v1::PRECISION_AUTO; ++p) {
    unplaceable_[p] = &unplaceable.Add(
        {{"precision", PrecisionName(static_cast<v1::Precision>(p))}});
  }
  jobs_submitted_ = &prometheus::BuildCounter()
                         .Name("halftime_jobs_submitted_total")
                         .Help("Jobs accepted (deduplicated retries left out).")
                         .Register(*registry_)
                         .Add({});
  queue_wait_ = &prometheus::BuildHistogram()
                     .Name("halftime_job_queue_wait_seconds")
                     .Help("Time from (re)queueing to assignment, seconds.")
                     .Register(*registry_)
                     .Add({}, prometheus::Histogram::BucketBoundaries{
                                  0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10,
                                  30, 60, 300, 900, 3600});
  job_restarts_ = &prometheus::BuildCounter()
                       .Name("halftime_job_restarts_total")
                       .Help(
                           "Attempts ended by a worker loss or a retried "
                           "failure.")
                       .Register(*registry_)
                       .Add({});
  auto& stale = prometheus::BuildCounter()
                    .Name("halftime_stale_messages_total")
                    .Help("Messages from a superseded attempt, rejected.")
                    .Register(*registry_);
  for (const char* kind :
       {"started", "report", "result", "upload", "running"}) {
    stale_[kind] = &stale.Add({{"kind", kind}});
  }
  auto& seconds = prometheus::BuildCounter()
                      .Name("halftime_savings_device_seconds_total")
                      .Help("Device seconds saved against the fp32 baseline.")
                      .Register(*registry_);
  auto& memory = prometheus::BuildGauge()
                     .Name("halftime_savings_memory_bytes")
                     .Help(
                         "Peak memory saved against the fp32 baseline, "
                         "summed over measured jobs, bytes.")
                     .Register(*registry_);
  auto& degraded =
      prometheus::BuildCounter()
          .Name("halftime_savings_degraded_jobs_total")
          .Help(
              "Jobs whose savings were measured against a degraded fp32 "
              "baseline (crippled BLAS or threads) and so left out of the "
              "savings metrics.")
          .Register(*registry_);
  auto& emulated =
      prometheus::BuildCounter()
          .Name("halftime_savings_emulated_jobs_total")
          .Help(
              "Jobs that ran on a device that only emulates their precision "
              "(memory saved, not time), kept out of the savings metrics "
              "above.")
          .Register(*registry_);
  auto& emulated_memory =
      prometheus::BuildGauge()
          .Name("halftime_savings_emulated_memory_bytes")
          .Help(
              "Peak memory saved against the fp32 baseline by jobs on "
              "devices that only emulate their precision, summed, bytes.")
          .Register(*registry_);
  auto& adapter_memory =
      prometheus::BuildGauge()
          .Name("halftime_savings_adapter_memory_bytes")
          .Help(
              "Peak memory adapter jobs saved against the same adapter on "
              "an fp32 base in fp32 (measured), summed, bytes.")
          .Register(*registry_);
  auto& adapter_full =
      prometheus::BuildGauge()
          .Name("halftime_savings_adapter_vs_full_finetune_estimated_bytes")
          .Help(
              "Peak memory adapter jobs used less than a full fp32 "
              "fine-tune of their model would (that fine-tune's peak is "
              "estimated, not measured), summed, bytes.")
          .Register(*registry_);
  for (int p = v1::PRECISION_FP32; p <= v1::PRECISION_BF16_PURE; ++p) {
    std::string name = PrecisionName(static_cast<v1::Precision>(p));
    savings_adapter_memory_[p] = &adapter_memory.Add({{"precision", name}});
    savings_adapter_full_[p] = &adapter_full.Add({{"precision", name}});
    savings_seconds_[p] = &seconds.Add({{"precision", name}});
    savings_memory_[p] = &memory.Add({{"precision", name}});
    savings_degraded_[p] = &degraded.Add({{"precision", name}});
    savings_emulated_[p] = &emulated.Add({{"precision", name}});
    savings_emulated_memory_[p] = &emulated_memory.Add({{"precision", name}});
  }
  savings_cost_ = &prometheus::BuildCounter()
                       .Name("halftime_savings_cost_total")
                       .Help(
                           "Cost saved at the configured device-hour "
                           "prices, currency units.")
                       .Register(*registry_)
                       .Add({});
  store_commit_seconds_ =
      &prometheus::BuildHistogram()
           .Name("halftime_store_commit_seconds")
           .Help("Duration of store group commits, seconds.")
           .Register(*registry_)
           .Add({}, prometheus::Histogram::BucketBoundaries{
                        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5,
                        1});
  store_batch_mutations_ =
      &prometheus::BuildHistogram()
           .Name("halftime_store_batch_mutations")
           .Help("Mutations per store group commit.")
           .Register(*registry_)
           .Add({}, prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32,
                                                            64, 128});
}

SchedulerMetrics::~SchedulerMetrics() = default;

absl::StatusOr<std::unique_ptr<SchedulerMetrics>> SchedulerMetrics::Create(
    const std::string& listen) {
  std::unique_ptr<SchedulerMetrics> metrics(new SchedulerMetrics());
  if (!listen.empty()) {
    try {
      metrics->exposer_ = std::make_unique<prometheus::Exposer>(listen);
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrCat("metrics: cannot listen on ", listen, ": ", e.what()));
    }
    metrics->exposer_->RegisterCollectable(metrics->registry_);
    std::vector<int> ports = metrics->exposer_->GetListeningPorts();
    if (!ports.empty()) metrics->port_ = ports.front();
  }
  return metrics;
}

std::string SchedulerMetrics::Render() const {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry_->Collect());
  return out.str();
}

void SchedulerMetrics::JobStateChanged(v1::JobState from, v1::JobState to) {
  if (from == to) return;
  if (auto it = jobs_.find(from); it != jobs_.end()) it->second->Decrement();
  if (auto it = jobs_.find(to); it != jobs_.end()) it->second->Increment();
}

void SchedulerMetrics::AddJobs(v1::JobState state, int64_t count) {
  if (auto it = jobs_.find(state); it != jobs_.end()) {
    it->second->Increment(static_cast<double>(count));
  }
}

prometheus::Gauge& SchedulerMetrics::workers(v1::WorkerState state) {
  auto it = workers_.find(state);
  if (it == workers_.end()) it = workers_.find(v1::WORKER_STATE_LOST);
  return *it->second;
}

void SchedulerMetrics::ResetJobAndWorkerGauges() {
  for (auto* gauges : {&jobs_, &workers_, &unplaceable_}) {
    for (auto& [key, gauge] : *gauges) gauge->Set(0);
  }
}

prometheus::Gauge& SchedulerMetrics::jobs_unplaceable(v1::Precision precision) {
  auto it = unplaceable_.find(precision);
  if (it == unplaceable_.end()) it = unplaceable_.find(v1::PRECISION_AUTO);
  return *it->second;
}

void SchedulerMetrics::StaleMessage(const std::string& kind) {
  auto it = stale_.find(kind);
  if (it != stale_.end()) it->second->Increment();
}

void SchedulerMetrics::AddSavings(const v1::Savings& savings) {
  // Adapter jobs' memory, emulated ones included (their memory is real);
  // the full fine-tune comparison needs no baseline at all.
  if (savings.adapter()) {
    if (auto it = savings_adapter_full_.find(savings.precision());
        it != savings_adapter_full_.end() &&
        savings.full_finetune_estimated_bytes() > 0) {
      it->second->Increment(
          static_cast<double>(savings.full_finetune_estimated_bytes() -
                              savings.peak_memory_bytes()));
    }
    if (auto it = savings_adapter_memory_.find(savings.precision());
        it != savings_adapter_memory_.end() && !savings.baseline_degraded()) {
      it->second->Increment(static_cast<double>(savings.memory_saved_bytes()));
    }
  }
  // Savings against a crippled fp32 would overstate what precision saved.
  if (savings.baseline_degraded()) {
    if (auto it = savings_degraded_.find(savings.precision());
        it != savings_degraded_.end()) {
      it->second->Increment();
    }
    return;
  }
  // Emulated jobs trade time for memory: counted apart, so that the fleet's
  // savings stay those of devices that run the precision natively.
  if (savings.emulated()) {
    if (auto it = savings_emulated_.find(savings.precision());
        it != savings_emulated_.end()) {
      it->second->Increment();
    }
    if (auto it = savings_emulated_memory_.find(savings.precision());
        it != savings_emulated_memory_.end()) {
      it->second->Increment(static_cast<double>(savings.memory_saved_bytes()));
    }
    return;
  }
  // An infinite (or NaN) amount would stick to a counter for good.
  auto usable = [](double amount) { return std::isfinite(amount); };
  if (auto it = savings_seconds_.find(savings.precision());
      it != savings_seconds_.end() && savings.device_seconds_saved() > 0 &&
      usable(savings.device_seconds_saved())) {
    it->second->Increment(savings.device_seconds_saved());
  }
  if (auto it = savings_memory_.find(savings.precision());
      it != savings_memory_.end()) {
    it->second->Increment(static_cast<double>(savings.memory_saved_bytes()));
  }
  if (savings.cost_saved() > 0 && usable(savings.cost_saved())) {
    savings_cost_->Increment(savings.cost_saved());
  }
}

}  // namespace halftime::server
