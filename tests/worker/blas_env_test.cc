#include "worker/blas_env.h"

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

}  // namespace
}  // namespace halftime
