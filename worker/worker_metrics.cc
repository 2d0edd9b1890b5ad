#include "worker/worker_metrics.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace halftime {

absl::StatusOr<std::unique_ptr<WorkerMetrics>> WorkerMetrics::Create(
    const std::string& address) {
  std::unique_ptr<WorkerMetrics> m(new WorkerMetrics());
  try {
    m->exposer_ = std::make_unique<prometheus::Exposer>(address);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address, ": ", e.what()));
  }
  auto ports = m->exposer_->GetListeningPorts();
  m->port_ = ports.empty() ? 0 : ports.front();
  m->registry_ = std::make_shared<prometheus::Registry>();
  auto& r = *m->registry_;
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  m->loss_ = &BuildGauge()
                  .Name("halftime_train_loss")
                  .Help("Training loss of the latest step")
                  .Register(r);
  m->loss_scale_ = &BuildGauge()
                        .Name("halftime_train_loss_scale")
                        .Help("Loss scale of the latest step (1 when off)")
                        .Register(r);
  m->overflow_steps_ = &BuildCounter()
                            .Name("halftime_train_overflow_steps_total")
                            .Help("Steps skipped because gradients overflowed")
                            .Register(r);
  m->steps_ = &BuildCounter()
                   .Name("halftime_train_steps_total")
                   .Help("Optimizer steps run (skipped ones included)")
                   .Register(r);
  m->tokens_per_second_ = &BuildGauge()
                               .Name("halftime_train_tokens_per_second")
                               .Help("Training tokens per second")
                               .Register(r);
  m->samples_per_second_ = &BuildGauge()
                                .Name("halftime_train_samples_per_second")
                                .Help("Training sequences per second")
                                .Register(r);
  m->step_duration_ = &BuildHistogram()
                           .Name("halftime_train_step_duration_seconds")
                           .Help("Wall time of an optimizer step")
                           .Register(r);
  m->peak_memory_ = &BuildGauge()
                         .Name("halftime_train_peak_memory_bytes")
                         .Help("Peak tensor memory of the job")
                         .Register(r);
  m->grad_norm_ = &BuildGauge()
                       .Name("halftime_train_grad_norm")
                       .Help("Unscaled gradient norm before clipping")
                       .Register(r);
  m->parameters_ = &BuildGauge()
                        .Name("halftime_train_parameters")
                        .Help(
                            "Parameters of the job's model, frozen ones "
                            "included")
                        .Register(r);
  m->trainable_parameters_ =
      &BuildGauge()
           .Name("halftime_train_trainable_parameters")
           .Help("Parameters the optimizer updates (fewer under an adapter)")
           .Register(r);
  auto& slots = BuildGauge()
                    .Name("halftime_worker_slots")
                    .Help("Job slots of this worker, by state")
                    .Register(r);
  m->slots_total_ = &slots.Add({{"state", "total"}});
  m->slots_busy_ = &slots.Add({{"state", "busy"}});
  m->device_memory_ = &BuildGauge()
                           .Name("halftime_worker_device_memory_bytes")
                           .Help("Memory of the worker's device")
                           .Register(r)
                           .Add({});
  m->baseline_degraded_ =
      &BuildGauge()
           .Name("halftime_worker_baseline_degraded")
           .Help(
               "1 when this worker's fp32 baseline is degraded (crippled "
               "BLAS or threads), so its savings are left out of totals")
           .Register(r)
           .Add({});
  m->gemm_rate_ = &BuildGauge()
                       .Name("halftime_worker_gemm_flops")
                       .Help("Probed matmul rate of the device, by dtype")
                       .Register(r);
  m->exposer_->RegisterCollectable(m->registry_);
  return m;
}

void WorkerMetrics::RecordReport(const std::string& job,
                                 const std::string& precision,
                                 const v1::TrainingReport& report) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job);
  if (it == jobs_.end()) {
    const std::map<std::string, std::string> labels = {
        {"job", job}, {"precision", precision}};
    static const prometheus::Histogram::BucketBoundaries kBuckets = {
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
    JobSeries s{&loss_->Add(labels),
                &loss_scale_->Add(labels),
                &overflow_steps_->Add(labels),
                &steps_->Add(labels),
                &tokens_per_second_->Add(labels),
                &samples_per_second_->Add(labels),
                &step_duration_->Add(labels, kBuckets),
                &peak_memory_->Add(labels),
                &grad_norm_->Add(labels),
                &parameters_->Add(labels),
                &trainable_parameters_->Add(labels)};
    it = jobs_.emplace(job, s).first;
  }
  JobSeries& s = it->second;
  s.loss->Set(report.loss());
  s.loss_scale->Set(report.loss_scale());
  if (report.overflow()) s.overflow_steps->Increment();
  s.steps->Increment();
  s.tokens_per_second->Set(report.tokens_per_second());
  s.samples_per_second->Set(report.samples_per_second());
  s.step_duration->Observe(report.step_seconds());
  s.peak_memory->Set(static_cast<double>(report.peak_memory_bytes()));
  if (std::isfinite(report.grad_norm())) s.grad_norm->Set(report.grad_norm());
  s.parameters->Set(static_cast<double>(report.parameters()));
  s.trainable_parameters->Set(
      static_cast<double>(report.trainable_parameters()));
}

void WorkerMetrics::RemoveJob(const std::string& job) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job);
  if (it == jobs_.end()) return;
  JobSeries& s = it->second;
  loss_->Remove(s.loss);
  loss_scale_->Remove(s.loss_scale);
  overflow_steps_->Remove(s.overflow_steps);
  steps_->Remove(s.steps);
  tokens_per_second_->Remove(s.tokens_per_second);
  samples_per_second_->Remove(s.samples_per_second);
  step_duration_->Remove(s.step_duration);
  peak_memory_->Remove(s.peak_memory);
  grad_norm_->Remove(s.grad_norm);
  parameters_->Remove(s.parameters);
  trainable_parameters_->Remove(s.trainable_parameters);
  jobs_.erase(it);
}

void WorkerMetrics::SetSlots(int total, int busy) {
  slots_total_->Set(total);
  slots_busy_->Set(busy);
}

void WorkerMetrics::SetBaselineDegraded(bool degraded) {
  baseline_degraded_->Set(degraded ? 1 : 0);
}

void WorkerMetrics::SetGemmRate(const std::string& dtype,
                                double flops_per_second) {
  absl::MutexLock lock(&mu_);
  gemm_rate_->Add({{"dtype", dtype}}).Set(flops_per_second);
}

void WorkerMetrics::SetDeviceMemory(int64_t bytes) {
  device_memory_->Set(static_cast<double>(bytes));
}

}  // namespace halftime
