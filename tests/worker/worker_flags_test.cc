#include "worker/worker_flags.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace halftime {
namespace {

using ::testing::HasSubstr;

v1::WorkerCapabilities Caps(bool bf16_native) {
  v1::WorkerCapabilities caps;
  caps.set_device_name("AMD EPYC");
  caps.add_native_precisions(v1::PRECISION_FP32);
  (bf16_native ? caps.mutable_native_precisions()
               : caps.mutable_emulated_precisions())
      ->Add(v1::PRECISION_BF16_MIXED);
  v1::DtypeRate* fp32 = caps.add_rates();
  fp32->set_dtype("fp32");
  fp32->set_flops_per_second(101e9);
  fp32->set_native(true);
  v1::DtypeRate* bf16 = caps.add_rates();
  bf16->set_dtype("bf16");
  bf16->set_flops_per_second(97e9);
  bf16->set_native(bf16_native);
  caps.set_blas("OpenBLAS 0.3.21 (OpenMP, 2 threads)");
  return caps;
}

TEST(WorkerFlagsTest, StartUpLinesSayWhatRunsNativelyAndWhatIsEmulated) {
  std::vector<std::string> lines = DescribeCapabilities(Caps(false));
  ASSERT_GE(lines.size(), 2u);
  EXPECT_EQ(lines[0],
            "AMD EPYC: runs fp32 natively; emulates bf16-mixed (for jobs with "
            "resources.emulation: allow); fp32 101 GFLOP/s, bf16 97 GFLOP/s "
            "emulated");
  EXPECT_THAT(lines[1], HasSubstr("fp32 GEMMs run on OpenBLAS"));
  lines = DescribeCapabilities(Caps(true));
  EXPECT_EQ(lines[0],
            "AMD EPYC: runs fp32, bf16-mixed natively; fp32 101 GFLOP/s, bf16 "
            "97 GFLOP/s");
}

}  // namespace
}  // namespace halftime
