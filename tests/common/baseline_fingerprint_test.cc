#include "common/baseline_fingerprint.h"

#include <gtest/gtest.h>

#include "common/spec.h"

namespace halftime {
namespace {

v1::JobSpec Spec(const std::vector<std::string>& overrides = {}) {
  auto spec = ParseJobSpec(R"(
name: fp
model: {builtin: gpt-nano}
data: {kind: synthetic, seq_len: 64, vocab_size: 256}
precision: bf16-mixed
batch_size: 16
steps: 100
)",
                           "spec", overrides);
  EXPECT_TRUE(spec.ok()) << spec.status();
  return *spec;
}

v1::WorkerCapabilities Caps() {
  v1::WorkerCapabilities caps;
  caps.set_device_kind(v1::DEVICE_KIND_CPU);
  caps.set_device_name("Intel Xeon Platinum 8481C");
  caps.set_threads_per_job(2);
  caps.set_torch_version("1.13.1");
  return caps;
}

TEST(BaselineFingerprintTest, StableAndHex) {
  const std::string fp = BaselineFingerprint(Spec(), Caps());
  EXPECT_EQ(fp.size(), 16u);
  EXPECT_EQ(fp.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(BaselineFingerprint(Spec(), Caps()), fp);
}

TEST(BaselineFingerprintTest, IgnoresWhatAnFp32StepDoesNotDependOn) {
  const std::string fp = BaselineFingerprint(Spec(), Caps());
  for (const char* o :
       {"precision=bf16-master", "optimizer.lr=0.5", "steps=7", "seed=9",
        "name=other", "lr_schedule.warmup_steps=3", "savings.probe_steps=4"}) {
    EXPECT_EQ(BaselineFingerprint(Spec({o}), Caps()), fp) << o;
  }
  // A spec asking for the worker's own thread count is the same run.
  EXPECT_EQ(BaselineFingerprint(Spec({"threads=2"}), Caps()), fp);
}

TEST(BaselineFingerprintTest, ChangesWithModelBatchOptimizerAndThreads) {
  const std::string fp = BaselineFingerprint(Spec(), Caps());
  for (const char* o :
       {"model.builtin=gpt-micro", "data.seq_len=32", "data.vocab_size=512",
        "batch_size=8", "grad_accumulation=2", "optimizer.name=sgd",
        "threads=1"}) {
    EXPECT_NE(BaselineFingerprint(Spec({o}), Caps()), fp) << o;
  }
}

TEST(BaselineFingerprintTest, ChangesWithDeviceAndLibtorch) {
  const std::string fp = BaselineFingerprint(Spec(), Caps());
  v1::WorkerCapabilities other = Caps();
  other.set_device_name("AMD EPYC 9654");
  EXPECT_NE(BaselineFingerprint(Spec(), other), fp);
  other = Caps();
  other.set_torch_version("2.4.0");
  EXPECT_NE(BaselineFingerprint(Spec(), other), fp);
  other = Caps();
  other.set_threads_per_job(4);
  EXPECT_NE(BaselineFingerprint(Spec(), other), fp);
  other = Caps();
  other.set_device_kind(v1::DEVICE_KIND_CUDA);
  EXPECT_NE(BaselineFingerprint(Spec(), other), fp);
}

}  // namespace
}  // namespace halftime
