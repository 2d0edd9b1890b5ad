#include "server/placement.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/memory_estimate.h"
#include "common/spec.h"
#include "tests/server/test_util.h"

namespace halftime::server {
namespace {

using testing::CpuCaps;
using testing::CudaCaps;
using testing::Spec;

v1::JobSpec Defaults(v1::JobSpec spec) {
  ApplyJobSpecDefaults(&spec);
  return spec;
}

TEST(MatchDeviceTest, AutoResolvesToBestNativeMode) {
  v1::JobSpec spec = Defaults(Spec("a", v1::PRECISION_AUTO));
  EXPECT_EQ(MatchDevice(spec, CpuCaps(1, /*bf16=*/true)).precision,
            v1::PRECISION_BF16_MIXED);
  EXPECT_EQ(MatchDevice(spec, CpuCaps(1, /*bf16=*/false)).precision,
            v1::PRECISION_FP32);
  EXPECT_EQ(MatchDevice(spec, CudaCaps("7.0")).precision,
            v1::PRECISION_FP16_MIXED);
  EXPECT_EQ(MatchDevice(spec, CudaCaps("9.0")).precision,
            v1::PRECISION_BF16_MIXED);
}

TEST(MatchDeviceTest, ExplicitPrecisionMustBeNative) {
  v1::JobSpec fp16 = Defaults(Spec("a", v1::PRECISION_FP16_MIXED));
  DeviceMatch cpu = MatchDevice(fp16, CpuCaps());
  EXPECT_FALSE(cpu.ok);
  EXPECT_EQ(cpu.reason,
            "no worker runs fp16-mixed natively; it needs a worker with a "
            "CUDA GPU");
  EXPECT_TRUE(MatchDevice(fp16, CudaCaps("7.0")).ok);

  v1::JobSpec bf16 = Defaults(Spec("b", v1::PRECISION_BF16_MIXED));
  EXPECT_FALSE(MatchDevice(bf16, CudaCaps("7.5")).ok);
  EXPECT_FALSE(MatchDevice(bf16, CpuCaps(1, /*bf16=*/false)).ok);
  EXPECT_TRUE(MatchDevice(bf16, CpuCaps(1, /*bf16=*/true)).ok);
}

TEST(MatchDeviceTest, EmulatedPrecisionOnlyWhenTheJobAllowsIt) {
  v1::JobSpec bf16 = Defaults(Spec("b", v1::PRECISION_BF16_PURE));
  ASSERT_EQ(bf16.resources().emulation(), v1::EMULATION_DENY);
  const v1::WorkerCapabilities emulating = CpuCaps(1, /*bf16=*/false);
  DeviceMatch denied = MatchDevice(bf16, emulating);
  EXPECT_FALSE(denied.ok);
  EXPECT_EQ(denied.reason,
            "no worker runs bf16-pure natively; a worker emulates it (memory "
            "saved, not time): set resources.emulation: allow to run there, "
            "or add a worker with native bf16 (a CPU with avx512_bf16 or "
            "amx_bf16, or a CUDA GPU of compute capability 8.0 or newer)");
  bf16.mutable_resources()->set_emulation(v1::EMULATION_ALLOW);
  DeviceMatch allowed = MatchDevice(bf16, emulating);
  EXPECT_TRUE(allowed.ok);
  EXPECT_TRUE(allowed.emulated);
  EXPECT_EQ(allowed.precision, v1::PRECISION_BF16_PURE);
  DeviceMatch native = MatchDevice(bf16, CpuCaps(1, /*bf16=*/true));
  EXPECT_TRUE(native.ok);
  EXPECT_FALSE(native.emulated);
  // A CUDA worker claiming to emulate is not believed, and auto never
  // resolves to an emulated mode.
  v1::WorkerCapabilities volta = CudaCaps("7.0");
  volta.add_emulated_precisions(v1::PRECISION_BF16_PURE);
  EXPECT_FALSE(MatchDevice(bf16, volta).ok);
  v1::JobSpec automatic = Defaults(Spec("a", v1::PRECISION_AUTO));
  automatic.mutable_resources()->set_emulation(v1::EMULATION_ALLOW);
  DeviceMatch resolved = MatchDevice(automatic, emulating);
  EXPECT_EQ(resolved.precision, v1::PRECISION_FP32);
  EXPECT_FALSE(resolved.emulated);
}

TEST(PlaceTest, NativeWorkersBeatEmulatingOnes) {
  v1::JobSpec a = Defaults(Spec("a", v1::PRECISION_BF16_MIXED));
  a.mutable_resources()->set_emulation(v1::EMULATION_ALLOW);
  v1::JobSpec b = a, c = a;
  v1::WorkerCapabilities emulating = CpuCaps(3, false), native = CpuCaps(1);
  std::vector<PlacementDecision> d =
      Place({&a, &b, &c}, {{&emulating, 3, true}, {&native, 1, true}});
  EXPECT_EQ(d[0].worker, 1);  // native, despite fewer free slots
  EXPECT_FALSE(d[0].emulated);
  EXPECT_EQ(d[1].worker, 0);  // native full: emulating
  EXPECT_TRUE(d[1].emulated);
  EXPECT_EQ(d[2].worker, 0);
}

TEST(MatchDeviceTest, DeviceKindCapabilityAndMemory) {
  v1::JobSpec spec = Defaults(Spec("a"));
  spec.mutable_resources()->set_device(v1::DEVICE_KIND_CUDA);
  EXPECT_EQ(MatchDevice(spec, CpuCaps()).reason, "no worker has a cuda device");
  spec.mutable_resources()->set_min_compute_capability("8.0");
  EXPECT_EQ(MatchDevice(spec, CudaCaps("7.5")).reason,
            "no worker has compute capability >= 8.0");
  EXPECT_TRUE(MatchDevice(spec, CudaCaps("8.6")).ok);
  EXPECT_TRUE(MatchDevice(spec, CudaCaps("10.0")).ok);
  spec.mutable_resources()->set_memory_bytes(int64_t{100} << 30);
  EXPECT_EQ(MatchDevice(spec, CudaCaps("9.0")).reason,
            "no worker has 107374182400 bytes of device memory");
}

TEST(PlaceTest, FirstComeFirstServedWithMostFreeSlots) {
  v1::JobSpec a = Defaults(Spec("a")), b = Defaults(Spec("b")),
              c = Defaults(Spec("c"));
  v1::WorkerCapabilities w0 = CpuCaps(1), w1 = CpuCaps(2);
  std::vector<PlacementDecision> d =
      Place({&a, &b, &c}, {{&w0, 1, true}, {&w1, 2, true}});
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(d[0].worker, 1);  // most free slots
  // After a: w0 has 1, w1 has 1 -> tie goes to the first listed.
  EXPECT_EQ(d[1].worker, 0);
  EXPECT_EQ(d[2].worker, 1);
}

TEST(PlaceTest, QueueReasons) {
  v1::JobSpec fp16 = Defaults(Spec("a", v1::PRECISION_FP16_MIXED));
  v1::JobSpec fp32 = Defaults(Spec("b"));
  v1::JobSpec fp32b = Defaults(Spec("c"));
  EXPECT_EQ(Place({&fp32}, {})[0].queue_reason, "no worker connected");
  EXPECT_TRUE(Place({&fp32}, {})[0].unplaceable);
  v1::WorkerCapabilities cpu = CpuCaps(1);
  std::vector<PlacementDecision> d =
      Place({&fp16, &fp32, &fp32b}, {{&cpu, 1, true}});
  EXPECT_EQ(d[0].worker, -1);
  EXPECT_EQ(d[0].queue_reason,
            "no worker runs fp16-mixed natively; it needs a worker with a "
            "CUDA GPU");
  EXPECT_TRUE(d[0].unplaceable);
  EXPECT_EQ(d[1].worker, 0);
  EXPECT_FALSE(d[1].unplaceable);
  EXPECT_EQ(d[2].worker, -1);
  EXPECT_EQ(d[2].queue_reason, "waiting for a free slot");
  EXPECT_FALSE(d[2].unplaceable);
  // Draining (not accepting) capable workers: wait.
  d = Place({&fp32}, {{&cpu, 1, false}});
  EXPECT_EQ(d[0].queue_reason, "waiting for a free slot");
  EXPECT_FALSE(d[0].unplaceable);
}

// gpt-small (GPT-2 124M's shape): its dimensions come from the preset, so
// the scheduler estimates it without reading anything.
v1::JobSpec GptSmall(const std::string& name, v1::Precision precision) {
  v1::JobSpec spec = Spec(name, precision);
  spec.mutable_model()->set_builtin("gpt-small");
  spec.mutable_data()->set_seq_len(256);
  spec.set_batch_size(2);
  return Defaults(spec);
}

int64_t Estimate(const v1::JobSpec& spec, v1::Precision p) {
  // CpuCaps(1) runs bf16 natively.
  return EstimateMemory(spec, *ModelShapeOf(spec, false), p,
                        v1::BASE_DTYPE_UNSPECIFIED, EstimateDevice{})
      .total_bytes();
}

TEST(PlaceTest, AJobTooBigForEveryWorkerIsUnplaceableWithTheNumbers) {
  v1::JobSpec job = GptSmall("big", v1::PRECISION_FP32);
  v1::WorkerCapabilities small = CpuCaps(1);
  small.set_memory_bytes(Estimate(job, v1::PRECISION_FP32) / 2);
  std::vector<PlacementDecision> d = Place({&job}, {{&small, 1, true}});
  EXPECT_EQ(d[0].worker, -1);
  EXPECT_TRUE(d[0].unplaceable);
  EXPECT_THAT(d[0].queue_reason,
              ::testing::AllOf(::testing::HasSubstr("needs an estimated"),
                               ::testing::HasSubstr("in fp32 (weights"),
                               ::testing::HasSubstr("the largest capable "
                                                    "worker has")));
  ASSERT_TRUE(d[0].estimate.has_value());
  EXPECT_EQ(d[0].estimate->total_bytes(), Estimate(job, v1::PRECISION_FP32));
  // With room, it is placed and carries its estimate.
  v1::WorkerCapabilities roomy = CpuCaps(1);
  d = Place({&job}, {{&small, 1, true}, {&roomy, 1, true}});
  EXPECT_EQ(d[0].worker, 1);
  ASSERT_TRUE(d[0].estimate.has_value());
  EXPECT_EQ(d[0].estimate->precision(), v1::PRECISION_FP32);
}

TEST(PlaceTest, MemoryPromisedToRunningJobsIsNotOfferedAgain) {
  v1::JobSpec a = GptSmall("a", v1::PRECISION_FP32);
  v1::JobSpec b = GptSmall("b", v1::PRECISION_FP32);
  const int64_t need = Estimate(a, v1::PRECISION_FP32);
  v1::WorkerCapabilities w = CpuCaps(2);
  w.set_memory_bytes(need * 3 / 2);  // two slots, memory for one job
  std::vector<PlacementDecision> d =
      Place({&a, &b}, {{&w, 2, true, need * 3 / 2}});
  EXPECT_EQ(d[0].worker, 0);
  EXPECT_EQ(d[1].worker, -1);
  EXPECT_FALSE(d[1].unplaceable) << "it fits once the first job ends";
  EXPECT_THAT(d[1].queue_reason, ::testing::HasSubstr("waiting for memory"));
  // A worker whose jobs hold its memory already.
  d = Place({&b}, {{&w, 1, true, need / 2}});
  EXPECT_EQ(d[0].worker, -1);
  EXPECT_THAT(d[0].queue_reason, ::testing::HasSubstr("waiting for memory"));
}

TEST(PlaceTest, AutoTakesTheFastestModeThatFits) {
  v1::JobSpec job = GptSmall("auto", v1::PRECISION_AUTO);
  const int64_t mixed = Estimate(job, v1::PRECISION_BF16_MIXED);
  const int64_t pure = Estimate(job, v1::PRECISION_BF16_PURE);
  ASSERT_LT(pure, mixed);
  v1::WorkerCapabilities native = CpuCaps(1, /*bf16=*/true);
  std::vector<PlacementDecision> d = Place({&job}, {{&native, 1, true}});
  EXPECT_EQ(d[0].precision, v1::PRECISION_BF16_MIXED) << "room for all";
  native.set_memory_bytes((mixed + pure) / 2);
  d = Place({&job}, {{&native, 1, true}});
  EXPECT_EQ(d[0].worker, 0);
  EXPECT_EQ(d[0].precision, v1::PRECISION_BF16_PURE)
      << "bf16-mixed does not fit; bf16-pure, the leanest native mode, does";
}

}  // namespace
}  // namespace halftime::server
