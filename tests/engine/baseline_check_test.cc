// The checks that decide whether a worker's fp32 baseline is degraded, on
// recorded facts, and DetectBlas on the BLAS this test process really loaded
// (run again by the e2e tests under LD_LIBRARY_PATH with other builds).

#include "engine/baseline_check.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "engine/step_stats.h"

namespace halftime::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr char kZen4Flags[] =
    "fpu sse sse2 avx fma avx2 avx512f avx512dq avx512bw avx512vl avx512_bf16";

BlasLibrary OpenMpOpenBlas() {
  BlasLibrary b = ClassifyBlasPath(
      "/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3");
  b.threads = 2;
  return b;
}

CpuFacts TwoCores() {
  CpuFacts cpu;
  cpu.flags = kZen4Flags;
  cpu.mhz = 2096;
  cpu.allowed_cpus = 2;
  return cpu;
}

TEST(ClassifyBlasPath, NamesDebiansBuilds) {
  auto openmp = ClassifyBlasPath(
      "/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3");
  EXPECT_EQ(openmp.family, "OpenBLAS");
  EXPECT_EQ(openmp.threading, BlasThreading::kOpenMP);
  auto pthread = ClassifyBlasPath(
      "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so");
  EXPECT_EQ(pthread.family, "OpenBLAS");
  EXPECT_EQ(pthread.threading, BlasThreading::kPthreads);
  auto reference =
      ClassifyBlasPath("/usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0");
  EXPECT_EQ(reference.family, "reference BLAS");
  auto blis =
      ClassifyBlasPath("/usr/lib/x86_64-linux-gnu/blis-pthread/libblas.so.3");
  EXPECT_EQ(blis.family, "BLIS");
  EXPECT_EQ(blis.threading, BlasThreading::kPthreads);
  EXPECT_EQ(ClassifyBlasPath("/usr/lib/libsatlas.so.3").family, "ATLAS");
}

TEST(Fp32PeakFlops, CountsTheWidestFmaTimesClockTimesCores) {
  CpuFacts cpu = TwoCores();
  EXPECT_DOUBLE_EQ(Fp32PeakFlops(cpu, 2), 32 * 2096e6 * 2);
  // More threads than usable CPUs do not add peak.
  EXPECT_DOUBLE_EQ(Fp32PeakFlops(cpu, 8), 32 * 2096e6 * 2);
  cpu.flags = "sse sse2 avx fma avx2";
  EXPECT_DOUBLE_EQ(Fp32PeakFlops(cpu, 1), 16 * 2096e6);
  cpu.flags = "sse sse2";
  EXPECT_DOUBLE_EQ(Fp32PeakFlops(cpu, 1), 4 * 2096e6);
  cpu.mhz = 0;
  EXPECT_EQ(Fp32PeakFlops(cpu, 1), 0);
}

TEST(BaselineDegradations, OpenMpOpenBlasAtAFairRateIsClean) {
  // 100 GFLOP/s of a 134 GFLOP/s peak: what this arrangement measures.
  EXPECT_THAT(BaselineDegradations(OpenMpOpenBlas(), TwoCores(), 2, 100e9),
              IsEmpty());
  // Not measured: the rate check is skipped, the rest still apply.
  EXPECT_THAT(BaselineDegradations(OpenMpOpenBlas(), TwoCores(), 2, 0),
              IsEmpty());
}

TEST(BaselineDegradations, ReferenceBlasIsNamed) {
  const auto reasons = BaselineDegradations(
      ClassifyBlasPath("/usr/lib/x86_64-linux-gnu/blas/libblas.so.3"),
      TwoCores(), 2, 4.6e9);
  ASSERT_THAT(reasons, SizeIs(2));
  EXPECT_THAT(reasons[0], HasSubstr("reference BLAS"));
  EXPECT_THAT(reasons[0], HasSubstr("libopenblas0-openmp"));
  EXPECT_THAT(reasons[1], HasSubstr("fp32 GEMM ran at 4.6 GFLOP/s"));
}

TEST(BaselineDegradations, PthreadBlasBesideOpenMpThreads) {
  BlasLibrary b = ClassifyBlasPath(
      "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3");
  b.threads = 2;
  const auto reasons = BaselineDegradations(b, TwoCores(), 2, 90e9);
  ASSERT_THAT(reasons, SizeIs(1));
  EXPECT_THAT(reasons[0], HasSubstr("pthreads build"));
  EXPECT_THAT(reasons[0], HasSubstr("2 threads of its own"));
  // One libtorch thread leaves no OpenMP pool to compete with.
  EXPECT_THAT(BaselineDegradations(b, TwoCores(), 1, 60e9), IsEmpty());
  // Nor does a pthreads BLAS limited to one thread.
  b.threads = 1;
  EXPECT_THAT(BaselineDegradations(b, TwoCores(), 2, 90e9), IsEmpty());
}

TEST(BaselineDegradations, MoreThreadsThanCpus) {
  CpuFacts cpu = TwoCores();
  cpu.allowed_cpus = 1;
  EXPECT_THAT(BaselineDegradations(OpenMpOpenBlas(), cpu, 2, 60e9),
              ElementsAre(HasSubstr("2 intra-op threads on 1 usable CPUs")));
}

TEST(BaselineDegradations, GemmFarBelowThePeak) {
  const double peak = Fp32PeakFlops(TwoCores(), 2);
  EXPECT_THAT(BaselineDegradations(OpenMpOpenBlas(), TwoCores(), 2,
                                   peak * kMinFp32PeakFraction * 0.9),
              ElementsAre(HasSubstr("under 10%")));
  EXPECT_THAT(BaselineDegradations(OpenMpOpenBlas(), TwoCores(), 2,
                                   peak * kMinFp32PeakFraction * 1.1),
              IsEmpty());
}

TEST(DetectBlas, FindsTheLibraryThatServesSgemm) {
  const BlasLibrary b = DetectBlas();
  // libtorch links a BLAS; which one depends on the machine (and on
  // LD_LIBRARY_PATH), but it is found, and described with its path.
  EXPECT_NE(b.family, "none");
  EXPECT_FALSE(b.path.empty());
  EXPECT_THAT(b.Describe(), HasSubstr(b.path));
  if (b.family == "OpenBLAS") {
    EXPECT_NE(b.threading, BlasThreading::kUnknown);
    EXPECT_GT(b.threads, 0);
  }
}

TEST(StepStats, SteadyMedianSkipsWarmUp) {
  // Two slow warm-up steps, then steady ones.
  EXPECT_DOUBLE_EQ(SteadyMedian({0.9, 0.5, 0.10, 0.12, 0.11, 0.13}), 0.115);
  EXPECT_DOUBLE_EQ(SteadyMedian({0.9, 0.2, 0.3}), 0.25);
  EXPECT_DOUBLE_EQ(SteadyMedian({0.4, 0.2}), 0.3);
  EXPECT_EQ(SteadyMedian({}), 0);
  EXPECT_EQ(WarmupSteps(150), 2u);
  EXPECT_NEAR(RelativeDifference(1.05, 1.0), 0.05, 1e-12);
}

}  // namespace
}  // namespace halftime::engine
