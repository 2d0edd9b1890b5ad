#include "train/blas_env.h"

#include <gtest/gtest.h>

namespace halftime {
namespace {

TEST(BlasEnvTest, CoreTypeFollowsTheCpuFlags) {
  EXPECT_EQ(
      OpenBlasCoreTypeForFlags(
          "fpu sse2 avx2 fma avx512f avx512dq avx512bw avx512vl avx512_bf16"),
      "SKYLAKEX");
  EXPECT_EQ(OpenBlasCoreTypeForFlags("fpu sse2 avx avx2 fma"), "HASWELL");
  EXPECT_EQ(OpenBlasCoreTypeForFlags("fpu sse2 avx2 fma avx512f"), "HASWELL")
      << "AVX-512 foundation alone is not SkylakeX";
  EXPECT_EQ(OpenBlasCoreTypeForFlags("fpu sse2"), "");
  EXPECT_EQ(OpenBlasCoreTypeForFlags(""), "");
}

TEST(BlasEnvTest, AnOlderPresetCoreIsUpgradedAndOthersStand) {
  EXPECT_EQ(OpenBlasCoreTypeToSet(nullptr, "SKYLAKEX"), "SKYLAKEX");
  EXPECT_EQ(OpenBlasCoreTypeToSet("", "HASWELL"), "HASWELL");
  // A machine image's Haswell on an AVX-512 CPU: 25% slower fp32 GEMMs.
  EXPECT_EQ(OpenBlasCoreTypeToSet("Haswell", "SKYLAKEX"), "SKYLAKEX");
  EXPECT_EQ(OpenBlasCoreTypeToSet("ZEN", "SKYLAKEX"), "SKYLAKEX");
  EXPECT_EQ(OpenBlasCoreTypeToSet("Prescott", "HASWELL"), "HASWELL");
  // Already as good, or newer, or not an x86 core we rank: left alone.
  EXPECT_EQ(OpenBlasCoreTypeToSet("skylakex", "SKYLAKEX"), "");
  EXPECT_EQ(OpenBlasCoreTypeToSet("COOPERLAKE", "SKYLAKEX"), "");
  EXPECT_EQ(OpenBlasCoreTypeToSet("ZEN", "HASWELL"), "");
  EXPECT_EQ(OpenBlasCoreTypeToSet("NEOVERSEN1", "SKYLAKEX"), "");
  // Flags that name no core: nothing to set.
  EXPECT_EQ(OpenBlasCoreTypeToSet(nullptr, ""), "");
}

TEST(BlasEnvTest, TheAvx2CapAlsoCapsLibtorchAndOneDnn) {
  using Env = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(CpuCapEnvironment(""), Env{});
  EXPECT_EQ(CpuCapEnvironment("avx2"), (Env{{"ATEN_CPU_CAPABILITY", "avx2"},
                                            {"ONEDNN_MAX_CPU_ISA", "AVX2"}}));
}

}  // namespace
}  // namespace halftime
