// The worker's reading of trainer step events and its savings arithmetic,
// on event lines recorded from halftime-train --events-fd.
#include "worker/step_record.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"

namespace halftime {
namespace {

// A step event as halftime-train writes it (keys from
// engine/events.h; an overflowed step's grad_norm is null).
std::string StepLine(int step, double seconds, double tokens, int64_t peak,
                     bool overflow = false) {
  return absl::StrFormat(
      R"({"step":%d,"loss":2.5,"loss_scale":32768,"overflow":%s,)"
      R"("skipped_steps":%d,"grad_norm":%s,"lr":0.0003,"step_seconds":%g,)"
      R"("samples_per_second":100,"tokens_per_second":%g,)"
      R"("model_flops_per_second":1e9,"peak_memory_bytes":%d,)"
      R"("weight_bytes":10,"gradient_bytes":20,"optimizer_state_bytes":30,)"
      R"("precision":"bf16-mixed","event":"step","total_steps":8})",
      step, overflow ? "true" : "false", overflow ? 1 : 0,
      overflow ? "null" : "0.75", seconds, tokens, peak);
}

nlohmann::json Parse(const std::string& line) {
  return nlohmann::json::parse(line);
}

TEST(ReportFromEventTest, ReadsEveryFieldTheTrainerWrites) {
  const v1::TrainingReport r =
      ReportFromEvent(Parse(StepLine(3, 0.25, 4096, 1 << 20)), 2);
  EXPECT_EQ(r.step(), 3);
  EXPECT_EQ(r.total_steps(), 8);
  EXPECT_DOUBLE_EQ(r.loss(), 2.5);
  EXPECT_DOUBLE_EQ(r.loss_scale(), 32768);
  EXPECT_FALSE(r.overflow());
  EXPECT_DOUBLE_EQ(r.grad_norm(), 0.75);
  EXPECT_DOUBLE_EQ(r.learning_rate(), 0.0003);
  EXPECT_DOUBLE_EQ(r.step_seconds(), 0.25);
  EXPECT_DOUBLE_EQ(r.tokens_per_second(), 4096);
  EXPECT_EQ(r.peak_memory_bytes(), 1 << 20);
  EXPECT_EQ(r.optimizer_state_bytes(), 30);
  EXPECT_EQ(r.precision(), v1::PRECISION_BF16_MIXED);
  EXPECT_EQ(r.attempt(), 2);
  EXPECT_FALSE(r.has_eval_loss());
}

TEST(ReportFromEventTest, OverflowAndMissingFields) {
  const v1::TrainingReport overflow =
      ReportFromEvent(Parse(StepLine(4, 0.2, 10, 5, /*overflow=*/true)), 1);
  EXPECT_TRUE(overflow.overflow());
  EXPECT_TRUE(std::isnan(overflow.grad_norm()));
  EXPECT_EQ(overflow.skipped_steps(), 1);
  const v1::TrainingReport sparse = ReportFromEvent(
      Parse(R"({"event":"step","step":"x","eval_loss":1.5,"precision":"fp9"})"),
      1);
  EXPECT_EQ(sparse.step(), 0);
  EXPECT_DOUBLE_EQ(sparse.loss_scale(), 1.0);
  EXPECT_EQ(sparse.eval_loss(), 1.5);
  EXPECT_EQ(sparse.precision(), v1::PRECISION_UNSPECIFIED);
}

TEST(StepRecordTest, ProbeBaselineIsTheMedianAfterWarmUp) {
  // Two slow warm-up steps, then six steady ones.
  const std::vector<double> seconds = {0.9,  0.5,  0.11, 0.10,
                                       0.12, 0.10, 0.13, 0.10};
  StepRecord probe;
  for (size_t i = 0; i < seconds.size(); ++i) {
    probe.Add(ReportFromEvent(
        Parse(StepLine(static_cast<int>(i + 1), seconds[i], 1000.0 / seconds[i],
                       100 + static_cast<int64_t>(i))),
        1));
  }
  EXPECT_EQ(probe.size(), 8);
  // Steady: 0.10 0.10 0.10 0.11 0.12 0.13 -> (0.10 + 0.11) / 2.
  EXPECT_NEAR(probe.SteadyStepSeconds(), 0.105, 1e-12);
  // Tokens/s over the same six steps -> (1000/0.11 + 1000/0.10) / 2 (the
  // events carry 6 significant digits).
  EXPECT_NEAR(probe.SteadyTokensPerSecond(), (1000 / 0.11 + 1000 / 0.10) / 2,
              0.01);
  EXPECT_EQ(probe.peak_memory_bytes(), 107);

  const Baseline baseline = BaselineFromProbe(probe, 3.5, "abc123");
  EXPECT_NEAR(baseline.step_seconds, 0.105, 1e-12);
  EXPECT_EQ(baseline.peak_memory_bytes, 107);
  EXPECT_EQ(baseline.probe_seconds, 3.5);
  EXPECT_EQ(baseline.source, v1::BASELINE_MODE_PROBE);
  EXPECT_EQ(baseline.fingerprint, "abc123");
}

TEST(StepRecordTest, SavingsCompareTheJobWithItsBaseline) {
  Baseline baseline;
  baseline.step_seconds = 0.2;
  baseline.tokens_per_second = 5000;
  baseline.peak_memory_bytes = 1000;
  baseline.probe_seconds = 2;
  baseline.fingerprint = "f1";
  StepRecord job;
  for (int i = 1; i <= 3; ++i) {
    // 3 steps: the first is warm-up.
    job.Add(ReportFromEvent(
        Parse(StepLine(i, i == 1 ? 1.0 : 0.1, i == 1 ? 100 : 10000, 600)), 1));
  }
  v1::WorkerCapabilities caps;
  caps.set_device_name("AMD EPYC");
  v1::Savings s = ComputeSavings(v1::PRECISION_BF16_MIXED, baseline, job, caps);
  EXPECT_EQ(s.precision(), v1::PRECISION_BF16_MIXED);
  EXPECT_EQ(s.device_name(), "AMD EPYC");
  EXPECT_EQ(s.fingerprint(), "f1");
  EXPECT_DOUBLE_EQ(s.baseline_step_seconds(), 0.2);
  EXPECT_DOUBLE_EQ(s.step_seconds(), 0.1);
  EXPECT_DOUBLE_EQ(s.tokens_per_second(), 10000);
  EXPECT_EQ(s.peak_memory_bytes(), 600);
  EXPECT_EQ(s.baseline_peak_memory_bytes(), 1000);
  EXPECT_DOUBLE_EQ(s.probe_seconds(), 2);
  EXPECT_FALSE(s.baseline_degraded());

  caps.add_baseline_degradations("pthread OpenBLAS beside OpenMP");
  caps.add_baseline_degradations("3 threads on 2 CPUs");
  s = ComputeSavings(v1::PRECISION_BF16_MIXED, baseline, job, caps);
  EXPECT_TRUE(s.baseline_degraded());
  EXPECT_EQ(s.baseline_degraded_reason(),
            "pthread OpenBLAS beside OpenMP; 3 threads on 2 CPUs");
}

}  // namespace
}  // namespace halftime
